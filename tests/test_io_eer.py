"""EER movies: raw frames grouped into fractions, read through tifffile + imagecodecs.

No small real EER file exists (see shared/data/real/README.md), and imagecodecs has no EER
encoder, so the test writes EER itself following the EER format documentation 3.0
(section 4): per electron, a 7-bit count of empty pixels skipped then 2 + 2 sub-pixel bits,
little-endian bit order; a skip of 127 means "127 empty pixels, no electron"; the stream
ends with a skip that lands exactly on the last pixel. Pages are BigTIFF strips with
compression 65001 and the EER XML metadata tag 65001, which is what makes tifffile treat
the file as EER.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cryokube.processing.io.errors import GainShapeError, UnreadableCompressionError
from cryokube.processing.io.gain import FrameCorrection
from cryokube.processing.io.movies import iter_movie, read_movie, read_movie_info

SKIP_BITS = 7
SUBPIXEL_BITS = 4
MAX_SKIP = (1 << SKIP_BITS) - 1
RAW_SHAPE = (10, 32, 24)


def _eer_encode(frame: np.ndarray) -> bytes:
    """EER-encode a binary frame (at most one electron per pixel)."""
    bits: list[int] = []

    def put(value: int, n_bits: int) -> None:
        bits.extend((value >> i) & 1 for i in range(n_bits))

    def skip(n: int) -> None:
        while n >= MAX_SKIP:
            put(MAX_SKIP, SKIP_BITS)
            n -= MAX_SKIP
        put(n, SKIP_BITS)

    position = 0
    for index in np.flatnonzero(frame.ravel()):
        skip(int(index) - position)
        put(0, SUBPIXEL_BITS)
        position = int(index) + 1
    remaining = frame.size - position
    while remaining > MAX_SKIP:  # a skip landing exactly on the end stops the decoder
        put(MAX_SKIP, SKIP_BITS)
        remaining -= MAX_SKIP
    put(remaining, SKIP_BITS)
    bits.extend([0] * (SKIP_BITS + SUBPIXEL_BITS))  # the decoder reads whole code words
    bits.extend([0] * (-len(bits) % 16))  # an even number of bytes
    return np.packbits(np.array(bits, np.uint8), bitorder="little").tobytes()


def _write_eer(path: Path, frames: np.ndarray) -> None:
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for frame in frames:
            tw.write(
                iter([_eer_encode(frame)]),
                shape=frame.shape,
                dtype=np.uint8,
                compression="zlib",  # placeholder tag, replaced below: tifffile cannot write EER
                photometric="minisblack",
                metadata=None,
                extratags=[(65001, 7, None, b"<metadata></metadata>", True)],
            )
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["Compression"].overwrite(65001)


@pytest.fixture(scope="module")
def raw_frames() -> np.ndarray:
    """Sparse binary raw frames (0.05 e/px), as an EER camera records them."""
    return (np.random.default_rng(11).random(RAW_SHAPE) < 0.05).astype(np.uint8)


@pytest.fixture
def eer_file(tmp_path: Path, raw_frames: np.ndarray) -> Path:
    path = tmp_path / "movie.eer"
    _write_eer(path, raw_frames)
    return path


def test_raw_frames_decode_exactly(eer_file: Path, raw_frames: np.ndarray) -> None:
    info = read_movie_info(eer_file)
    assert (info.format, info.n_frames, info.frame_shape) == ("eer", 10, (32, 24))
    movie = read_movie(eer_file, n_threads=2)
    assert movie.dtype == np.uint16
    np.testing.assert_array_equal(movie, raw_frames)


def test_fractions_sum_raw_frames_and_drop_the_remainder(
    eer_file: Path, raw_frames: np.ndarray
) -> None:
    info = read_movie_info(eer_file, eer_fractions=3)
    assert info.n_frames == 3
    assert info.raw_frames_per_fraction == 3
    batches = list(iter_movie(eer_file, eer_fractions=3, batch_size=2))
    assert [len(b) for b in batches] == [2, 1]
    expected = raw_frames[:9].reshape(3, 3, *RAW_SHAPE[1:]).sum(axis=1)
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def test_gain_applies_to_fractions(eer_file: Path, raw_frames: np.ndarray) -> None:
    gain = np.full(RAW_SHAPE[1:], 1.5, np.float32)
    out = read_movie(eer_file, eer_fractions=5, correction=FrameCorrection(gain=gain))
    expected = raw_frames.reshape(5, 2, *RAW_SHAPE[1:]).sum(axis=1) * 1.5
    np.testing.assert_allclose(out, expected)
    with pytest.raises(GainShapeError, match=re.escape("movie.eer")):
        read_movie(eer_file, correction=FrameCorrection(gain=gain.T))


@pytest.mark.parametrize("fractions", [0, 11])
def test_fraction_count_is_checked(eer_file: Path, fractions: int) -> None:
    with pytest.raises(ValueError, match="eer_fractions"):
        read_movie_info(eer_file, eer_fractions=fractions)


def test_corrupt_eer_stream(tmp_path: Path, raw_frames: np.ndarray) -> None:
    path = tmp_path / "corrupt.eer"
    _write_eer(path, raw_frames)
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[4].dataoffsets[0]
    raw = bytearray(path.read_bytes())
    raw[start : start + 16] = b"\xff" * 16  # skips past the end of the frame
    path.write_bytes(bytes(raw))
    with pytest.raises(UnreadableCompressionError, match=re.escape("corrupt.eer")):
        read_movie(path)
