"""Every real image and map in ``shared/data/real`` is read and checked against its README.

The expected values (shapes, pixel sizes, modes, space groups, statistics) are the ones the
folder READMEs state; header statistics are compared with statistics recomputed in float64.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from cryokube.processing.io.mrc import MrcInfo, open_stack, read_mrc, read_mrc_header

MRCFILE = "real/mrcfile-testdata"
CRYODRGN = "real/cryodrgn-testdata"
BETAGAL = "real/relion30-betagal-sppractice"


def _stats(data: np.ndarray) -> tuple[float, float, float, float]:
    wide = np.asarray(data, dtype=np.float64)
    return float(wide.min()), float(wide.max()), float(wide.mean()), float(wide.std())


def _assert_header_stats(data: np.ndarray, info: MrcInfo, *, rtol: float = 1e-5) -> None:
    dmin, dmax, dmean, rms = _stats(data)
    np.testing.assert_allclose(
        [info.dmin, info.dmax, info.dmean, info.rms],
        [dmin, dmax, dmean, rms],
        rtol=rtol,
        atol=1e-6,
    )


def test_emd_3197_header_and_values(shared_data: Path) -> None:
    path = shared_data / MRCFILE / "EMD-3197.map"
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("351d5090")
    data, info = read_mrc(path)
    assert data.shape == (20, 20, 20)
    assert data.dtype == np.float32
    assert info.mode == 2
    np.testing.assert_allclose(info.voxel_size_A, (11.4, 11.4, 11.4), rtol=1e-6)
    assert info.pixel_size_A == pytest.approx(11.4)
    assert info.space_group == 1
    assert info.nversion == 0  # pre-MRC2014: a strict reader would refuse it
    assert info.origin_A == (0.0, 0.0, 0.0)
    assert info.start_px == (-2, 0, 0)
    assert "EMD-3197" in info.labels[0]
    assert isinstance(data, np.memmap)  # plain files are mapped, not copied
    assert not data.flags.writeable  # and mapped read-only: the input cannot be damaged
    _assert_header_stats(data, info)


@pytest.mark.parametrize("name", ["EMD-3197.map.bz2", "emd_3197.map.gz"])
def test_compressed_emd_3197_equals_plain(shared_data: Path, name: str) -> None:
    plain, plain_info = read_mrc(shared_data / MRCFILE / "EMD-3197.map")
    data, info = read_mrc(shared_data / MRCFILE / name)
    assert info.compression == ("bz2" if name.endswith("bz2") else "gzip")
    np.testing.assert_array_equal(data, plain)
    assert info.voxel_size_A == plain_info.voxel_size_A


def test_emd_3001_unequal_voxels_p21_and_permuted_axes(shared_data: Path) -> None:
    data, info = read_mrc(shared_data / MRCFILE / "EMD-3001.map")
    np.testing.assert_allclose(info.voxel_size_A, (0.44825, 0.3925, 0.45875), rtol=1e-6)
    assert info.space_group == 4  # P21
    assert info.extended_header_bytes == 160
    # nx, ny, nz = 73, 43, 25 are columns, rows, sections; mapc/mapr/maps = 3, 1, 2 map
    # them to z, x, y, so the volume in (z, y, x) order is 73 x 25 x 43
    assert info.axis_order == (3, 1, 2)
    assert info.file_shape == (25, 43, 73)
    assert data.shape == (73, 25, 43)
    _assert_header_stats(data, info)


def test_epu_micrograph_bz2(shared_data: Path) -> None:
    data, info = read_mrc(shared_data / MRCFILE / "fei-extended_center2048.mrc.bz2")
    assert data.shape == (2048, 2048)
    assert data.dtype == np.uint16
    assert info.mode == 6
    assert info.pixel_size_A == pytest.approx(0.8537755, rel=1e-6)
    assert info.compression == "bz2"
    assert info.extended_header_bytes == 0  # the FEI1 extended header was dropped
    _assert_header_stats(data, info)
    assert data.min() > 0  # counts summed over a 10 s exposure


def test_empiar_10076_particles(shared_data: Path) -> None:
    data, info = read_mrc(shared_data / CRYODRGN / "empiar_10076_7.mrc")
    assert data.shape == (7, 320, 320)
    assert data.dtype == np.float32
    assert info.voxel_size_A == (0.0, 0.0, 0.0)  # the README: "voxel 0"
    assert info.labels[0].startswith("Created by mrcfile.py")
    _, _, mean, sd = _stats(data)
    assert abs(mean) < 0.01
    assert sd == pytest.approx(1.0, abs=0.01)


def test_relion31_stack_without_map_id_or_machine_stamp(shared_data: Path) -> None:
    path = shared_data / CRYODRGN / "relion31.mrcs"
    raw = path.read_bytes()[:1024]
    assert raw[208:212] != b"MAP "
    assert raw[212:216] == b"\0\0\0\0"
    with open_stack(path) as stack:
        assert len(stack) == 5
        assert stack.frame_shape == (256, 256)
        assert stack.info.dtype == np.float32
        np.testing.assert_array_equal(stack[2], read_mrc(path)[0][2])


def test_betagal_float16_particle_stacks(shared_data: Path) -> None:
    paths = sorted((shared_data / BETAGAL / "extract").glob("*.mrcs"))
    assert len(paths) == 10
    total = 0
    sums = 0.0
    squares = 0.0
    for path in paths:
        data, info = read_mrc(path)
        assert info.mode == 12
        assert data.dtype == np.float16
        assert data.shape[1:] == (64, 64)
        assert info.pixel_size_A == pytest.approx(3.54, rel=1e-6)
        assert info.nversion == 0
        assert np.isfinite(data).all()
        # RELION's header statistics are float32 values of float16 data: agree to 0.1 %
        _assert_header_stats(data, info, rtol=1e-3)
        wide = data.astype(np.float64)
        total += data.shape[0]
        sums += wide.sum()
        squares += (wide**2).sum()
    assert total == 2374
    mean = sums / (total * 64 * 64)
    sd = np.sqrt(squares / (total * 64 * 64) - mean**2)
    assert mean == pytest.approx(0.04, abs=0.015)  # README: mean ~0.04
    assert sd == pytest.approx(1.03, abs=0.01)  # README: sd ~1.03


def test_lazy_stack_indexing_reads_only_what_is_asked(shared_data: Path) -> None:
    path = shared_data / BETAGAL / "extract" / "20170629_00021_frameImage.mrcs"
    full, _ = read_mrc(path, mmap=False)
    with open_stack(path) as stack:
        assert len(stack) == full.shape[0] == 242
        np.testing.assert_array_equal(stack[5], full[5])
        np.testing.assert_array_equal(stack[-1], full[-1])
        np.testing.assert_array_equal(stack[10:20:3], full[10:20:3])
        np.testing.assert_array_equal(stack[[7, 3, 200]], full[[7, 3, 200]])
        batches = list(stack.iter_batches(100))
        assert [len(b) for b in batches] == [100, 100, 42]
        np.testing.assert_array_equal(np.concatenate(batches), full)
        with pytest.raises(IndexError):
            stack[242]


@pytest.mark.parametrize("number", range(21, 27))
def test_betagal_power_spectra(shared_data: Path, number: int) -> None:
    path = shared_data / BETAGAL / "ps" / f"20170629_{number:05d}_frameImage_PS.mrc"
    data, info = read_mrc(path)
    assert data.shape == (512, 512)
    assert data.dtype == np.float32
    assert info.pixel_size_A == pytest.approx(1.39955, rel=1e-5)
    _assert_header_stats(data, info)
    # a power spectrum of a real image is point-symmetric about the centre (256, 256)
    centred = np.asarray(data[1:, 1:], dtype=np.float64)  # rows/columns 1..511, centre at 255
    mirrored = centred[::-1, ::-1]
    assert np.corrcoef(centred.ravel(), mirrored.ravel())[0, 1] > 0.99


def test_every_real_image_file_is_covered(shared_data: Path) -> None:
    """A new image file in shared/data/real must get a test here."""
    patterns = ("*.mrc", "*.mrcs", "*.map", "*.map.bz2", "*.map.gz", "*.mrc.bz2")
    found = {p.name for pattern in patterns for p in (shared_data / "real").rglob(pattern)}
    covered = {
        "EMD-3197.map",
        "EMD-3197.map.bz2",
        "emd_3197.map.gz",
        "EMD-3001.map",
        "fei-extended_center2048.mrc.bz2",
        "empiar_10076_7.mrc",
        "relion31.mrcs",
        *(f"20170629_{n:05d}_frameImage.mrcs" for n in range(21, 31)),
        *(f"20170629_{n:05d}_frameImage_PS.mrc" for n in range(21, 27)),
    }
    assert found == covered
    for name in found:
        path = next((shared_data / "real").rglob(name))
        assert read_mrc_header(path).shape
