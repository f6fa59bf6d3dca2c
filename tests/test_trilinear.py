"""The compiled CPU kernels for slice extraction and insertion against the array code (CuPy's
path), which the projection and reconstruction tests hold to the physics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from cryokube.processing.algorithms import projection, reconstruction
from cryokube.processing.algorithms.symmetry import axis_rotation
from cryokube.processing.backend import fft_freqs
from cryokube.processing.simulate import phantom_volume
from scipy.spatial.transform import Rotation

BOX = 24


def _rotations(dtype: type = np.float32) -> np.ndarray:
    """Random views plus views whose samples fall on grid nodes, planes and the Nyquist edge."""
    grid = [
        axis_rotation(axis, angle)
        for axis in ((0, 0, 1), (0, 1, 0), (1, 0, 0))
        for angle in (0, 90, 180, 270)
    ]
    random = Rotation.random(40, random_state=3).as_matrix()
    return np.concatenate([np.stack(grid), random]).astype(dtype)


@pytest.fixture(scope="module")
def fvol() -> projection.FourierVolume:
    return projection.fourier_volume(phantom_volume(BOX, 4.0, seed=0).volume)


@pytest.mark.parametrize("max_frequency", [0.5, 0.3, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extraction_equals_the_array_code(
    fvol: projection.FourierVolume, max_frequency: float | None, dtype: type
) -> None:
    rot = _rotations(dtype)
    assert projection.takes_compiled_path(fvol.spectrum)
    compiled = projection.extract_slices(fvol, rot, max_frequency=max_frequency)
    ky, kx = fft_freqs((BOX, BOX))
    keep = None if max_frequency is None else (kx * kx + ky * ky) <= max_frequency**2
    arrays = projection._extract_arrays(fvol, rot, keep)
    arrays *= projection._centring_ramp(BOX, np).astype(arrays.dtype)
    # the same float32 operations in the same order: equal to the last bit
    np.testing.assert_array_equal(compiled, arrays)
    assert np.count_nonzero(compiled) > 0.25 * compiled.size  # the 0.3 disc has 28%


def test_extraction_of_one_view_has_the_image_shape(fvol: projection.FourierVolume) -> None:
    one = projection.extract_slices(fvol, np.eye(3, dtype=np.float32))
    assert one.shape == (BOX, BOX // 2 + 1)
    np.testing.assert_array_equal(one, projection.extract_slices(fvol, np.eye(3)[None])[0])


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rot = _rotations()
    b = rot.shape[0]
    shape = (b, BOX, BOX // 2 + 1)
    spectra = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    ctf = rng.uniform(-1, 1, shape).astype(np.float32)
    weights = rng.uniform(0.2, 1, b).astype(np.float32)
    return spectra, rot, ctf, weights


@pytest.mark.parametrize(
    ("use_ctf", "use_weights", "max_frequency"),
    [(True, True, 0.5), (False, False, 0.5), (True, False, 0.3)],
)
def test_insertion_equals_the_array_code(
    use_ctf: bool, use_weights: bool, max_frequency: float
) -> None:
    spectra, rot, ctf, weights = _inputs(np.random.default_rng(0))
    kwargs = {
        "ctf": ctf if use_ctf else None,
        "weights": weights if use_weights else None,
        "max_frequency": max_frequency,
    }
    compiled = reconstruction.new_accumulator(BOX)
    assert reconstruction.takes_compiled_path(compiled.data)
    reconstruction.insert_slices(compiled, spectra, rot, **kwargs)
    arrays = reconstruction.new_accumulator(BOX)
    ky, kx = fft_freqs((BOX, BOX))
    inside = (kx * kx + ky * ky <= max_frequency**2) & ((kx > 0) | (ky >= 0) | (ky == -0.5))
    reconstruction._insert_arrays(
        arrays, spectra, rot, kwargs["ctf"], kwargs["weights"], np.flatnonzero(inside)
    )
    # the same terms summed in another order (sample by sample, not corner by corner)
    scale = float(np.abs(arrays.data).max())
    assert np.abs(compiled.data - arrays.data).max() <= 1e-6 * scale
    assert np.abs(compiled.weight - arrays.weight).max() <= 1e-6 * float(arrays.weight.max())
    assert np.count_nonzero(compiled.weight) == np.count_nonzero(arrays.weight)


def test_insertion_does_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    spectra, rot, ctf, weights = _inputs(np.random.default_rng(1))
    results = []
    for workers in ("1", "2", "3"):
        monkeypatch.setenv("CRYOKUBE_FFT_WORKERS", workers)
        acc = reconstruction.new_accumulator(BOX)
        reconstruction.insert_slices(acc, spectra, rot, ctf=ctf, weights=weights)
        results.append(acc)
    for acc in results[1:]:
        np.testing.assert_array_equal(acc.data, results[0].data)
        np.testing.assert_array_equal(acc.weight, results[0].weight)


def test_kernels_called_from_several_threads_at_once() -> None:
    """numba's default thread pool aborts the process on concurrent launches; the kernels
    take turns instead."""
    spectra, rot, ctf, _ = _inputs(np.random.default_rng(2))
    expected = reconstruction.new_accumulator(BOX)
    reconstruction.insert_slices(expected, spectra, rot, ctf=ctf)
    accumulators = [reconstruction.new_accumulator(BOX) for _ in range(4)]

    def insert(acc: reconstruction.FourierAccumulator) -> None:
        for _ in range(3):
            reconstruction.insert_slices(acc, spectra[:10], rot[:10], ctf=ctf[:10])
            reconstruction.insert_slices(acc, spectra[10:], rot[10:], ctf=ctf[10:])

    threads = [threading.Thread(target=insert, args=(acc,)) for acc in accumulators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for acc in accumulators:
        np.testing.assert_allclose(acc.weight, 3 * expected.weight, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("box", "oversampling"), [(25, 2), (24, 3), (17, 1)])
def test_odd_sizes_equal_the_array_code(box: int, oversampling: int) -> None:
    """Odd boxes and odd padded grids (no Nyquist plane) take the same arithmetic."""
    rot = _rotations()
    fvol = projection.fourier_volume(
        phantom_volume(box, 4.0, seed=1).volume, oversampling=oversampling
    )
    ky, kx = fft_freqs((box, box))
    disc = (kx * kx + ky * ky) <= 0.25
    arrays = projection._extract_arrays(fvol, rot, disc)
    arrays *= projection._centring_ramp(box, np).astype(arrays.dtype)
    slices = projection.extract_slices(fvol, rot)
    np.testing.assert_array_equal(slices, arrays)

    compiled = reconstruction.new_accumulator(box, oversampling=oversampling)
    reconstruction.insert_slices(compiled, slices, rot)
    expected = reconstruction.new_accumulator(box, oversampling=oversampling)
    inside = disc & ((kx > 0) | (ky >= 0) | (ky == -0.5))
    reconstruction._insert_arrays(expected, slices, rot, None, None, np.flatnonzero(inside))
    assert np.abs(compiled.data - expected.data).max() <= 1e-6 * float(np.abs(expected.data).max())
    np.testing.assert_allclose(compiled.weight, expected.weight, rtol=1e-6, atol=1e-6)
