"""Particle picking against the simulator's known particle centres."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing.algorithms.picking import (
    Picks,
    _local_maxima,
    _working_shape,
    filter_picks,
    pick_blobs,
    pick_templates,
    templates_from_volume,
)
from cryokube.processing.geometry import euler_to_matrix
from cryokube.processing.simulate import (
    Micrograph,
    Phantom,
    phantom_volume,
    random_euler_angles,
    simulate_micrograph,
)
from scipy import ndimage
from scipy.spatial import cKDTree

PIXEL_A = 2.0
DIAMETER_A = 76.8  # the phantom's envelope: 2 x 0.3 x box (64 px) x 2 A
CTF = {
    "defocus_u_A": 15000.0,
    "defocus_v_A": 14000.0,
    "astig_angle_deg": 30.0,
    "voltage_kV": 300.0,
    "cs_mm": 2.7,
    "amp_contrast": 0.07,
}


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return phantom_volume(box_size=64, pixel_size_A=PIXEL_A, seed=0)


@pytest.fixture(scope="module")
def micrograph(phantom: Phantom) -> Micrograph:
    """60 particles at the simulator's default SNR (0.05) next to a carbon edge (20%)."""
    return simulate_micrograph(
        phantom.volume,
        PIXEL_A,
        shape=(1024, 1024),
        n_particles=60,
        snr=0.05,
        carbon_fraction=0.2,
        seed=1,
        **CTF,
    )


def _precision_recall(picks: Picks, micrograph: Micrograph) -> tuple[float, float]:
    """Matching within 0.2 x diameter; each true particle is matched at most once."""
    truth_yx = micrograph.truth.centres_px[:, ::-1]
    if len(picks) == 0:
        return 0.0, 0.0
    distance, nearest = cKDTree(truth_yx).query(picks.centres_px)
    matched = set(nearest[distance < 0.2 * DIAMETER_A / PIXEL_A].tolist())
    return len(matched) / len(picks), len(matched) / len(truth_yx)


def test_blob_picker_precision_and_recall(micrograph: Micrograph) -> None:
    picks = pick_blobs(micrograph.image, pixel_size_A=PIXEL_A, diameter_range_A=(50.0, 80.0))
    precision, recall = _precision_recall(picks, micrograph)
    assert precision >= 0.9
    assert recall >= 0.9
    # Best first, and no two picks closer than the minimum separation (the smallest diameter).
    assert np.all(np.diff(picks.scores) <= 0)
    distances, _ = cKDTree(picks.centres_px).query(picks.centres_px, k=2)
    assert distances[:, 1].min() * PIXEL_A >= 50.0 - 2 * 10.0  # within one working pixel
    assert np.all((picks.diameters_A >= 50.0) & (picks.diameters_A <= 80.0))


@pytest.mark.parametrize(("y_px", "x_px"), [(40.3, 60.0), (41.0, 59.6), (39.55, 60.45)])
def test_blob_picks_are_placed_between_the_working_pixels(y_px: float, x_px: float) -> None:
    """A blob between the picker's pixels (lowpass_A / 2 = 10 A, 5 px here) is placed within
    1 px (2 A) of its centre, not snapped to the working grid."""
    yy, xx = np.mgrid[:512, :512].astype(np.float32)
    centre = np.array([y_px, x_px]) * 5.0
    blob = -np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 8.0**2))
    picks = pick_blobs(blob, pixel_size_A=PIXEL_A, diameter_range_A=(40.0, 60.0), min_score=3)
    error_px = np.linalg.norm(picks.centres_px[0] - centre)
    assert error_px < 1.0, (picks.centres_px[0], centre)


def test_template_picker_with_ctf_and_inspection_thresholds(
    phantom: Phantom, micrograph: Micrograph
) -> None:
    templates = templates_from_volume(
        phantom.volume, euler_to_matrix(random_euler_angles(8, seed=3))
    )
    picks = pick_templates(
        micrograph.image,
        templates,
        pixel_size_A=PIXEL_A,
        diameter_A=80.0,
        angle_step_deg=20.0,
        ctf=CTF,
    )
    _, recall = _precision_recall(picks, micrograph)
    assert recall >= 0.9
    # Tightening the score threshold afterwards removes the false picks, without re-picking.
    tightened = filter_picks(picks, min_score=0.72)
    precision, recall = _precision_recall(tightened, micrograph)
    assert precision >= 0.9
    assert recall >= 0.9
    assert np.all((tightened.template_index >= 0) & (tightened.template_index < 8))


def test_local_power_separates_particles_from_empty_ice(micrograph: Micrograph) -> None:
    picks = pick_blobs(
        micrograph.image, pixel_size_A=PIXEL_A, diameter_range_A=(50.0, 80.0), min_score=3.0
    )
    strict = filter_picks(picks, local_power_range=(2.0, np.inf))
    loose_precision, _ = _precision_recall(picks, micrograph)
    strict_precision, strict_recall = _precision_recall(strict, micrograph)
    assert strict_precision > loose_precision
    assert strict_recall >= 0.9
    assert len(filter_picks(picks, max_picks=5)) == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pixel_size_A": -1.0}, "pixel_size_A"),
        ({"lowpass_A": 1.0}, "lowpass_A"),
        ({"diameter_range_A": (80.0, 50.0)}, "diameter_range_A"),
        ({"n_scales": 0}, "n_scales"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"pixel_size_A": 2.0, "diameter_range_A": (50.0, 80.0)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        pick_blobs(np.zeros((64, 64), dtype=np.float32), **arguments)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_gpu_matches_cpu(micrograph: Micrograph) -> None:
    """The same picks on CuPy arrays (skipped without a GPU)."""
    from cryokube.processing.backend import gpu_available, to_device, to_host

    if not gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    kwargs = {"pixel_size_A": PIXEL_A, "diameter_range_A": (50.0, 80.0)}
    cpu = pick_blobs(micrograph.image, **kwargs)  # type: ignore[arg-type]
    gpu = pick_blobs(to_device(micrograph.image, "gpu"), **kwargs)  # type: ignore[arg-type]
    np.testing.assert_allclose(to_host(gpu.centres_px), cpu.centres_px)


@pytest.mark.parametrize("radius_px", [0.5, 1.0, 2.3, 6.7])
def test_local_maxima_are_those_of_a_disc_maximum_filter(radius_px: float) -> None:
    """Non-maximum suppression keeps exactly the pixels that a maximum filter over the disc
    (outside the image below everything) keeps, ties and borders included, best first."""
    rng = np.random.default_rng(int(radius_px * 10))
    for trial in range(20):
        shape = tuple(int(n) for n in rng.integers(8, 90, 2))
        score = ndimage.gaussian_filter(rng.normal(size=shape), rng.uniform(0, 3))
        if trial % 4 == 0:
            score = np.round(score * 3) / 3  # plateaus: equal neighbours are both maxima
        border, min_score = int(rng.integers(0, 4)), float(rng.choice([-np.inf, 0.0]))
        r = max(1, int(radius_px))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        footprint = yy**2 + xx**2 <= radius_px**2
        filtered = ndimage.maximum_filter(score, footprint=footprint, mode="constant", cval=-np.inf)
        peak = (score == filtered) & (score >= min_score)
        inner = np.zeros(shape, dtype=bool)
        inner[border : shape[0] - border, border : shape[1] - border] = True
        expected = np.flatnonzero(peak & inner)
        expected = expected[np.argsort(-score.ravel()[expected], kind="stable")]
        found = _local_maxima(
            score, radius_px=radius_px, border_px=border, min_score=min_score, max_picks=10**6
        )
        np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize(
    ("shape", "factor", "expected"),
    [
        ((2048, 2048), 5.0, (432, 432)),  # not 410 = 2 x 5 x 41
        ((4096, 4096), 5.0, (864, 864)),
        ((1024, 1024), 1.0, (1024, 1024)),  # no crop
        ((4096, 3072), 5.0, (864, 648)),  # not 819 x 614
        ((4092, 5760), 1.13, (3621, 5097)),  # no 5-smooth pair within 10%: rounded
        ((4092, 5760), 5.0, (818, 1152)),  # the same
    ],
)
def test_working_shape_is_fast_and_keeps_the_scale(
    shape: tuple[int, int], factor: float, expected: tuple[int, int]
) -> None:
    """The picker's cropped sides are at least the rounded ones and at most 10% longer, on one
    scale for both axes to within a pixel, and transform fast where such sides exist."""
    got = _working_shape(*shape, factor)
    assert got == expected
    rounded = [round(n / factor) for n in shape]
    assert all(r <= m <= min(1.1 * r, n) for r, m, n in zip(rounded, got, shape, strict=True))
    assert abs(got[1] - shape[1] * got[0] / shape[0]) <= 1
