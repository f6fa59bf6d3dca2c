"""Particle extraction: centring, edge drops, background normalisation, crop, phase flip, rows."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing.algorithms.extraction import background_mask, extract_particles
from cryokube.processing.backend import irfft2, rfft2
from cryokube.processing.ctf import ctf_2d
from cryokube.processing.simulate import phantom_volume, simulate_micrograph

CTF = {
    "defocus_u_A": 15000.0,
    "defocus_v_A": 14000.0,
    "astig_angle_deg": 30.0,
    "voltage_kV": 300.0,
    "cs_mm": 2.7,
    "amp_contrast": 0.07,
}


def _dark_blobs(shape: tuple[int, int], centres_yx: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blobs darker than a noisy background of 1 (raw-micrograph contrast)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.ones(shape, dtype=np.float32)
    for cy, cx in centres_yx:
        image -= np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma_px**2)).astype(np.float32)
    noise = np.random.default_rng(0).normal(scale=0.05, size=shape).astype(np.float32)
    return image + noise


def test_particles_are_centred_inverted_and_edge_picks_counted() -> None:
    centres = np.array(
        [[100.0, 100.0], [200.0, 300.0], [250.0, 120.0], [10.0, 200.0], [300.0, 379.0]]
    )
    image = _dark_blobs((320, 400), centres, sigma_px=4.0)
    result = extract_particles(image, centres, pixel_size_A=1.0, box_px=64)
    assert result.n_dropped_edge == 2  # y = 10 and x = 379 leave their 64-px box
    np.testing.assert_array_equal(result.kept_index, [0, 1, 2])
    assert result.particles.shape == (3, 64, 64)
    yy, xx = np.mgrid[:64, :64]
    for particle in result.particles:
        weight = np.clip(particle - np.median(particle), 0, None) * (
            (yy - 32) ** 2 + (xx - 32) ** 2 < 144
        )
        centroid = (np.sum(weight * yy) / weight.sum(), np.sum(weight * xx) / weight.sum())
        # White particle at box // 2 after inversion, to a small fraction of a pixel.
        np.testing.assert_allclose(centroid, (32.0, 32.0), atol=0.25)


@pytest.mark.parametrize(("box", "out_box"), [(128, 128), (128, 64), (96, 48)])
def test_background_ring_has_zero_mean_unit_variance(box: int, out_box: int) -> None:
    phantom = phantom_volume(box_size=64, pixel_size_A=2.0, seed=0)
    micrograph = simulate_micrograph(
        phantom.volume, 2.0, shape=(768, 768), n_particles=20, carbon_fraction=0.0, seed=4, **CTF
    )
    centres = micrograph.truth.centres_px[:, ::-1]
    result = extract_particles(
        micrograph.image, centres, pixel_size_A=2.0, box_px=box, output_box_px=out_box
    )
    assert result.particles.shape[1:] == (out_box, out_box)
    assert result.pixel_size_A == pytest.approx(2.0 * box / out_box)
    assert len(result.kept_index) + result.n_dropped_edge == len(centres)
    ring = background_mask(out_box, 0.75 * out_box / 2)
    values = result.particles[:, ring]
    np.testing.assert_allclose(values.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(values.std(axis=1), 1.0, atol=1e-4)


def test_fourier_crop_keeps_the_particle_size_in_angstrom() -> None:
    centres = np.array([[128.0, 128.0]])
    image = _dark_blobs((256, 256), centres, sigma_px=6.0)
    full = extract_particles(image, centres, pixel_size_A=1.0, box_px=128, normalise=False)
    half = extract_particles(
        image, centres, pixel_size_A=1.0, box_px=128, output_box_px=64, normalise=False
    )

    def fwhm_A(particle: np.ndarray, pixel_A: float) -> float:
        row = particle[particle.shape[0] // 2]
        return float(np.sum(row > row.max() / 2) * pixel_A)

    assert fwhm_A(half.particles[0], 2.0) == pytest.approx(fwhm_A(full.particles[0], 1.0), abs=2.0)


def test_phase_flip_restores_positive_contrast() -> None:
    """A CTF-modulated particle correlates with its clean image only after phase flipping."""
    centres = np.array([[128.0, 128.0]])
    clean = 1.0 - _dark_blobs((256, 256), centres, sigma_px=5.0)  # white blob, no noise term
    ctf = ctf_2d((256, 256), 1.0, **CTF)
    modulated = irfft2(rfft2(-clean) * ctf, (256, 256))  # a raw image: protein dark
    kwargs = {"pixel_size_A": 1.0, "box_px": 128, "normalise": False, "ctf": CTF}
    flipped = extract_particles(modulated, centres, phase_flip=True, **kwargs).particles[0]
    plain = extract_particles(modulated, centres, **kwargs).particles[0]
    target = clean[64:192, 64:192]

    def corr(a: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), target.ravel())[0, 1])

    assert corr(flipped) > 0.5
    assert corr(flipped) > corr(plain) + 0.2


def test_rows_float16_and_per_particle_defocus() -> None:
    centres = np.array([[100.0, 100.0], [200.0, 300.0], [5.0, 5.0]])
    image = _dark_blobs((320, 400), centres, sigma_px=4.0)
    ctf = dict(CTF, defocus_u_A=np.array([15000.0, 16000.0, 17000.0]))
    result = extract_particles(
        image,
        centres,
        pixel_size_A=1.0,
        box_px=64,
        output_box_px=32,
        ctf=ctf,
        phase_flip=True,
        output_float16=True,
        micrograph_path="J3/motioncorrected/mic_001.mrc",
    )
    assert result.particles.dtype == np.float16
    rows = result.rows
    np.testing.assert_allclose(rows["ctf/df1_A"], [15000.0, 16000.0])
    np.testing.assert_allclose(rows["ctf/df2_A"], [14000.0, 14000.0])
    np.testing.assert_allclose(rows["ctf/df_angle_rad"], np.deg2rad(30.0))
    np.testing.assert_allclose(rows["location/center_x_frac"], [100 / 400, 300 / 400])
    np.testing.assert_allclose(rows["location/center_y_frac"], [100 / 320, 200 / 320])
    np.testing.assert_array_equal(rows["blob/shape"], [[32, 32], [32, 32]])
    np.testing.assert_allclose(rows["blob/psize_A"], 2.0)
    assert rows["location/micrograph_path"][0] == b"J3/motioncorrected/mic_001.mrc"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"box_px": 63}, "box_px"),
        ({"output_box_px": 128}, "output_box_px"),
        ({"phase_flip": True}, "ctf"),
        ({"ctf": {"defocus_u_A": 1.0}}, "ctf"),
        ({"background_radius_px": 0.0}, "background_radius_px"),
        ({"pixel_size_A": 0.0}, "pixel_size_A"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"pixel_size_A": 1.0, "box_px": 64}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        extract_particles(np.ones((128, 128)), np.array([[64.0, 64.0]]), **arguments)  # type: ignore[arg-type]


def test_centres_must_be_pairs() -> None:
    with pytest.raises(ValueError, match="centres_px"):
        extract_particles(np.ones((128, 128)), np.ones((3, 3)), pixel_size_A=1.0, box_px=64)
