"""Motion correction against the simulator's known global and local drift."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing.algorithms.motion import (
    MotionResult,
    _halved_padded,
    _irfft2_in_place,
    _ramped_sums,
    align_movie,
    dose_weights,
    evaluate_deformation,
    fit_deformation,
)
from cryokube.processing.backend import (
    fourier_shift,
    irfft2,
    phase_ramps,
    radial_frequency,
    rfft2,
)
from cryokube.processing.io.gain import FrameCorrection, find_defects
from cryokube.processing.simulate import Movie, simulate_movie


def _corrected(movie: Movie) -> np.ndarray:
    """Gain and hot-pixel correction as the job applies it while reading (io.gain)."""
    gain = movie.truth.gain
    defects = find_defects(movie.frames.sum(axis=0) * gain)
    return FrameCorrection(gain=gain, defects=defects).apply(movie.frames)


@pytest.fixture(scope="module")
def realistic() -> tuple[Movie, MotionResult]:
    """1024 x 1024 x 40 frames at 1 e/A^2 per frame and 1 A/px: one count per pixel per frame."""
    movie = simulate_movie(
        shape=(1024, 1024),
        pixel_size_A=1.0,
        n_frames=40,
        dose_per_frame_e_per_A2=1.0,
        total_drift_px=15.0,
        local_drift_px=2.0,
        seed=3,
    )
    result = align_movie(_corrected(movie), pixel_size_A=1.0, dose_per_frame_e_per_A2=1.0)
    return movie, result


def _rms_px(error_yx: np.ndarray) -> float:
    """RMS length of trajectory errors after removing each trajectory's mean offset."""
    centred = error_yx - error_yx.mean(axis=-2, keepdims=True)
    return float(np.sqrt(np.mean(np.sum(centred**2, axis=-1))))


@pytest.mark.slow
def test_global_trajectory_within_0p2_px(realistic: tuple[Movie, MotionResult]) -> None:
    movie, result = realistic
    truth_yx = movie.truth.drift_px[:, ::-1]
    assert np.ptp(truth_yx, axis=0).max() > 5.0  # the movie really drifts
    assert _rms_px(result.global_shifts_px - truth_yx) < 0.2
    np.testing.assert_allclose(result.global_shifts_px[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(result.global_shifts_A, result.global_shifts_px * 1.0)


@pytest.mark.slow
def test_local_trajectories_within_0p5_px(realistic: tuple[Movie, MotionResult]) -> None:
    movie, result = realistic
    centres = result.patch_centres_px
    assert centres.shape == (25, 2)
    truth = movie.truth.displacement_px(centres[:, 1], centres[:, 0])  # (frames, patches, xy)
    truth_yx = np.moveaxis(truth, 0, 1)[..., ::-1]
    local_only = truth_yx - movie.truth.drift_px[None, :, ::-1]
    assert np.abs(local_only).max() > 1.0  # local motion is large enough to matter
    assert _rms_px(result.local_shifts_px - truth_yx) < 0.5


@pytest.mark.slow
def test_outputs_of_realistic_movie(realistic: tuple[Movie, MotionResult]) -> None:
    movie, result = realistic
    assert result.micrograph.shape == (1024, 1024)
    assert result.micrograph.dtype == np.float32
    assert result.power_spectrum.shape == (512, 512)
    assert result.thumbnail.shape == (512, 512)
    # The aligned plain sum matches the truth image far better than the unaligned sum.
    truth = movie.truth.image

    def corr(a: np.ndarray) -> float:
        return float(np.corrcoef(a[64:-64, 64:-64].ravel(), truth[64:-64, 64:-64].ravel())[0, 1])

    assert corr(result.micrograph_plain) > corr(_corrected(movie).sum(axis=0)) + 0.1


def _critical_exposure(k_per_A: np.ndarray) -> np.ndarray:
    """Grant & Grigorieff (2015) critical exposure in e/A^2, written out independently."""
    return 0.245 * np.maximum(k_per_A, 1e-6) ** -1.665 + 2.81


def test_dose_weighted_sum_has_higher_spectral_snr() -> None:
    """Frames whose signal decays by the measured radiation damage: weighting must help.

    The signal is white (equal power at every frequency) so that the high-frequency band holds
    signal; its amplitude at frequency k decays as exp(-N / (2 N_e(k))) with exposure N.
    """
    rng = np.random.default_rng(0)
    signal = 0.3 * rng.standard_normal((384, 384)).astype(np.float32)
    n_frames, dose = 40, 1.0
    k = radial_frequency(signal.shape) / 1.0
    spectrum = rfft2(signal)
    frames = []
    for i in range(n_frames):
        damaged = irfft2(
            spectrum * np.exp(-dose * (i + 1) / (2 * _critical_exposure(k))), signal.shape
        )
        frames.append(rng.poisson(dose * np.clip(1.0 + damaged, 0, None)))
    result = align_movie(
        np.asarray(frames, dtype=np.uint8),
        pixel_size_A=1.0,
        dose_per_frame_e_per_A2=dose,
        patch_grid=None,
    )

    def ssnr(image: np.ndarray) -> float:
        band = (k > 0.15) & (k < 0.3)
        a, b = rfft2(image - image.mean())[band], spectrum[band]
        frc = np.abs(np.sum(a * np.conj(b))) / np.sqrt(
            np.sum(np.abs(a) ** 2) * np.sum(np.abs(b) ** 2)
        )
        return float(frc / (1 - frc))

    assert ssnr(result.micrograph) > 1.3 * ssnr(result.micrograph_plain)


def test_dose_weights_keep_zero_frequency_and_noise_power() -> None:
    weights = dose_weights((64, 64), 1.0, np.arange(1, 31, dtype=np.float32))
    assert weights.shape == (30, 64, 33)
    np.testing.assert_allclose(weights[:, 0, 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sum(weights**2, axis=0), 30.0, rtol=1e-4)
    assert weights[-1, 20, 20] < weights[0, 20, 20]  # late frames count less at high k


def test_deformation_model_round_trip() -> None:
    rng = np.random.default_rng(1)
    coefficients = rng.normal(size=(2, 6, 3)).astype(np.float32)
    centres = np.stack(np.meshgrid(np.linspace(100, 900, 5), np.linspace(100, 900, 5)), -1)
    centres = centres.reshape(-1, 2)
    trajectories = evaluate_deformation(coefficients, centres, 20, (1000, 1000))
    offsets = rng.normal(size=(25, 1, 2)) * 5  # each patch has its own arbitrary offset
    fitted = fit_deformation(centres, trajectories + offsets, (1000, 1000))
    np.testing.assert_allclose(
        evaluate_deformation(fitted, centres, 20, (1000, 1000)), trajectories, atol=1e-3
    )


def test_fourier_crop_float16_and_frame_range() -> None:
    movie = simulate_movie(shape=(256, 256), n_frames=12, total_drift_px=4.0, seed=2)
    result = align_movie(
        _corrected(movie),
        pixel_size_A=1.0,
        dose_per_frame_e_per_A2=1.0,
        patch_grid=(2, 2),
        frame_range=(2, 12),
        fourier_crop_factor=2.0,
        output_float16=True,
    )
    assert result.micrograph.shape == (128, 128)
    assert result.micrograph.dtype == np.float16
    assert result.pixel_size_A == pytest.approx(2.0)
    assert result.global_shifts_px.shape == (10, 2)
    assert result.local_shifts_px.shape == (4, 10, 2)
    truth_yx = movie.truth.drift_px[2:, ::-1]
    assert _rms_px(result.global_shifts_px - truth_yx) < 0.3


def test_frames_of_slow_fft_sides_are_padded_not_distorted() -> None:
    """262 x 278 px (2 x 131, 2 x 139) frames are padded to 270 x 288 for the FFTs.

    The trajectory is still measured in input pixels (a scale taken from the unpadded sides
    would be 3% off: 0.4 px over this 12 px drift) and the outputs keep the input shape.
    """
    movie = simulate_movie(shape=(262, 278), n_frames=12, total_drift_px=12.0, seed=4)
    result = align_movie(
        _corrected(movie), pixel_size_A=1.0, dose_per_frame_e_per_A2=1.0, patch_grid=(2, 2)
    )
    assert result.micrograph.shape == (262, 278)
    truth_yx = movie.truth.drift_px[:, ::-1]
    assert np.ptp(truth_yx, axis=0).max() > 8.0
    assert _rms_px(result.global_shifts_px - truth_yx) < 0.2
    # Patch centres lie on the movie, symmetric about its centre, not on the padding.
    np.testing.assert_allclose(result.patch_centres_px.mean(axis=0), (131.0, 139.0), atol=1.0)


def test_threads_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames, patches and tiles run one per thread; the output must not depend on it.

    64-px tiles on 262 x 278 frames: the last row and column of tiles overlap their neighbours,
    whose shares of the sums must not be written by whichever thread finishes last.
    """
    movie = simulate_movie(shape=(262, 278), n_frames=12, total_drift_px=6.0, seed=5)
    frames = _corrected(movie)
    kwargs = {"pixel_size_A": 1.0, "dose_per_frame_e_per_A2": 1.0, "patch_grid": (2, 2)}
    results = []
    for workers in ("1", "2"):
        monkeypatch.setenv("CRYOKUBE_FFT_WORKERS", workers)
        results.append(align_movie(frames, tile_px=64, **kwargs))  # type: ignore[arg-type]
    one, two = results
    truth_yx = movie.truth.drift_px[:, ::-1]
    assert _rms_px(two.global_shifts_px - truth_yx) < 0.2
    np.testing.assert_array_equal(two.global_shifts_px, one.global_shifts_px)
    np.testing.assert_array_equal(two.local_shifts_px, one.local_shifts_px)
    np.testing.assert_array_equal(two.micrograph, one.micrograph)
    np.testing.assert_array_equal(two.micrograph_plain, one.micrograph_plain)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pixel_size_A": 0.0}, "pixel_size_A"),
        ({"max_resolution_A": 1.0}, "max_resolution_A"),
        ({"frame_range": (3, 4)}, "frame_range"),
        ({"fourier_crop_factor": 0.5}, "fourier_crop_factor"),
        ({"patch_grid": (0, 3)}, "patch_grid"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    frames = np.ones((4, 32, 32), dtype=np.float32)
    arguments: dict[str, object] = {"pixel_size_A": 1.0, "dose_per_frame_e_per_A2": 1.0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        align_movie(frames, **arguments)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    """The same code on CuPy arrays gives the CPU trajectory (skipped without a GPU)."""
    from cryokube.processing.backend import gpu_available, to_device, to_host

    if not gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    movie = simulate_movie(shape=(256, 256), n_frames=12, total_drift_px=4.0, seed=2)
    frames = _corrected(movie)
    kwargs = {"pixel_size_A": 1.0, "dose_per_frame_e_per_A2": 1.0, "patch_grid": (2, 2)}
    cpu = align_movie(frames, **kwargs)  # type: ignore[arg-type]
    gpu = align_movie(to_device(frames, "gpu"), **kwargs)  # type: ignore[arg-type]
    np.testing.assert_allclose(to_host(gpu.global_shifts_px), cpu.global_shifts_px, atol=0.02)
    np.testing.assert_allclose(to_host(gpu.micrograph), cpu.micrograph, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("order", ["C", "F"], ids=["compiled", "array code"])
def test_ramped_sums_equal_the_formula(order: str) -> None:
    """The tile correction's ramp-and-sum, by the compiled kernel (a C-ordered complex64 stack)
    and by the array code (any other stack), is the plain formula over the whole stack."""
    rng = np.random.default_rng(3)
    shape = (21, 16)
    stack = rng.standard_normal((5, *shape)).astype(np.float32)
    spectra = np.fft.rfft2(stack).astype(np.complex64)
    shifts = rng.uniform(-0.5, 0.5, (5, 2)).astype(np.float32)
    weights = rng.uniform(0.2, 1.0, spectra.shape).astype(np.complex64)
    moved = fourier_shift(spectra, shifts, shape)
    ramp_y, ramp_x = phase_ramps(shifts, shape, np.complex64)
    plain, weighted = _ramped_sums(np.array(spectra, order=order), ramp_y, ramp_x, weights)
    np.testing.assert_allclose(plain, moved.sum(axis=0), rtol=1e-5, atol=1e-4)
    assert weighted is not None
    np.testing.assert_allclose(weighted, (moved * weights).sum(axis=0), rtol=1e-5, atol=1e-4)
    alone, none = _ramped_sums(np.array(spectra, order=order), ramp_y, ramp_x, None)
    np.testing.assert_array_equal(alone, plain)
    assert none is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float16])
@pytest.mark.parametrize("order", ["C", "F"], ids=["compiled", "array code"])
def test_halved_frames_are_padded_block_means(dtype: type, order: str) -> None:
    """Binning's first step, by the compiled kernel (C-ordered frames of the counting dtypes and
    float32) and by the array code (float16, other layouts): the means of the 2 x 2 blocks,
    the padding filled with the given value."""
    rng = np.random.default_rng(4)
    frame = np.array(rng.integers(0, 200, (10, 14)), dtype=dtype, order=order)
    out = _halved_padded(frame, (8, 9), np.float32(1.5))
    assert out.dtype == np.float32
    expected = frame.astype(np.float64).reshape(5, 2, 7, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out[:5, :7], expected, rtol=1e-6)
    assert np.all(out[5:] == 1.5)
    assert np.all(out[:, 7:] == 1.5)


def test_spectra_go_back_to_real_space_in_their_own_memory() -> None:
    """The binned stack's inverse FFT, written over the spectra frame by frame, equals the
    batched inverse FFT, for an even and an odd width."""
    rng = np.random.default_rng(5)
    for shape in ((12, 16), (12, 15)):
        images = rng.standard_normal((4, *shape)).astype(np.float32)
        spectra = rfft2(images)
        expected = irfft2(spectra, shape)
        out = _irfft2_in_place(spectra, shape)
        assert np.shares_memory(out, spectra)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
