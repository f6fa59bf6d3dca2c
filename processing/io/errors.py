"""Typed errors for unreadable input files.

Every reader in :mod:`cryokube.processing.io` turns a library failure (mrcfile, tifffile,
imagecodecs, bz2, gzip, ``OSError``) into one of these, so that a user sees which file is
wrong and why, never a bare library traceback. All derive from :class:`InputFileError`,
itself a :class:`ValueError`, so callers that validate input can catch one type.
"""

from __future__ import annotations

import os


class InputFileError(ValueError):
    """A file that cannot be used as input; the message names the file.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    reason : str
        What is wrong with it, in words a user can act on.

    Attributes
    ----------
    path : str
        The offending file, as given.
    reason : str
        The reason without the file name.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TruncatedFileError(InputFileError):
    """The file ends before the data its header announces."""


class UnsupportedModeError(InputFileError):
    """The pixel type (MRC mode, TIFF sample format) is not one we read or write."""


class WrongDimensionsError(InputFileError):
    """The header's dimensions are impossible or do not match what the caller needs."""


class UnreadableCompressionError(InputFileError):
    """The compressed stream (bzip2, gzip, LZW, EER) cannot be decoded."""


class GainShapeError(InputFileError):
    """The gain reference (or defect mask) does not match the movie frames."""
