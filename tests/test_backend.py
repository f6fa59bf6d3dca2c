"""Array backend invariants, run on numpy and (where a GPU exists) on CuPy.

The ``xp`` fixture is the CPU/GPU parity fixture: every test that takes it runs once per
array module, the CuPy run marked ``gpu`` and skipped without a device, after
``cupy.testing.numpy_cupy_allclose``. Tolerances are keyed by dtype.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from cryokube.processing import backend as bk

ATOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture(
    params=[
        pytest.param("numpy", id="numpy"),
        pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
    ]
)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array module under test: numpy, or cupy when CuPy sees a GPU."""
    if request.param == "numpy":
        return np
    if not bk.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy  # pragma: no cover - GPU only

    return cupy  # pragma: no cover - GPU only


@pytest.fixture(params=[(64, 64), (63, 65)], ids=["even", "odd"])
def shape(request: pytest.FixtureRequest) -> tuple[int, int]:
    return tuple(request.param)  # type: ignore[return-value]


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request: pytest.FixtureRequest) -> np.dtype[Any]:
    return np.dtype(request.param)


def _image(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_array_module_follows_input(xp: ModuleType) -> None:
    image = xp.asarray(_image((16, 16)))
    assert bk.array_module(image) is xp
    assert bk.array_module(np.zeros(3)) is np
    assert bk.rfft2(image).dtype == np.complex64
    assert bk.rfft2(image.astype(np.float64)).dtype == np.complex128
    assert type(bk.shift_image(image, xp.asarray([1.0, 0.0]))) is type(image)


def test_rfft_round_trip_and_parseval(
    xp: ModuleType, shape: tuple[int, int], dtype: np.dtype[Any]
) -> None:
    host = _image(shape, dtype)
    image = xp.asarray(host)
    back = bk.irfft2(bk.rfft2(image), shape)
    assert back.dtype == dtype
    np.testing.assert_allclose(bk.to_host(back), host, atol=ATOL[dtype])
    full = np.fft.fft2(host.astype(np.float64))
    np.testing.assert_allclose(np.sum(np.abs(full) ** 2) / host.size, np.sum(host**2.0), rtol=1e-6)


def test_rfftn_3d_round_trip(xp: ModuleType) -> None:
    host = _image((12, 13, 14))
    back = bk.irfftn(bk.rfftn(xp.asarray(host)), host.shape)
    np.testing.assert_allclose(bk.to_host(back), host, atol=1e-5)


def test_integer_fourier_shift_equals_roll(xp: ModuleType, shape: tuple[int, int]) -> None:
    host = _image(shape)
    shifted = bk.shift_image(xp.asarray(host), xp.asarray([3.0, -5.0]))
    np.testing.assert_allclose(bk.to_host(shifted), np.roll(host, (3, -5), axis=(0, 1)), atol=1e-4)


def test_subpixel_shift_moves_a_smooth_blob_by_the_requested_px(xp: ModuleType) -> None:
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    blob = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 3.0**2)).astype(np.float32)
    shifted = bk.to_host(bk.shift_image(xp.asarray(blob), xp.asarray([0.25, -1.5])))
    total = shifted.sum()
    centre = ((shifted * yy).sum() / total, (shifted * xx).sum() / total)
    np.testing.assert_allclose(centre, (32.25, 30.5), atol=1e-3)  # px


def test_batched_shifts(xp: ModuleType) -> None:
    stack = _image((3, 32, 32), seed=2)
    shifts = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    out = bk.to_host(bk.shift_image(xp.asarray(stack), xp.asarray(shifts)))
    for i in range(3):
        expected = np.roll(stack[i], shifts[i].astype(int), axis=(0, 1))
        np.testing.assert_allclose(out[i], expected, atol=1e-4)


def test_fourier_crop_keeps_low_frequencies_and_mean(xp: ModuleType) -> None:
    x = np.mgrid[0:64, 0:64][1]
    wave = (2.0 + np.cos(2 * np.pi * 3 * x / 64)).astype(np.float32)
    small = bk.fourier_resample(xp.asarray(wave), (32, 32))
    xs = np.mgrid[0:32, 0:32][1]
    np.testing.assert_allclose(bk.to_host(small), 2.0 + np.cos(2 * np.pi * 3 * xs / 32), atol=1e-5)
    big = bk.fourier_resample(small, (64, 64))
    np.testing.assert_allclose(bk.to_host(big), wave, atol=1e-5)


@pytest.mark.parametrize("new_shape", [(32, 24), (21, 17)])
def test_rfft2_cropped_is_the_fourier_crop_of_rfft2(xp: ModuleType, new_shape: Any) -> None:
    y, x = np.mgrid[0:64, 0:48]
    wave = (2.0 + np.cos(2 * np.pi * (3 * y / 64 + 5 * x / 48))).astype(np.float32)
    image = wave + 0.1 * _image((64, 48))
    cropped = bk.rfft2_cropped(xp.asarray(image), new_shape)
    reference = bk.fourier_crop(bk.rfft2(xp.asarray(image)), (64, 48), new_shape)
    np.testing.assert_allclose(bk.to_host(cropped), bk.to_host(reference), atol=1e-3)
    ys, xs = np.mgrid[0 : new_shape[0], 0 : new_shape[1]]
    truth = 2.0 + np.cos(2 * np.pi * (3 * ys / new_shape[0] + 5 * xs / new_shape[1]))
    small = bk.to_host(bk.irfft2(bk.rfft2_cropped(xp.asarray(wave), new_shape), new_shape))
    np.testing.assert_allclose(small, truth, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 48), (63, 47)])
def test_irfft2_near_zero_is_irfft2_near_zero(xp: ModuleType, shape: Any) -> None:
    image = _image(shape)
    half = 5
    near = bk.to_host(bk.irfft2_near_zero(bk.rfft2(xp.asarray(image)), shape, half))
    rows = np.r_[0:half, shape[0] - half : shape[0]]
    cols = np.r_[0:half, shape[1] - half : shape[1]]
    np.testing.assert_allclose(near, image[rows[:, None], cols[None, :]], atol=1e-5)


def test_fourier_resample_odd_volume_preserves_mean(xp: ModuleType) -> None:
    vol = _image((15, 15, 15)) + 3.0
    small = bk.to_host(bk.fourier_resample(xp.asarray(vol), (9, 9, 9)))
    assert small.shape == (9, 9, 9)
    np.testing.assert_allclose(small.mean(), vol.mean(), rtol=1e-5)


def test_radial_average_of_radial_function(xp: ModuleType) -> None:
    shape = (64, 64)
    k = bk.radial_frequency(shape, xp=xp)
    prof = bk.to_host(bk.radial_average(k * 64, shape))
    assert prof.shape == (33,)
    np.testing.assert_allclose(prof[1:32], np.arange(1, 32), atol=0.35)


def test_radial_average_batched_equals_single(xp: ModuleType) -> None:
    shape = (32, 32)
    values = xp.asarray(np.abs(_image((2, 32, 17))))
    batched = bk.to_host(bk.radial_average(values, shape))
    for i in range(2):
        np.testing.assert_allclose(
            batched[i], bk.to_host(bk.radial_average(values[i], shape)), rtol=1e-6
        )


def test_rotate_by_90_degrees_matches_rot90(xp: ModuleType) -> None:
    img = np.zeros((33, 33), dtype=np.float32)
    img[16, 26] = 1.0  # on the +x axis, 10 px from the centre
    rotated = bk.to_host(bk.rotate_image(xp.asarray(img), 90.0))
    # (x, y) = (10, 0) from the centre goes to (0, 10): row 26, column 16
    assert np.unravel_index(np.argmax(rotated), rotated.shape) == (26, 16)
    np.testing.assert_allclose(rotated, np.rot90(img, -1), atol=1e-5)


def test_ndimage_module_follows_input(xp: ModuleType) -> None:
    ndi = bk.ndimage_module(xp.zeros(3))
    assert ndi.__name__ == ("scipy.ndimage" if xp is np else "cupyx.scipy.ndimage")


def test_to_device_round_trip_and_bad_device() -> None:
    host = _image((4, 4))
    assert bk.to_host(bk.to_device(host, "cpu")) is host
    with pytest.raises(ValueError, match="device"):
        bk.to_device(host, "tpu")


def test_shift_rejects_wrong_dimension(xp: ModuleType) -> None:
    image = xp.asarray(_image((16, 16)))
    with pytest.raises(ValueError, match="shifts_px"):
        bk.shift_image(image, xp.asarray([1.0, 2.0, 3.0]))


def test_fourier_crop_rejects_mismatched_axes() -> None:
    f = bk.rfft2(_image((8, 8)))
    with pytest.raises(ValueError, match="new_shape"):
        bk.fourier_crop(f, (8, 8), (4, 4, 4))


def test_integer_volume_shift_equals_roll(xp: ModuleType) -> None:
    vol = xp.asarray(np.random.default_rng(5).standard_normal((2, 12, 10, 14)), dtype=np.float32)
    shifts = xp.asarray([[1.0, -2.0, 3.0], [0.0, 4.0, -1.0]])
    moved = bk.irfftn(bk.fourier_shift(bk.rfftn(vol, axes=(1, 2, 3)), shifts, (12, 10, 14)),
                      (12, 10, 14), axes=(1, 2, 3))  # fmt: skip
    for i in range(2):
        expected = np.roll(bk.to_host(vol[i]), bk.to_host(shifts[i]).astype(int), axis=(0, 1, 2))
        np.testing.assert_allclose(bk.to_host(moved[i]), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_cgroup_cpu_limit_rounds_the_quota_up(cpu_max: str, cores: int | None) -> None:
    assert bk.cgroup_cpu_limit(cpu_max) == cores


def test_fft_workers_follow_the_setting_and_are_one_inside_parallel_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRYOKUBE_FFT_WORKERS", "3")
    assert bk.fft_workers() == 3
    # each of the 3 threads runs its own FFTs on one thread, in order of the items
    inner = bk.parallel_map(lambda i: (i, bk.fft_workers()), range(7), np)
    assert inner == [(i, 1) for i in range(7)]
    monkeypatch.delenv("CRYOKUBE_FFT_WORKERS")
    assert 1 <= bk.fft_workers() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("shape", [(432, 432), (11, 12), (7,), (2,), (5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_median_is_numpys(shape: tuple[int, ...], dtype: type) -> None:
    """The one-partition median gives numpy's value and dtype, even and odd counts, ties."""
    rng = np.random.default_rng(sum(shape))
    for x in (rng.standard_normal(shape) * 100, rng.integers(0, 3, shape)):
        values = x.astype(dtype)
        got, expected = bk.median(values), np.median(values)
        assert got == expected
        assert np.asarray(got).dtype == np.asarray(expected).dtype


@pytest.mark.parametrize("n", [47, 48])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bilinear_rotation_kernel_gives_scipys_values(n: int, dtype: type) -> None:
    """Bilinear rotations of numpy stacks (a compiled kernel) are scipy's ``affine_transform``
    of each image about the centre pixel in ``"constant"`` mode, the edges included: the 10-deg
    grid of 2D classification (the multiples of 90 deg put points on the border) and random
    angles."""
    from scipy import ndimage

    rng = np.random.default_rng(n)
    images = rng.standard_normal((3, n, n)).astype(dtype)
    centre = np.array([n // 2, n // 2], dtype=float)
    for angle in [*range(0, 360, 10), *rng.uniform(-400, 400, 10)]:
        theta = np.deg2rad(angle)
        matrix = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        offset = centre - matrix @ centre
        expected = np.stack(
            [
                ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant")
                for image in images
            ]
        )
        # the same interpolation, its sums in another order (1e-16 apart in float64)
        tolerance = 1e-6 if dtype == np.float32 else 1e-12
        got = bk.rotate_image(images, float(angle))
        assert got.dtype == images.dtype
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
        single = bk.rotate_image(images[0], float(angle))
        np.testing.assert_allclose(single, expected[0], rtol=0, atol=tolerance)
