"""MRC writing is strict MRC2014 and exact; reading bad files gives typed errors naming them."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import re
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from cryokube.processing.io.errors import (
    InputFileError,
    TruncatedFileError,
    UnreadableCompressionError,
    UnsupportedModeError,
    WrongDimensionsError,
)
from cryokube.processing.io.mrc import open_stack, read_mrc, read_mrc_header, write_mrc


def _assert_valid(path: Path) -> None:
    report = io.StringIO()
    assert mrcfile.validate(str(path), print_file=report), report.getvalue()


@pytest.mark.parametrize(
    ("dtype", "float16", "expected_mode"),
    [
        (np.float32, False, 2),
        (np.float32, True, 12),
        (np.int16, False, 1),
        (np.uint16, False, 6),
        (np.int8, False, 0),
        (np.complex64, False, 4),
    ],
)
def test_round_trip_is_exact_and_valid(
    tmp_path: Path, dtype: type, float16: bool, expected_mode: int
) -> None:
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((5, 6, 7)) * 40).astype(dtype)
    path = tmp_path / "vol.mrc"
    write_mrc(path, data, pixel_size_A=1.25, origin_A=(10.0, -2.5, 3.0), float16=float16)
    _assert_valid(path)
    back, info = read_mrc(path)
    expected = data.astype(np.float16) if float16 else data
    assert back.dtype == expected.dtype
    np.testing.assert_array_equal(back, expected)
    assert info.mode == expected_mode
    assert info.pixel_size_A == pytest.approx(1.25, rel=1e-7)
    assert info.origin_A == (10.0, -2.5, 3.0)
    assert info.nversion == 20141
    assert info.space_group == 1


def test_float16_statistics_are_exact_and_rms_undetermined(tmp_path: Path) -> None:
    # values whose squares overflow float16 (max 65504): RELION's files then fail validation
    data = np.full((4, 8, 8), 300.0, dtype=np.float32)
    data[0, 0, 0] = -300.0
    path = tmp_path / "big.mrcs"
    write_mrc(path, data, pixel_size_A=2.0, float16=True, stack=True)
    _assert_valid(path)
    info = read_mrc_header(path)
    assert (info.dmin, info.dmax) == (-300.0, 300.0)
    assert info.dmean == pytest.approx(float(data.astype(np.float64).mean()), rel=1e-6)
    assert info.rms == -1.0  # MRC2014: not determined


def test_stack_anisotropic_voxels_label_and_uint8(tmp_path: Path) -> None:
    counts = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "stack.mrcs"
    write_mrc(path, counts, pixel_size_A=(1.0, 1.5, 2.0), stack=True, label="simulated")
    _assert_valid(path)
    back, info = read_mrc(path)
    assert back.dtype == np.uint16  # MRC has no unsigned 8-bit mode
    np.testing.assert_array_equal(back, counts)
    assert info.space_group == 0
    assert info.voxel_size_A == (1.0, 1.5, 2.0)
    assert "simulated" in info.labels


def test_single_image(tmp_path: Path) -> None:
    image = np.linspace(-1, 1, 12 * 10, dtype=np.float64).reshape(12, 10)
    path = tmp_path / "image.mrc"
    write_mrc(path, image, pixel_size_A=0.885)
    _assert_valid(path)
    back, _ = read_mrc(path)
    assert back.shape == (12, 10)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))
    with open_stack(path) as stack:
        assert len(stack) == 1
        np.testing.assert_array_equal(stack[0], back)


@pytest.mark.parametrize("opener", [bz2.open, gzip.open], ids=["bz2", "gzip"])
def test_compressed_stack_streams_batches(tmp_path: Path, opener: object) -> None:
    data = np.random.default_rng(4).standard_normal((9, 8, 6)).astype(np.float32)
    plain = tmp_path / "s.mrcs"
    write_mrc(plain, data, pixel_size_A=1.0, stack=True)
    packed = tmp_path / "s.mrcs.z"
    with opener(packed, "wb") as out:  # type: ignore[operator]
        out.write(plain.read_bytes())
    with open_stack(packed) as stack:
        assert stack.info.compression in ("bz2", "gzip")
        np.testing.assert_array_equal(np.concatenate(list(stack.iter_batches(4))), data)
        np.testing.assert_array_equal(stack[[6, 1]], data[[6, 1]])


def test_big_endian_file_is_read(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "be.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(">f4"))
        mrc.voxel_size = 2.0
    back, info = read_mrc(path)
    assert info.byte_order == ">"
    np.testing.assert_array_equal(back, data)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "map.mrc"
    write_mrc(path, np.zeros((2, 2, 2), np.float32), pixel_size_A=1.0)
    with pytest.raises(TypeError, match="data dtype"):
        write_mrc(path, np.zeros((2, 2, 2), np.int64), pixel_size_A=1.0)
    assert os.listdir(tmp_path) == ["map.mrc"]
    np.testing.assert_array_equal(read_mrc(path)[0], 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pixel_size_A": 0.0}, "pixel_size_A"),
        ({"pixel_size_A": (1.0, 2.0)}, "pixel_size_A"),
        ({"pixel_size_A": 1.0, "origin_A": (0.0, float("nan"), 0.0)}, "origin_A"),
        ({"pixel_size_A": 1.0, "label": "x" * 81}, "label"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_mrc(tmp_path / "x.mrc", np.zeros((2, 2), np.float32), **kwargs)  # type: ignore[arg-type]


def test_write_rejects_wrong_dimensions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2D or 3D"):
        write_mrc(tmp_path / "x.mrc", np.zeros(5, np.float32), pixel_size_A=1.0)


# --- bad files -------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.mrcs"
    write_mrc(path, np.ones((4, 8, 8), np.float32), pixel_size_A=1.0, stack=True)
    return path


def _patched(path: Path, offset: int, value: np.ndarray) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + value.nbytes] = value.tobytes()
    out = path.with_name("bad.mrc")
    out.write_bytes(bytes(raw))
    return out


def test_truncated_data(good_file: Path) -> None:
    bad = good_file.with_name("cut.mrc")
    bad.write_bytes(good_file.read_bytes()[:-100])
    with pytest.raises(TruncatedFileError, match=re.escape("cut.mrc")) as err:
        read_mrc(bad)
    assert err.value.path == str(bad)
    assert isinstance(err.value, ValueError)


def test_truncated_header(good_file: Path) -> None:
    bad = good_file.with_name("stub.mrc")
    bad.write_bytes(good_file.read_bytes()[:500])
    with pytest.raises(TruncatedFileError, match="1024-byte MRC header"):
        read_mrc_header(bad)


def test_truncated_compressed_stream(good_file: Path) -> None:
    bad = good_file.with_name("cut.mrc.gz")
    with gzip.open(bad, "wb") as out:
        out.write(good_file.read_bytes()[:-256])
    with pytest.raises(TruncatedFileError, match=re.escape("cut.mrc.gz")):
        read_mrc(bad)


def test_wrong_mode(good_file: Path) -> None:
    bad = _patched(good_file, 12, np.array([3], "<i4"))  # mode 3: complex int16
    with pytest.raises(UnsupportedModeError, match="mode 3"):
        read_mrc(bad)


@pytest.mark.parametrize("field_offset", [0, 4, 8], ids=["nx", "ny", "nz"])
def test_wrong_dimensions(good_file: Path, field_offset: int) -> None:
    bad = _patched(good_file, field_offset, np.array([0], "<i4"))
    with pytest.raises(WrongDimensionsError, match=re.escape("bad.mrc")):
        read_mrc(bad)


def test_absurd_dimensions_are_a_truncated_file_not_an_overflow(good_file: Path) -> None:
    huge = np.array([2**31 - 1] * 3, "<i4")  # 9.9e27 voxels: int64 products would wrap
    with pytest.raises(TruncatedFileError, match="announces"):
        read_mrc(_patched(good_file, 0, huge))


def test_unreadable_compression(good_file: Path) -> None:
    packed = bytearray(bz2.compress(good_file.read_bytes()))
    packed[40:60] = b"\0" * 20
    bad = good_file.with_name("corrupt.mrc.bz2")
    bad.write_bytes(bytes(packed))
    with pytest.raises(UnreadableCompressionError, match=re.escape("corrupt.mrc.bz2")):
        read_mrc(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=re.escape("nothere.mrc")):
        read_mrc(tmp_path / "nothere.mrc")
