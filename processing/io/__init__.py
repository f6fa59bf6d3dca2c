"""File formats: MRC maps and stacks, movies (TIFF, MRC, EER), gain and defect correction.

Readers stream or memory-map and raise the typed errors of
:mod:`cryokube.processing.io.errors` (all :class:`InputFileError`, a ``ValueError``);
writers are atomic. The names below are the public interface.
"""

from cryokube.processing.io.errors import (
    GainShapeError,
    InputFileError,
    TruncatedFileError,
    UnreadableCompressionError,
    UnsupportedModeError,
    WrongDimensionsError,
)
from cryokube.processing.io.gain import (
    FrameCorrection,
    defect_mask,
    find_defects,
    load_gain,
    orient_gain,
)
from cryokube.processing.io.movies import (
    MovieInfo,
    iter_movie,
    read_movie,
    read_movie_info,
    write_movie_mrc,
    write_movie_tiff,
)
from cryokube.processing.io.mrc import (
    MrcInfo,
    MrcStack,
    open_stack,
    read_mrc,
    read_mrc_header,
    write_mrc,
)

__all__ = [
    "FrameCorrection",
    "GainShapeError",
    "InputFileError",
    "MovieInfo",
    "MrcInfo",
    "MrcStack",
    "TruncatedFileError",
    "UnreadableCompressionError",
    "UnsupportedModeError",
    "WrongDimensionsError",
    "defect_mask",
    "find_defects",
    "iter_movie",
    "load_gain",
    "open_stack",
    "orient_gain",
    "read_movie",
    "read_movie_info",
    "read_mrc",
    "read_mrc_header",
    "write_movie_mrc",
    "write_movie_tiff",
    "write_mrc",
]
