"""Simulator: the data carry exactly the truth they claim (poses, shifts, SNR, drift, dose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryokube.processing import simulate as sim
from cryokube.processing.algorithms.projection import project
from cryokube.processing.ctf import ctf_2d
from cryokube.processing.geometry import euler_to_matrix
from cryokube.processing.io.movies import read_movie
from cryokube.processing.io.mrc import read_mrc


@pytest.fixture(scope="module")
def phantom() -> sim.Phantom:
    return sim.phantom_volume(48, 2.5, seed=7)


def test_phantom_is_deterministic_massive_and_asymmetric(phantom: sim.Phantom) -> None:
    again = sim.phantom_volume(48, 2.5, seed=7)
    np.testing.assert_array_equal(again.volume, phantom.volume)
    other = sim.phantom_volume(48, 2.5, seed=8)
    assert not np.allclose(other.volume, phantom.volume)
    vol = phantom.volume.astype(np.float64)
    # every atom integrates to its weight; the density's centre of mass is the atoms' (in A)
    np.testing.assert_allclose(vol.sum(), phantom.atom_weights.sum(), rtol=1e-3)
    axis = (np.arange(48) - 24) * 2.5
    com_xyz = [
        np.sum(vol * axis[None, None, :]),
        np.sum(vol * axis[None, :, None]),
        np.sum(vol * axis[:, None, None]),
    ] / vol.sum()
    expected = np.average(phantom.atom_positions_A, axis=0, weights=phantom.atom_weights)
    np.testing.assert_allclose(com_xyz, expected, atol=0.05)
    # inside the box with a margin, and without point or two-fold symmetry
    assert np.abs(phantom.atom_positions_A).max() < 0.35 * 48 * 2.5
    centred = vol - vol.mean()
    for flipped in (centred[::-1, ::-1, ::-1], centred[:, ::-1, ::-1]):
        shifted = np.roll(flipped, 1, axis=(0, 1, 2))  # mirror about voxel N//2, not (N-1)/2
        corr = np.sum(centred * shifted) / np.sum(centred**2)
        assert corr < 0.6


def _centre_from_phase(image: np.ndarray, ctf: np.ndarray) -> np.ndarray:
    """Centre (x, y) px of a symmetric blob blurred by a real CTF, from the lowest frequencies."""
    n = image.shape[-1]
    spectrum = np.fft.rfft2(image) * ctf  # ctf^2 * G >= 0, so only the position's phase is left
    cx = -np.angle(spectrum[0, 1]) * n / (2 * np.pi)
    cy = -np.angle(spectrum[1, 0]) * n / (2 * np.pi)
    return np.mod(np.array([cx, cy]), n)


def test_particles_put_a_known_atom_where_pose_and_shift_say() -> None:
    """One Gaussian atom at r0 appears at N//2 + (A @ r0)[:2] + shift (px), CTF and all."""
    n, px = 40, 2.0
    r0_A = np.array([6.0, -4.0, 5.0])
    volume = sim.render_atoms(n, px, r0_A[None, :], np.ones(1), atom_sigma_A=3.0)
    stack = sim.simulate_particles(
        volume, px, 6, snr=1.0, max_shift_px=3.0, keep_clean=True, seed=3, b_factor_A2=0.0
    )
    truth = stack.truth
    assert stack.clean is not None
    ctf = ctf_2d(
        (n, n), px, defocus_u_A=truth.defocus_u_A, defocus_v_A=truth.defocus_v_A,
        astig_angle_deg=truth.astig_angle_deg, voltage_kV=truth.voltage_kV,
        cs_mm=truth.cs_mm, amp_contrast=truth.amp_contrast,
    )  # fmt: skip
    for i in range(6):
        expected = n // 2 + (truth.rotations[i] @ r0_A)[:2] / px + truth.shifts_px[i]
        found = _centre_from_phase(stack.clean[i], ctf[i])
        np.testing.assert_allclose(found, expected, atol=0.05)


def test_particle_snr_ctf_and_determinism(phantom: sim.Phantom) -> None:
    kwargs = {"snr": 0.05, "keep_clean": True, "seed": 11}
    stack = sim.simulate_particles(phantom.volume, 2.5, 64, **kwargs)
    assert stack.images.shape == (64, 48, 48)
    assert stack.images.dtype == np.float32
    assert stack.clean is not None
    noise = stack.images - stack.clean
    measured = np.mean(np.var(stack.clean, axis=(-2, -1))) / np.var(noise)
    assert measured == pytest.approx(0.05, rel=0.03)
    assert np.std(noise) == pytest.approx(stack.truth.noise_sigma, rel=0.01)
    truth = stack.truth
    assert np.all(truth.defocus_u_A >= truth.defocus_v_A)
    assert np.all((truth.defocus_v_A > 7000) & (truth.defocus_u_A < 26000))
    np.testing.assert_allclose(truth.rotations, euler_to_matrix(truth.euler_deg))
    assert truth.pose_rad.shape == (64, 3)
    # the noise-free image is the CTF-modulated, shifted projection of the truth pose
    ctf = ctf_2d(
        (48, 48), 2.5, defocus_u_A=truth.defocus_u_A[:3], defocus_v_A=truth.defocus_v_A[:3],
        astig_angle_deg=truth.astig_angle_deg[:3], voltage_kV=300.0, cs_mm=2.7,
        amp_contrast=0.07, b_factor_A2=truth.b_factor_A2,
    )  # fmt: skip
    proj = project(phantom.volume, truth.rotations[:3])
    phase = np.exp(
        -2j * np.pi
        * (truth.shifts_px[:3, 0, None, None] * np.fft.rfftfreq(48)[None, None, :]
           + truth.shifts_px[:3, 1, None, None] * np.fft.fftfreq(48)[None, :, None])
    )  # fmt: skip
    rebuilt = np.fft.irfft2(np.fft.rfft2(proj) * ctf * phase, (48, 48))
    np.testing.assert_allclose(stack.clean[:3], rebuilt, atol=1e-4 * np.abs(rebuilt).max())
    again = sim.simulate_particles(phantom.volume, 2.5, 64, **kwargs)
    np.testing.assert_array_equal(again.images, stack.images)


def test_particles_from_a_real_emdb_map(shared_data: Path) -> None:
    """Any MRC map can stand in for the phantom: EMD-3197 (20^3 voxels of 11.4 A)."""
    volume, info = read_mrc(shared_data / "real" / "mrcfile-testdata" / "EMD-3197.map", mmap=False)
    pixel_size_A = info.voxel_size_A[0]
    stack = sim.simulate_particles(volume, pixel_size_A, 16, snr=0.5, keep_clean=True, seed=9)
    assert stack.images.shape == (16, 20, 20)
    assert stack.truth.pixel_size_A == pytest.approx(11.4)
    assert stack.clean is not None
    measured = np.mean(np.var(stack.clean, axis=(-2, -1))) / np.var(stack.images - stack.clean)
    assert measured == pytest.approx(0.5, rel=0.1)


def test_micrograph_particles_at_truth_positions(phantom: sim.Phantom) -> None:
    mic = sim.simulate_micrograph(
        phantom.volume, 2.5, shape=(320, 384), n_particles=8, snr=0.1, keep_clean=True, seed=5
    )
    truth = mic.truth
    assert mic.image.shape == (320, 384)
    assert mic.clean is not None
    assert truth.centres_px.shape == (8, 2)
    box = truth.box_size
    x, y = truth.centres_px.T
    assert np.all((x >= box // 2) & (x <= 384 - box // 2) & (y >= box // 2) & (y <= 320 - box // 2))
    assert not truth.carbon_mask[y.astype(int), x.astype(int)].any()
    assert 0.1 < truth.carbon_mask.mean() < 0.3
    gaps = np.hypot(*(truth.centres_px[:, None] - truth.centres_px[None]).transpose(2, 0, 1))
    assert gaps[~np.eye(8, dtype=bool)].min() >= 0.8 * box
    measured = np.var(mic.clean) / np.var(mic.image - mic.clean)
    assert measured == pytest.approx(0.1, rel=0.03)
    # the CTF-modulated projection at the truth pose matches best at the truth centre
    ctf = ctf_2d(
        (box, box), 2.5, defocus_u_A=truth.defocus_u_A, defocus_v_A=truth.defocus_v_A,
        astig_angle_deg=truth.astig_angle_deg, voltage_kV=300.0, cs_mm=2.7,
        amp_contrast=0.07, b_factor_A2=truth.b_factor_A2,
    )  # fmt: skip
    frac = truth.centres_px - np.floor(truth.centres_px)
    phase = np.exp(
        -2j * np.pi
        * (frac[:, 0, None, None] * np.fft.rfftfreq(box)[None, None, :]
           + frac[:, 1, None, None] * np.fft.fftfreq(box)[None, :, None])
    )  # fmt: skip
    templates = np.fft.irfft2(
        np.fft.rfft2(project(phantom.volume, euler_to_matrix(truth.euler_deg))) * ctf * phase,
        (box, box),
    )
    padded = np.pad(mic.clean, 3)
    for (cx, cy), template in zip(truth.centres_px, templates, strict=True):
        x0, y0 = int(np.floor(cx)) - box // 2 + 3, int(np.floor(cy)) - box // 2 + 3
        scores = {}
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                window = padded[y0 + dy : y0 + dy + box, x0 + dx : x0 + dx + box]
                scores[dx, dy] = np.sum(window * template) / np.linalg.norm(window)
        assert max(scores, key=scores.__getitem__) == (0, 0)


def _shift_of(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(x, y) px by which ``frame`` content is displaced from ``reference`` (parabolic peak)."""
    cc = np.fft.irfft2(np.fft.rfft2(frame - frame.mean()) * np.conj(np.fft.rfft2(reference)))
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    out = []
    for axis, i in ((1, ix), (0, iy)):
        n = cc.shape[axis]
        idx = [iy, ix]
        values = []
        for d in (-1, 0, 1):
            idx[axis] = (i + d) % n
            values.append(cc[idx[0], idx[1]])
        lo, mid, hi = values
        sub = 0.5 * (lo - hi) / (lo - 2 * mid + hi)
        out.append((i + sub + n // 2) % n - n // 2)
    return np.array(out)


def test_movie_global_drift_equals_truth() -> None:
    movie = sim.simulate_movie(
        shape=(192, 192), n_frames=8, dose_per_frame_e_per_A2=40.0, local_drift_px=0.0,
        total_drift_px=6.0, gain_variation=0.0, n_hot_pixels=0, seed=1,
    )  # fmt: skip
    truth = movie.truth
    np.testing.assert_array_equal(truth.drift_px[0], 0.0)
    path_length = np.sum(np.hypot(*np.diff(truth.drift_px, axis=0).T))
    assert path_length == pytest.approx(6.0)
    found = np.array([_shift_of(f.astype(np.float64), truth.image) for f in movie.frames])
    np.testing.assert_allclose(found, truth.drift_px, atol=0.1)


def _fit_displacement(window: np.ndarray, image: np.ndarray, y0: int, x0: int) -> np.ndarray:
    """Least-squares (x, y) px displacement of ``image`` content seen in ``window`` at (y0, x0).

    Gauss-Newton on ``window = scale * image(r - d)`` from d = 0, the image shifted as a whole
    (Fourier) and then cropped, so no patch boundary biases the estimate.
    """
    ny, nx = window.shape
    d = np.zeros(2)
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.rfftfreq(image.shape[1])[None, :]
    spectrum = np.fft.rfft2(image)
    for _ in range(6):
        ramp = np.exp(-2j * np.pi * (kx * d[0] + ky * d[1]))
        model = np.fft.irfft2(spectrum * ramp, image.shape)[y0 : y0 + ny, x0 : x0 + nx]
        gy, gx = np.gradient(np.fft.irfft2(spectrum * ramp, image.shape), axis=(0, 1))
        gx, gy = gx[y0 : y0 + ny, x0 : x0 + nx], gy[y0 : y0 + ny, x0 : x0 + nx]
        scale = np.sum(window * model) / np.sum(model * model)
        residual = window - scale * model
        # d(model(r - d))/dd = -grad model
        jac = -scale * np.stack([gx.ravel(), gy.ravel()], axis=1)
        d += np.linalg.lstsq(jac, residual.ravel(), rcond=None)[0]
    return d


def test_movie_local_drift_equals_truth() -> None:
    movie = sim.simulate_movie(
        shape=(256, 256), n_frames=4, dose_per_frame_e_per_A2=60.0, local_drift_px=3.0,
        total_drift_px=2.0, gain_variation=0.0, n_hot_pixels=0, seed=2,
    )  # fmt: skip
    truth = movie.truth
    last = movie.frames[-1].astype(np.float64)
    patch = 48
    local_part = []
    for y0 in (8, 200):
        for x0 in (8, 200):
            ys, xs = np.mgrid[y0 : y0 + patch, x0 : x0 + patch]
            expected = truth.displacement_px(xs, ys)[-1].reshape(-1, 2).mean(axis=0)
            window = last[y0 : y0 + patch, x0 : x0 + patch]
            found = _fit_displacement(window, truth.image.astype(np.float64), y0, x0)
            # 0.3 px: the field varies by up to 1 px across a patch and the counts are noisy
            # (errors of 0.05-0.25 px over seeds); dropping the local part would miss by 1-3 px
            np.testing.assert_allclose(found, expected, atol=0.3)
            local_part.append(np.abs(expected - truth.drift_px[-1]).max())
    assert max(local_part) > 1.0
    # the local part vanishes at frame 0 and reaches local_drift_px at a corner by the end
    corners = truth.local_drift_px(np.array([0.0, 256, 0, 256]), np.array([0.0, 0, 256, 256]))
    np.testing.assert_array_equal(corners[0], 0.0)
    assert np.abs(corners[-1]).max() == pytest.approx(3.0)


def test_movie_dose_is_the_poisson_mean_with_gain_and_hot_pixels() -> None:
    dose, px = 1.2, 0.9
    movie = sim.simulate_movie(
        shape=(160, 160), n_frames=12, pixel_size_A=px, dose_per_frame_e_per_A2=dose,
        image_contrast=0.0, gain_variation=0.1, n_hot_pixels=5, seed=3,
    )  # fmt: skip
    truth = movie.truth
    assert movie.frames.dtype == np.uint8
    good = ~truth.hot_pixels
    counts = movie.frames[:, good].astype(np.float64)
    dose_px = dose * px**2
    corrected = counts * truth.gain[good]
    standard_error = np.sqrt(np.mean(dose_px * truth.gain[good]) / counts.size)
    assert corrected.mean() == pytest.approx(dose_px, abs=4 * float(standard_error))
    # Poisson: per-pixel variance over frames equals the mean rate dose / gain
    rate = dose_px / truth.gain[good]
    ratio = counts.var(axis=0, ddof=1).mean() / rate.mean()
    assert ratio == pytest.approx(1.0, abs=0.05)
    assert movie.frames[:, truth.hot_pixels].mean() > 10 * dose_px
    assert truth.hot_pixels.sum() == 5


def test_movie_is_deterministic_and_written_through_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    movie = sim.simulate_movie(shape=(64, 80), n_frames=5, seed=4)
    # frames come from per-frame generators: one thread or several give the same counts
    monkeypatch.setenv("CRYOKUBE_FFT_WORKERS", "1")
    again = sim.simulate_movie(shape=(64, 80), n_frames=5, seed=4)
    np.testing.assert_array_equal(again.frames, movie.frames)
    np.testing.assert_array_equal(again.truth.drift_px, movie.truth.drift_px)
    sim.save_movie(movie, tmp_path / "movie.tif", gain_path=tmp_path / "gain.mrc")
    np.testing.assert_array_equal(read_movie(tmp_path / "movie.tif"), movie.frames)
    gain, info = read_mrc(tmp_path / "gain.mrc", mmap=False)
    np.testing.assert_array_equal(gain, movie.truth.gain)
    assert info.voxel_size_A[0] == pytest.approx(1.0)
    sim.save_movie(movie, tmp_path / "movie.mrc")
    np.testing.assert_array_equal(read_movie(tmp_path / "movie.mrc"), movie.frames)
    with pytest.raises(ValueError, match="path"):
        sim.save_movie(movie, tmp_path / "movie.png")


def test_bad_input_names_argument(phantom: sim.Phantom) -> None:
    with pytest.raises(ValueError, match="box_size"):
        sim.phantom_volume(8)
    with pytest.raises(ValueError, match="snr"):
        sim.simulate_particles(phantom.volume, 2.5, 4, snr=0.0)
    with pytest.raises(ValueError, match="euler_deg"):
        sim.simulate_particles(phantom.volume, 2.5, 4, euler_deg=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="n_particles"):
        sim.simulate_micrograph(phantom.volume, 2.5, shape=(100, 100), n_particles=50)
    with pytest.raises(ValueError, match="n_frames"):
        sim.simulate_movie(n_frames=1)
    with pytest.raises(ValueError, match="ice_texture"):
        sim.simulate_micrograph(phantom.volume, 2.5, shape=(200, 200), ice_texture=-1.0)


def test_movie_of_a_micrograph_keeps_its_particles_linear(phantom: sim.Phantom) -> None:
    """A clean micrograph's particle cores lie 15-30 SD from its mean: a contrast that would clip
    them at zero intensity is refused (clipped cores read as rings and mislead the pickers),
    and an accepted one keeps the movie's image a contrast change of the micrograph."""
    micrograph = sim.simulate_micrograph(
        phantom.volume, 2.5, shape=(384, 384), n_particles=12, carbon_fraction=0.0,
        keep_clean=True, seed=5,
    )  # fmt: skip
    assert micrograph.clean is not None
    with pytest.raises(ValueError, match="image_contrast is too high"):
        sim.simulate_movie(micrograph.clean, pixel_size_A=2.5, n_frames=2, image_contrast=0.35)
    movie = sim.simulate_movie(
        micrograph.clean, pixel_size_A=2.5, n_frames=2, image_contrast=0.1, seed=1
    )
    r = np.corrcoef(movie.truth.image.ravel(), micrograph.clean.ravel())[0, 1]
    assert r * r >= 0.8


def _empty_corner_spectrum(mic: sim.Micrograph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power of the clean 128-px corner farthest from the micrograph's only particle, its CTF^2,
    and the 30-8 A band."""
    assert mic.clean is not None
    t = mic.truth
    cx, cy = t.centres_px[0]
    y0, x0 = (0 if cy > 192 else 256), (0 if cx > 192 else 256)
    window = mic.clean[y0 : y0 + 128, x0 : x0 + 128]
    ctf = ctf_2d(
        (128, 128), 2.5, defocus_u_A=t.defocus_u_A, defocus_v_A=t.defocus_v_A,
        astig_angle_deg=t.astig_angle_deg, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07,
        b_factor_A2=t.b_factor_A2,
    )  # fmt: skip
    power = np.abs(np.fft.rfft2(window - window.mean())) ** 2
    k_per_A = np.hypot(np.fft.fftfreq(128)[:, None], np.fft.rfftfreq(128)[None, :]) / 2.5
    return power, ctf**2, (k_per_A > 1 / 30) & (k_per_A < 1 / 8)


def test_ice_texture_gives_thon_rings_away_from_particles(phantom: sim.Phantom) -> None:
    """Vitreous ice carries Thon rings where there is no particle: its power follows CTF^2
    (8.8x more at the CTF's maxima than at its zeros here); without it that area is blank."""
    kwargs = {"shape": (384, 384), "n_particles": 1, "carbon_fraction": 0.0, "keep_clean": True}
    power, ctf2, band = _empty_corner_spectrum(
        sim.simulate_micrograph(phantom.volume, 2.5, ice_texture=0.5, seed=5, **kwargs)
    )
    assert power[band & (ctf2 > 0.5)].mean() > 5 * power[band & (ctf2 < 0.02)].mean()
    blank, _, _ = _empty_corner_spectrum(
        sim.simulate_micrograph(phantom.volume, 2.5, seed=5, **kwargs)
    )
    assert power[band].mean() > 100 * blank[band].mean()
