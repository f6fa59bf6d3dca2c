"""CTF estimation against simulator truth and against the real spectra and micrograph."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cryokube.processing.algorithms._ctf_kernels import (
    BACKGROUND_COLUMNS,
    annulus_partial_r2_cpu,
    ring_bin_sums_cpu,
)
from cryokube.processing.algorithms._spectra import centred_power_spectrum
from cryokube.processing.algorithms.ctf_fit import (
    _Annuli,
    _partial_r2_arrays,
    estimate_ctf,
    estimate_ctf_patches,
    fit_ctf_spectrum,
)
from cryokube.processing.io.mrc import read_mrc
from cryokube.processing.simulate import Micrograph, Phantom, phantom_volume, simulate_micrograph

PIXEL_A = 1.5
ASTIGMATISM_TOLERANCE_A = 120.0
"""U - V error allowed on the simulator (A): the largest measured error is 96 A."""


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return phantom_volume(box_size=96, pixel_size_A=PIXEL_A, seed=0)


def _angle_error_deg(a: float, b: float) -> float:
    """Difference of two astigmatism angles, which are defined modulo 180 degrees."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defocus_A", "angle_deg"), [(5000.0, 30.0), (15000.0, 55.0), (25000.0, 80.0), (35000.0, -75.0)]
)
def test_simulated_defocus_within_1_percent_and_angle_within_5_deg(
    phantom: Phantom, defocus_A: float, angle_deg: float
) -> None:
    """0.5-3.5 um with 800 A astigmatism.

    The simulator's Thon rings come from the particles alone (its ice is smooth), so SNR 1
    (of the whole micrograph) is what makes them reach 7-14 A, about as far as on real data.
    """
    micrograph = simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1536, 1536),
        n_particles=150,
        carbon_fraction=0.0,
        snr=1.0,
        defocus_u_A=defocus_A + 400.0,
        defocus_v_A=defocus_A - 400.0,
        astig_angle_deg=angle_deg,
        seed=int(defocus_A) % 7,
    )
    fit = estimate_ctf(
        micrograph.image, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07
    )
    assert fit.defocus_mean_A == pytest.approx(defocus_A, rel=0.01)
    assert fit.astigmatism_A == pytest.approx(800.0, abs=ASTIGMATISM_TOLERANCE_A)
    assert _angle_error_deg(fit.astig_angle_deg, angle_deg) < 5.0
    assert fit.defocus_u_A >= fit.defocus_v_A
    assert fit.fit_resolution_A < 20.0


_NOISE_BIAS = pytest.mark.xfail(
    strict=True,
    reason="issue #4: below 1 um, on micrographs whose only Thon rings are the particles' (no "
    "ice texture), the mean defocus misses by -3.1 to +1.7% (0.5 um) and -1.6 to -1.9% "
    "(0.6-0.7 um): noise leaves the fit to the 30-8 A annuli, whose own best defoci the "
    "particles' form factor moves by several percent; the expected spectrum fits within 0.64%, "
    "and with vitreous ice's rings the same cases are within 0.7%",
)
_HALF_MICRON_CASES = [(0, 2), (0, 4), (2, 0), (3, 0)]
"""(phantom seed, micrograph seed) of the 0.5 um cases that miss by +1.69, +1.72, -2.75, -3.09%."""


def _round_rings(
    defocus_A: float, phantom_seed: int, seed: int, *, ice_texture: float = 0.0
) -> Micrograph:
    phantom = phantom_volume(box_size=96, pixel_size_A=PIXEL_A, seed=phantom_seed)
    return simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1536, 1536),
        n_particles=150,
        carbon_fraction=0.0,
        snr=1.0,
        defocus_u_A=defocus_A,
        defocus_v_A=defocus_A,
        astig_angle_deg=30.0,
        ice_texture=ice_texture,
        keep_clean=True,
        seed=seed,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defocus_A", "phantom_seed", "seed"),
    [*((5000.0, *case) for case in _HALF_MICRON_CASES), (6000.0, 2, 1), (7000.0, 4, 3)],
)
def test_below_1_um_within_1_percent_with_vitreous_ice(
    defocus_A: float, phantom_seed: int, seed: int
) -> None:
    """The cases of the strict xfails below, with vitreous ice under the CTF as in real
    exposures (``ice_texture`` 0.5): its rings, which no form factor modulates, carry the fit.
    Measured -0.25 to -0.66% at 0.5-0.8 um on phantoms 0-4, micrograph seeds 0-1."""
    micrograph = _round_rings(defocus_A, phantom_seed, seed, ice_texture=0.5)
    fit = estimate_ctf(
        micrograph.image, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07
    )
    assert fit.defocus_mean_A == pytest.approx(defocus_A, rel=0.01)
    assert fit.astigmatism_A < 200.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defocus_A", "phantom_seed", "seed"),
    [
        (10000.0, 0, 0),
        (10000.0, 0, 1),
        (20000.0, 0, 2),
        (35000.0, 0, 3),
        *(pytest.param(5000.0, *case, marks=_NOISE_BIAS) for case in _HALF_MICRON_CASES),
        pytest.param(6000.0, 2, 1, marks=_NOISE_BIAS),
        pytest.param(7000.0, 4, 3, marks=_NOISE_BIAS),
    ],
)
def test_simulated_mean_defocus_within_1_percent_without_astigmatism(
    defocus_A: float, phantom_seed: int, seed: int
) -> None:
    """1-3.5 um with round rings, and the open cases below 1 um of issue #4 (strict xfails).

    Measured: 1 um -0.69 to -0.79% (phantom 0, micrograph seeds 0-4), 2 um -0.2%. At 0.5 um:
    +0.86 to +1.72% on phantom 0 (seeds 0-4), -0.48, -2.3 to -3.1, -2.7 to -3.1 and -1.64% on
    phantoms 1-4 (seeds 0-4 on phantoms 2 and 3); at 0.6-0.8 um -0.05 to -1.9% (phantoms 0-6).
    The expected spectrum fits within 0.64%
    (:func:`test_expected_spectrum_at_half_micron_within_1_percent`; +0.05 to -0.82% on
    phantoms 0-4), where the 8-5 A annuli, whose best defoci are within 0.4%, lead the score.
    With noise their partial R^2 falls from 0.4-0.7 to 0.0-0.15 and the 30-8 A annuli lead,
    whose own best defoci are several percent off (14-10 A at +6% or more, 10-8 A at -3 to -6%
    at 0.5 um; 14-10 A at -1.5 to -2.3% at 1 um): there the particles' form factor and the
    envelope change several-fold within one ring period, beyond the annulus's linear ring
    amplitude. Spectra ``noise^2 + S(k) env CTF^2`` with gamma noise reproduce the errors: with
    each phantom's rotationally averaged ``S`` +1.0 to +1.8% (phantom 0), -2.1 to -2.3% (2)
    and -2.5 to -3.0% (3); with a log-quadratic ``S`` -2.1% on all three (+0.2% without
    noise). More tiles (a 4096^2 micrograph, or 256-px tiles) raise the 8-5 A annuli's
    partial R^2 and bring phantoms 2 and 3 to -0.9 and -1.4 to -1.7%.
    """
    micrograph = _round_rings(defocus_A, phantom_seed, seed)
    fit = estimate_ctf(
        micrograph.image, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07
    )
    assert fit.defocus_mean_A == pytest.approx(defocus_A, rel=0.01)
    assert fit.astigmatism_A < 200.0


@pytest.mark.slow
@pytest.mark.parametrize(("phantom_seed", "seed"), _HALF_MICRON_CASES)
def test_expected_spectrum_at_half_micron_within_1_percent(phantom_seed: int, seed: int) -> None:
    """The 0.5 um cases that miss with noise fit within 1% on their expected spectrum: the
    noise-free micrograph's spectrum plus the white noise's power ``noise_sigma^2``.

    Measured: +0.05, -0.11, -0.64, -0.43% against +1.69, +1.72, -2.75, -3.09% with the noise.
    """
    micrograph = _round_rings(5000.0, phantom_seed, seed)
    assert micrograph.clean is not None
    spectrum = centred_power_spectrum(micrograph.clean, box_px=512)
    spectrum += np.float32(micrograph.truth.noise_sigma**2)
    fit = fit_ctf_spectrum(
        spectrum, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07
    )
    assert fit.defocus_mean_A == pytest.approx(5000.0, rel=0.01)
    assert fit.astigmatism_A < 200.0


def _anisotropic_noise(shape: tuple[int, int], *, alpha: float, angle_deg: float) -> np.ndarray:
    """White noise of unit variance whose power goes as ``1 + alpha cos 2(theta - angle)``."""
    noise = np.random.default_rng(1).standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    gain = np.sqrt(1.0 + alpha * np.cos(2.0 * (np.arctan2(ky, kx) - np.radians(angle_deg))))
    filtered = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=shape)
    return filtered / filtered.std()


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("defocus_A", [10000.0, 20000.0])
def test_zero_astigmatism_stays_under_150_A_with_an_anisotropic_background(
    phantom: Phantom, defocus_A: float, alpha: float
) -> None:
    """No astigmatism, with extra noise (as much as the image) whose power has a +-alpha
    cos 2theta term: real spectra have such backgrounds (1-2% on the eBIC Krios micrograph).

    Measured: 24-59 A without and 84-99 A with the anisotropic noise; a radially symmetric
    background (the fit before the angular background terms) reported 652-759 A at alpha 0.3.
    """
    micrograph = simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1536, 1536),
        n_particles=150,
        carbon_fraction=0.0,
        snr=1.0,
        defocus_u_A=defocus_A,
        defocus_v_A=defocus_A,
        astig_angle_deg=0.0,
        seed=3,
    )
    image = micrograph.image
    if alpha:
        noise = _anisotropic_noise(image.shape, alpha=alpha, angle_deg=40.0)
        image = image + (float(image.std()) * noise).astype(np.float32)
    fit = estimate_ctf(image, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07)
    assert fit.defocus_mean_A == pytest.approx(defocus_A, rel=0.01)
    assert fit.astigmatism_A < 150.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defocus_A", "astigmatism_A", "angle_deg"),
    [
        (10000.0, 300.0, -20.0),
        (10000.0, 800.0, 45.0),
        (25000.0, 300.0, 80.0),
        (25000.0, 800.0, -70.0),
    ],
)
def test_simulated_astigmatism_300_and_800_A_at_several_angles(
    phantom: Phantom, defocus_A: float, astigmatism_A: float, angle_deg: float
) -> None:
    """U - V within ``ASTIGMATISM_TOLERANCE_A`` and the angle within 5 deg.

    Over 300 and 800 A at -70, -20, 15, 45 and 80 deg and 1 and 2.5 um, the measured errors
    are at most 3.2 deg and 96 A (about the same before the angular background terms and with a
    1000x tighter optimiser tolerance: the limit is the simulated spectrum, not the search).
    """
    micrograph = simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1536, 1536),
        n_particles=150,
        carbon_fraction=0.0,
        snr=1.0,
        defocus_u_A=defocus_A + astigmatism_A / 2,
        defocus_v_A=defocus_A - astigmatism_A / 2,
        astig_angle_deg=angle_deg,
        seed=int(defocus_A) % 7,
    )
    fit = estimate_ctf(
        micrograph.image, pixel_size_A=PIXEL_A, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07
    )
    assert fit.defocus_mean_A == pytest.approx(defocus_A, rel=0.01)
    assert fit.astigmatism_A == pytest.approx(astigmatism_A, abs=ASTIGMATISM_TOLERANCE_A)
    assert _angle_error_deg(fit.astig_angle_deg, angle_deg) < 5.0


def _reference_defocus(shared_data: Path) -> dict[str, dict[str, float]]:
    table = shared_data / "real" / "relion30-betagal-sppractice" / "defocus_reference.tsv"
    lines = [line for line in table.read_text().splitlines() if not line.startswith("#")]
    return {
        row["micrograph"]: {key: float(row[key]) for key in row if key.endswith(("_A", "_fom"))}
        for row in csv.DictReader(lines, delimiter="\t")
    }


@pytest.mark.parametrize("micrograph", ["20170629_00021", "20170629_00024", "20170629_00026"])
def test_real_power_spectra_match_thon_ring_reference(shared_data: Path, micrograph: str) -> None:
    """RELION's own spectra of the beta-gal tutorial (200 kV, Cs 1.4 mm, 1.39955 A/px).

    Truth: the README's independent Thon-ring fit, +-5%; the CTFFIND run in
    ``ctffind_job005_BAD`` found 3-4x too large a defocus and must not be reproduced.
    """
    reference = _reference_defocus(shared_data)[micrograph]
    path = (
        shared_data
        / "real"
        / "relion30-betagal-sppractice"
        / "ps"
        / f"{micrograph}_frameImage_PS.mrc"
    )
    spectrum, info = read_mrc(path)
    assert info.pixel_size_A == pytest.approx(1.39955, rel=1e-4)
    fit = fit_ctf_spectrum(
        np.asarray(spectrum, dtype=np.float32).squeeze(),
        pixel_size_A=1.39955,
        voltage_kV=200.0,
        cs_mm=1.4,
        amp_contrast=0.1,
        spectrum_kind="amplitude",
        defocus_range_A=(5000.0, 50000.0),
    )
    assert fit.defocus_mean_A == pytest.approx(reference["thon_ring_fit_defocus_A"], rel=0.05)
    bad = 0.5 * (reference["ctffind_job005_defocusU_A"] + reference["ctffind_job005_defocusV_A"])
    assert abs(fit.defocus_mean_A - bad) > 0.5 * bad
    # Diamond's pipeline test expects about 247 A of astigmatism on these movies.
    assert fit.astigmatism_A < 600.0


def test_real_micrograph_defocus_within_3_percent(shared_data: Path) -> None:
    """The eBIC Krios micrograph crop: 1.05 um +- 3%, astigmatism under 450 A.

    The README's "astigmatism under about 100 A" comes from ASPIRE 0.14.3, which cannot see
    such astigmatism: on simulated micrographs of this size, pixel and defocus with 600 A at
    -55 deg it reports 217 A (SNR 1) and 9 A (SNR 0.1). Our fit measures 336 A at -60 deg
    (box 512; 262-406 A with boxes of 256 and 1024; halves of the crop 148-451 A).
    Measurements that do not use the fitter give a few hundred A at most: ring radii per
    15-45 degree sector give 100-350 A (each with about 200 A of noise at this SNR), and the
    3.7 A ice ring is round within 0.3 +- 0.9% (the 2.9% anisotropic magnification that 600 A
    would need is 3 sigma off). The fit reported 627 A at -55 deg before its background had
    angular terms (``docs/benchmarks.md``, CTF).
    """
    path = shared_data / "real" / "mrcfile-testdata" / "fei-extended_center2048.mrc.bz2"
    data, _ = read_mrc(path)
    fit = estimate_ctf(
        np.asarray(data, dtype=np.float32).squeeze(),
        pixel_size_A=0.8537755,
        voltage_kV=300.0,
        cs_mm=2.7,
        amp_contrast=0.1,
    )
    assert fit.defocus_mean_A == pytest.approx(10500.0, rel=0.03)
    assert fit.astigmatism_A < 450.0


def test_patch_mode_finds_a_flat_specimen(phantom: Phantom) -> None:
    micrograph = simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1024, 1024),
        n_particles=70,
        carbon_fraction=0.0,
        snr=1.0,
        defocus_u_A=15300.0,
        defocus_v_A=14700.0,
        astig_angle_deg=10.0,
        seed=11,
    )
    result = estimate_ctf_patches(
        micrograph.image,
        pixel_size_A=PIXEL_A,
        voltage_kV=300.0,
        cs_mm=2.7,
        amp_contrast=0.07,
        grid=(2, 2),
        box_px=256,
    )
    assert len(result.patches) == 4
    assert result.centres_px.shape == (4, 2)
    for fit in result.patches:
        assert fit.defocus_mean_A == pytest.approx(15000.0, rel=0.03)
    assert result.plane_A[0] == pytest.approx(15000.0, rel=0.02)
    # Flat specimen: the plane changes the defocus by less than 2% across the half-field
    # (the patches' own precision is about 1% here, far from a tilt measurement).
    assert np.hypot(result.plane_A[1], result.plane_A[2]) * 512.0 < 0.02 * 15000.0
    assert 0.0 <= result.tilt_deg < 90.0
    assert result.defocus_at(512.0, 512.0, (1024, 1024)) == pytest.approx(result.plane_A[0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resolution_band_A": (5.0, 30.0)}, "resolution_band_A"),
        ({"resolution_band_A": (30.0, 1.0)}, "resolution_band_A"),
        ({"defocus_range_A": (0.0, 1000.0)}, "defocus_range_A"),
        ({"amp_contrast": 1.5}, "amp_contrast"),
        ({"spectrum_kind": "phase"}, "spectrum_kind"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"pixel_size_A": 1.0, "voltage_kV": 300.0, "cs_mm": 2.7}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        fit_ctf_spectrum(np.ones((64, 64), dtype=np.float32), **arguments)  # type: ignore[arg-type]


def test_non_square_spectrum_is_rejected() -> None:
    with pytest.raises(ValueError, match="spectrum"):
        fit_ctf_spectrum(np.ones((64, 32)), pixel_size_A=1.0, voltage_kV=300.0, cs_mm=2.7)


def test_annulus_regression_kernel_matches_the_array_code() -> None:
    """The compiled per-bin regression (CPU) gives the array code's signed partial R^2 (CuPy's
    path) for every bin: wide and narrow annuli, empty ones at the edges, rings in phase and in
    anti-phase with the data."""
    rng = np.random.default_rng(11)
    n_bins, n_points = 512, 20_000
    n = BACKGROUND_COLUMNS + 2
    bins = np.sort(rng.integers(0, n_bins, n_points))
    k2 = bins / n_bins
    theta = rng.uniform(0, np.pi, n_points)
    ring = np.cos(40 * k2) ** 2
    columns = [np.ones(n_points), k2 - 0.5, np.cos(2 * theta), np.sin(2 * theta), ring]
    columns.append(columns[1] * ring)
    sign = np.where(k2 < 0.5, 1.0, -1.0)  # anti-phase rings in the outer half
    data = 2 + k2 + 0.3 * sign * ring + 0.1 * rng.standard_normal(n_points)

    def prefix_of(weights: np.ndarray) -> np.ndarray:
        per_bin = np.bincount(bins, weights=weights, minlength=n_bins)
        return np.concatenate([[0.0], np.cumsum(per_bin)])

    prefix: dict[tuple[object, object], np.ndarray] = {
        (i, j): prefix_of(columns[i] * columns[j]) for i in range(n) for j in range(i, n)
    }
    prefix.update({(i, "d"): prefix_of(columns[i] * data) for i in range(n)})
    prefix["d", "d"] = prefix_of(data * data)
    centre = np.arange(n_bins)
    half_width = rng.integers(2, 40, n_bins)
    lo = np.clip(centre - half_width, 0, n_bins).astype(np.int64)
    hi = np.clip(centre + half_width + 1, 0, n_bins).astype(np.int64)
    lo[-3:] = hi[-3:] = n_bins  # empty annuli
    centred_k2 = (centre + 0.5) / n_bins - 0.5
    compiled = annulus_partial_r2_cpu(prefix, lo, hi, centred_k2)
    arrays = _partial_r2_arrays(prefix, _Annuli(lo, hi), centred_k2, BACKGROUND_COLUMNS)
    np.testing.assert_allclose(compiled, arrays, rtol=1e-7, atol=1e-12)
    assert np.all(compiled[-3:] == 0)
    assert (compiled[: n_bins // 3] > 0.1).mean() > 0.6  # rings explain the inner annuli
    assert (compiled[n_bins // 2 + 50 : -3] < -0.1).mean() > 0.6  # anti-phase counts against


def test_ring_bin_sums_kernel_equals_bincount() -> None:
    """The one-pass per-bin sums of the ring regressors' products are numpy's ``bincount`` of
    each product to the bit, points outside the band (bin ``n_bins``) left out."""
    rng = np.random.default_rng(12)
    n_bins, n_points = 300, 10_000
    band_bins = rng.integers(0, n_bins + 1, n_points)  # about 1 in 300 outside the band
    x = rng.uniform(-0.5, 0.5, n_points)
    theta = rng.uniform(0, np.pi, n_points)
    background = [np.ones(n_points), x, np.cos(2 * theta), np.sin(2 * theta)]
    m = rng.uniform(0, 1, n_points)
    d = rng.uniform(0, 3, n_points)
    rows = ring_bin_sums_cpu(band_bins, background, m, d, n_bins)
    columns = [*background, m, x * m]
    products = [columns[i] * columns[j] for j in (4, 5) for i in range(j + 1)]
    products += [m * d, x * m * d]
    assert rows.shape == (len(products), n_bins)
    for row, product in zip(rows, products, strict=True):
        expected = np.bincount(band_bins, weights=product, minlength=n_bins + 1)[:n_bins]
        np.testing.assert_array_equal(row, expected)
