"""Array backend invariants on the numpy path (the CuPy path runs the same functions)."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing import backend as bk


@pytest.fixture(params=[(64, 64), (63, 65)], ids=["even", "odd"])
def image(request: pytest.FixtureRequest) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(request.param).astype(np.float32)


def test_array_module_follows_input(image: np.ndarray) -> None:
    assert bk.array_module(image) is np
    assert bk.rfft2(image).dtype == np.complex64
    assert bk.rfft2(image.astype(np.float64)).dtype == np.complex128


def test_rfft_round_trip_and_parseval(image: np.ndarray) -> None:
    f = bk.rfft2(image)
    back = bk.irfft2(f, image.shape)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, image, atol=1e-5)
    full = np.fft.fft2(image)
    np.testing.assert_allclose(np.sum(np.abs(full) ** 2) / image.size, np.sum(image**2), rtol=1e-4)


def test_integer_fourier_shift_equals_roll(image: np.ndarray) -> None:
    shifted = bk.shift_image(image, np.array([3.0, -5.0]))
    np.testing.assert_allclose(shifted, np.roll(image, (3, -5), axis=(0, 1)), atol=1e-4)


def test_batched_shifts() -> None:
    stack = np.random.default_rng(2).standard_normal((3, 32, 32)).astype(np.float32)
    shifts = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    out = bk.shift_image(stack, shifts)
    for i in range(3):
        expected = np.roll(stack[i], shifts[i].astype(int), axis=(0, 1))
        np.testing.assert_allclose(out[i], expected, atol=1e-4)


def test_fourier_crop_keeps_low_frequencies_and_mean() -> None:
    x = np.mgrid[0:64, 0:64][1]
    wave = (2.0 + np.cos(2 * np.pi * 3 * x / 64)).astype(np.float32)
    small = bk.fourier_resample(wave, (32, 32))
    xs = np.mgrid[0:32, 0:32][1]
    np.testing.assert_allclose(small, 2.0 + np.cos(2 * np.pi * 3 * xs / 32), atol=1e-5)
    big = bk.fourier_resample(small, (64, 64))
    np.testing.assert_allclose(big, wave, atol=1e-5)


def test_radial_average_of_radial_function() -> None:
    shape = (64, 64)
    k = bk.radial_frequency(shape)
    prof = bk.radial_average(k * 64, shape)
    assert prof.shape == (33,)
    np.testing.assert_allclose(prof[1:32], np.arange(1, 32), atol=0.35)


def test_rotate_by_90_degrees_matches_rot90() -> None:
    img = np.zeros((33, 33), dtype=np.float32)
    img[16, 26] = 1.0  # on the +x axis, 10 px from the centre
    rotated = bk.rotate_image(img, 90.0)
    # (x, y) = (10, 0) from the centre goes to (0, 10): row 26, column 16
    assert np.unravel_index(np.argmax(rotated), rotated.shape) == (26, 16)
    np.testing.assert_allclose(rotated, np.rot90(img, -1), atol=1e-5)


def test_shift_rejects_wrong_dimension(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shifts_px"):
        bk.shift_image(image, np.array([1.0, 2.0, 3.0]))
