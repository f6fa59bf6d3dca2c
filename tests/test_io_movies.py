"""Movies: exact TIFF-LZW and MRC round trips, streamed batches, gain and defects, bad files."""

from __future__ import annotations

import bz2
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
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
    _plain_lzw_strips,
    iter_movie,
    read_movie,
    read_movie_info,
    write_movie_mrc,
    write_movie_tiff,
)
from cryokube.processing.io.mrc import write_mrc
from scipy import ndimage

SHAPE = (5, 96, 80)


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    """Sparse counting frames: Poisson, 1 e/px/frame."""
    return np.random.default_rng(7).poisson(1.0, SHAPE).astype(np.uint8)


@pytest.mark.parametrize("compression", ["lzw", "zstd", None])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip_is_exact(
    tmp_path: Path, counts: np.ndarray, compression: str | None, dtype: type
) -> None:
    frames = (counts * 37).astype(dtype)
    path = tmp_path / "movie.tif"
    write_movie_tiff(path, frames, compression=compression)
    info = read_movie_info(path)
    assert (info.format, info.n_frames, info.frame_shape) == ("tiff", 5, (96, 80))
    assert info.dtype == frames.dtype
    back = read_movie(path, n_threads=2)
    assert back.dtype == frames.dtype
    np.testing.assert_array_equal(back, frames)
    with tifffile.TiffFile(path) as tif:  # an independent reader sees one page per frame
        assert len(tif.pages) == 5
        if compression == "lzw":
            assert tif.pages.first.compression == tifffile.COMPRESSION.LZW


@pytest.mark.parametrize(
    ("options", "direct"),
    [
        ({"rowsperstrip": 7}, True),  # a last strip shorter than the others
        ({"rowsperstrip": 7, "byteorder": ">"}, False),  # big-endian counts: tifffile swaps
        ({"rowsperstrip": 7, "predictor": True}, False),  # horizontal differencing
    ],
    ids=["plain strips", "big-endian", "predictor"],
)
def test_lzw_strips_decode_like_tifffile(
    tmp_path: Path, counts: np.ndarray, options: dict[str, Any], direct: bool
) -> None:
    """LZW pages of plain strips are decoded strip by strip into the frames; other LZW pages
    go through tifffile; both give tifffile's frames, whole or streamed."""
    frames = counts.astype(np.uint16) * 300
    path = tmp_path / "movie.tif"
    with tifffile.TiffWriter(path, byteorder=options.pop("byteorder", "<")) as tw:
        for frame in frames:
            tw.write(frame, compression="lzw", **options)
    with tifffile.TiffFile(path) as tif:
        assert _plain_lzw_strips(tif, tif.pages.first) is direct
        expected = tif.asarray(key=range(len(tif.pages)))
    np.testing.assert_array_equal(expected, frames)
    np.testing.assert_array_equal(read_movie(path, n_threads=2), frames)
    np.testing.assert_array_equal(np.concatenate(list(iter_movie(path, batch_size=2))), frames)


def test_tiff_streams_in_batches(tmp_path: Path, counts: np.ndarray) -> None:
    path = tmp_path / "movie.tiff"
    write_movie_tiff(path, counts)
    batches = list(iter_movie(path, batch_size=2, n_threads=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), counts)


def _open_descriptors(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if fd.exists() and fd.resolve() == path.resolve())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_stopping_early_stops_the_read_ahead_and_closes_the_file(
    tmp_path: Path, counts: np.ndarray
) -> None:
    path = tmp_path / "movie.tif"
    write_movie_tiff(path, counts)
    stream = iter_movie(path, batch_size=1, n_threads=2)
    np.testing.assert_array_equal(next(stream), counts[:1])
    assert _open_descriptors(path) == 1
    stream.close()
    assert _open_descriptors(path) == 0


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "bz2"])
def test_mrc_movie_round_trip(tmp_path: Path, counts: np.ndarray, compress: bool) -> None:
    path = tmp_path / "movie.mrcs"
    write_movie_mrc(path, counts, pixel_size_A=0.885)
    if compress:
        packed = tmp_path / "movie.mrcs.bz2"
        packed.write_bytes(bz2.compress(path.read_bytes()))
        path = packed
    info = read_movie_info(path)
    assert info.format == "mrc"
    assert info.n_frames == 5
    assert info.pixel_size_A == pytest.approx(0.885, rel=1e-6)
    batches = list(iter_movie(path, batch_size=3))
    assert [len(b) for b in batches] == [3, 2]
    np.testing.assert_array_equal(np.concatenate(batches), counts)


@pytest.mark.parametrize(("rotate_90", "flip"), [(0, "none"), (1, "updown"), (3, "leftright")])
def test_gain_orientation_and_application(
    tmp_path: Path, counts: np.ndarray, rotate_90: int, flip: str
) -> None:
    gain = np.random.default_rng(8).uniform(0.8, 1.2, SHAPE[1:]).astype(np.float32)
    # store the gain the way a camera would have to be corrected: the inverse transform
    stored = gain[::-1, :] if flip == "updown" else gain[:, ::-1] if flip == "leftright" else gain
    stored = np.rot90(stored, -rotate_90)
    gain_path = tmp_path / "gain.mrc"
    write_mrc(gain_path, stored, pixel_size_A=0.885)
    oriented = load_gain(gain_path, rotate_90=rotate_90, flip=flip)
    np.testing.assert_array_equal(oriented, gain)
    movie = tmp_path / "movie.tif"
    write_movie_tiff(movie, counts)
    correction = FrameCorrection(gain=oriented, source=str(gain_path))
    corrected = read_movie(movie, correction=correction)
    assert corrected.dtype == np.float32
    np.testing.assert_allclose(corrected, counts * gain, rtol=1e-6)


def test_hot_pixels_are_found_and_replaced(counts: np.ndarray) -> None:
    frames = counts.astype(np.uint16)
    hot = [(10, 11), (50, 3), (95, 79)]
    for y, x in hot:
        frames[:, y, x] = 60
    frames[:, 20, 20] = 0  # a dead pixel: invisible at 5 e/px, so not reported
    mask = find_defects(frames.sum(axis=0))
    assert set(zip(*np.nonzero(mask), strict=True)) == set(hot)
    listed = defect_mask(SHAPE[1:], pixels_yx=hot)
    np.testing.assert_array_equal(mask, listed)
    out = FrameCorrection(defects=mask).apply(frames)
    good_mean = frames[:, ~mask].mean(axis=1)
    for y, x in hot:
        np.testing.assert_allclose(out[:, y, x], good_mean, rtol=1e-6)
    np.testing.assert_array_equal(out[:, ~mask], frames[:, ~mask])


def test_dead_pixels_are_found_at_high_dose() -> None:
    frames = np.random.default_rng(9).poisson(20.0, (10, 32, 32)).astype(np.uint16)
    frames[:, 5, 6] = 0
    mask = find_defects(frames.sum(axis=0))
    assert list(zip(*np.nonzero(mask), strict=True)) == [(5, 6)]


def test_defect_rows_and_columns() -> None:
    mask = defect_mask((4, 5), rows=[1], columns=[4])
    assert mask.sum() == 5 + 4 - 1
    with pytest.raises(ValueError, match="columns"):
        defect_mask((4, 5), columns=[5])
    with pytest.raises(ValueError, match="pixels_yx"):
        defect_mask((4, 5), pixels_yx=[(4, 0)])


def test_orientation_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rotate_90"):
        orient_gain(np.ones((2, 2)), rotate_90=4)
    with pytest.raises(ValueError, match="flip"):
        orient_gain(np.ones((2, 2)), flip="diagonal")


# --- bad input ---------------------------------------------------------------------------


def test_gain_of_the_wrong_shape(tmp_path: Path, counts: np.ndarray) -> None:
    movie = tmp_path / "movie.tif"
    write_movie_tiff(movie, counts)
    gain_path = tmp_path / "gain.mrc"
    write_mrc(gain_path, np.ones(SHAPE[1:], np.float32), pixel_size_A=1.0)
    gain = load_gain(gain_path, rotate_90=1)  # 80 x 96: a forgotten rotation
    correction = FrameCorrection(gain=gain, source=str(gain_path))
    with pytest.raises(GainShapeError, match=re.escape("gain.mrc")) as err:
        next(iter_movie(movie, correction=correction))
    assert "(80, 96)" in str(err.value)
    assert "movie.tif" in str(err.value)


def test_gain_file_with_several_images(tmp_path: Path) -> None:
    path = tmp_path / "gains.mrcs"
    write_mrc(path, np.ones((2, 4, 4), np.float32), pixel_size_A=1.0, stack=True)
    with pytest.raises(GainShapeError, match="one 2D image"):
        load_gain(path)


def test_truncated_tiff(tmp_path: Path, counts: np.ndarray) -> None:
    path = tmp_path / "movie.tif"
    write_movie_tiff(path, counts)
    with tifffile.TiffFile(path) as tif:
        cut = tif.pages[1].dataoffsets[0] + 10
    bad = tmp_path / "cut.tif"
    bad.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(TruncatedFileError, match=re.escape("cut.tif")):
        read_movie(bad)


def test_corrupt_lzw_stream(tmp_path: Path, counts: np.ndarray) -> None:
    path = tmp_path / "movie.tif"
    write_movie_tiff(path, counts)
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[2].dataoffsets[0]
    raw = bytearray(path.read_bytes())
    raw[start : start + 64] = b"\xff" * 64
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(bytes(raw))
    with pytest.raises(UnreadableCompressionError, match=re.escape("corrupt.tif")):
        read_movie(bad, n_threads=2)


def test_frames_of_different_shapes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((8, 8), np.uint8), compression="lzw")
        tw.write(np.zeros((8, 9), np.uint8), compression="lzw")
    with pytest.raises(WrongDimensionsError, match=re.escape("mixed.tif")):
        read_movie(path)


def test_unsupported_tiff_sample_type(tmp_path: Path) -> None:
    path = tmp_path / "f64.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.float64))
    with pytest.raises(UnsupportedModeError, match="float64"):
        read_movie_info(path)


def test_not_a_tiff_and_unknown_format(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"not a tiff at all")
    with pytest.raises(InputFileError, match=re.escape("fake.tif")):
        read_movie_info(fake)
    with pytest.raises(InputFileError, match="unknown movie format"):
        read_movie_info(tmp_path / "movie.avi")


def test_eer_super_resolution_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eer_upsampling"):
        next(iter_movie(tmp_path / "movie.eer", eer_upsampling=2))


def test_writer_argument_checks(tmp_path: Path, counts: np.ndarray) -> None:
    with pytest.raises(ValueError, match="compression"):
        write_movie_tiff(tmp_path / "m.tif", counts, compression="jpeg")
    with pytest.raises(ValueError, match="frames"):
        write_movie_tiff(tmp_path / "m.tif", counts[0])
    with pytest.raises(TypeError, match="frames dtype"):
        write_movie_tiff(tmp_path / "m.tif", counts.astype(np.int64))
    assert list(tmp_path.iterdir()) == []


def test_defects_spare_the_specimen() -> None:
    """At 400 counts per pixel a dark particle core (down to 30% of the mean, 12 Poisson SDs
    below it) and a bright fringe are far from the sum's median, but their neighbours follow them:
    only the isolated hot and dead pixels, one of them inside the core, are defects."""
    rng = np.random.default_rng(4)
    expected = np.full((64, 64), 400.0)
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 30) ** 2 + (xx - 34) ** 2
    expected[r2 <= 36] = 120.0
    expected[(r2 > 36) & (r2 <= 64)] = 700.0
    expected = ndimage.gaussian_filter(expected, 1.0)  # the specimen is band-limited
    total = rng.poisson(expected).astype(np.float64)
    defects = [(30, 33), (5, 50), (60, 2)]  # hot in the core, hot, dead
    total[30, 33], total[5, 50], total[60, 2] = 900.0, 2000.0, 0.0
    mask = find_defects(total)
    assert set(zip(*np.nonzero(mask), strict=True)) == set(defects)
