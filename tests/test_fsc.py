"""FSC, resolution rule, masks and filters against known truth and RELION's postprocess.star."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import starfile
from cryokube.processing.algorithms import fsc as F
from cryokube.processing.backend import rfftn

RELION_POSTPROCESS = "real/starfile-testdata/postprocess.star"


@pytest.fixture(scope="module")
def relion_postprocess(shared_data: Path) -> dict[str, Any]:
    blocks = starfile.read(shared_data / RELION_POSTPROCESS)
    assert isinstance(blocks, dict)
    return blocks


def _white(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 32, 32), (33, 33, 33), (48, 48)])
def test_fsc_of_signal_plus_independent_noise_is_snr_over_one_plus_snr(
    shape: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(0)
    signal = _white(rng, shape)
    half1 = signal + _white(rng, shape)
    half2 = signal + _white(rng, shape)
    curve = F.fsc(half1, half2)
    assert curve.shape == (shape[0] // 2 + 1,)
    assert curve.dtype == np.float32
    # SNR 1 per half map -> FSC 0.5; the mean over shells 4.. is within 0.05, each shell 0.25
    assert float(np.mean(curve[4:])) == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(curve[4:], 0.5, atol=0.25)
    np.testing.assert_allclose(F.fsc(half1, half1), 1.0, atol=1e-5)


def test_batched_frc_matches_one_at_a_time() -> None:
    rng = np.random.default_rng(1)
    a = _white(rng, (3, 24, 24))
    b = a + _white(rng, (3, 24, 24))
    batched = F.fsc(a, b, ndim=2)
    for i in range(3):
        np.testing.assert_allclose(batched[i], F.fsc(a[i], b[i]), atol=1e-5)


def test_fsc_rejects_mismatched_maps() -> None:
    with pytest.raises(ValueError, match="map1 and map2"):
        F.fsc(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="square or cubic"):
        F.fsc(np.zeros((8, 9)), np.zeros((8, 9)))


def test_resolution_rule_reproduces_relion_postprocess(relion_postprocess: dict[str, Any]) -> None:
    curve = relion_postprocess["fsc"]["rlnFourierShellCorrelationCorrected"].to_numpy()
    expected_A = float(relion_postprocess["general"]["rlnFinalResolution"])
    got_A = F.resolution_at_threshold(curve, box_size_px=96, pixel_size_A=7.5)
    assert got_A == pytest.approx(expected_A, abs=1e-4)
    interpolated_A = F.resolution_at_threshold(
        curve, box_size_px=96, pixel_size_A=7.5, interpolate=True
    )
    # linear in frequency between shell 44 (0.160) and 45 (0.136): shell 44.71
    assert 16.0 < interpolated_A < expected_A
    assert interpolated_A == pytest.approx(
        720.0 / (44 + (0.160329 - 0.143) / (0.160329 - 0.135687)), abs=1e-3
    )


def test_resolution_edge_cases() -> None:
    assert F.resolution_at_threshold(np.ones(17), box_size_px=32, pixel_size_A=2.0) == 4.0
    assert (
        F.resolution_at_threshold(np.array([1.0, 0.0, 0.0]), box_size_px=4, pixel_size_A=1.0)
        == np.inf
    )
    with pytest.raises(ValueError, match="pixel_size_A"):
        F.resolution_at_threshold(np.ones(5), box_size_px=8, pixel_size_A=0.0)


def test_phase_randomization_correction_reproduces_relion(
    relion_postprocess: dict[str, Any],
) -> None:
    table = relion_postprocess["fsc"]
    unmasked = table["rlnFourierShellCorrelationUnmaskedMaps"].to_numpy()
    from_shell = int(np.flatnonzero(unmasked[1:] < 0.8)[0]) + 1
    assert 96 * 7.5 / from_shell == pytest.approx(
        relion_postprocess["general"]["rlnRandomiseFrom"], abs=1e-4
    )
    corrected = F.correct_masked_fsc(
        table["rlnFourierShellCorrelationMaskedMaps"].to_numpy(),
        table["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"].to_numpy(),
        randomize_from_shell=from_shell,
    )
    np.testing.assert_allclose(
        corrected, table["rlnFourierShellCorrelationCorrected"].to_numpy(), atol=2e-5
    )


def test_masked_fsc_removes_mask_induced_correlation() -> None:
    n = 32
    rng = np.random.default_rng(2)
    mask = F.soft_spherical_mask((n, n, n), radius_px=6, edge_width_px=2)
    # shared signal only below shell 6 (masked, then low-passed), independent noise everywhere
    signal = F.low_pass(
        _white(rng, (n, n, n)) * mask * 4, resolution_A=n / 6, pixel_size_A=1.0, edge_width_shells=1
    )
    half1 = signal + 0.3 * _white(rng, (n, n, n))
    half2 = signal + 0.3 * _white(rng, (n, n, n))
    result = F.masked_fsc(half1, half2, mask, rng=rng)
    # masking spreads the shared low-resolution signal over about 4 shells (the mask's spectrum),
    # which inflates the masked FSC; from shell 12 on nothing is shared and the correction
    # brings the FSC back to zero
    high = slice(12, n // 2 + 1)
    assert float(np.mean(result.masked[high])) > float(np.mean(result.unmasked[high])) + 0.03
    assert abs(float(np.mean(result.corrected[high]))) < 0.05
    below = slice(0, result.randomize_from_shell + 2)
    np.testing.assert_array_equal(result.corrected[below], result.masked[below])
    assert float(np.min(result.corrected[1:4])) > 0.9
    assert 4 <= result.randomize_from_shell <= 9


def test_phase_randomization_keeps_amplitudes_and_low_shells() -> None:
    rng = np.random.default_rng(3)
    vol = _white(rng, (16, 16, 16))
    rand = F.randomize_phases(vol, from_shell=4, rng=rng)
    spec, spec_rand = rfftn(vol), rfftn(rand)
    low = F.shell_index((16, 16, 16)) < 4
    np.testing.assert_allclose(spec_rand[low], spec[low], atol=1e-4)
    # amplitudes are kept except on self-conjugate planes, where irfftn keeps only the real part
    np.testing.assert_allclose(
        np.abs(spec_rand[:, :, 1:8]), np.abs(spec[:, :, 1:8]), rtol=1e-3, atol=1e-4
    )
    curve = F.fsc(vol, rand)
    assert float(np.max(np.abs(curve[5:]))) < 0.3


def test_sharpen_applies_b_factor_per_shell() -> None:
    n, pixel_size_A, b_factor_A2 = 32, 2.0, 200.0
    rng = np.random.default_rng(4)
    vol = _white(rng, (n, n, n))
    blurred = F.sharpen(vol, b_factor_A2=b_factor_A2, pixel_size_A=pixel_size_A)
    shells = F.shell_index((n, n, n))
    ratio = np.abs(rfftn(blurred)) / np.maximum(np.abs(rfftn(vol)), 1e-6)
    for shell in (4, 8, 12):
        s_per_A = shell / (n * pixel_size_A)
        np.testing.assert_allclose(
            ratio[shells == shell], np.exp(-b_factor_A2 * s_per_A**2 / 4), rtol=1e-3
        )
    restored = F.sharpen(blurred, b_factor_A2=-b_factor_A2, pixel_size_A=pixel_size_A)
    inside = F.low_pass(vol, resolution_A=2 * pixel_size_A * n / (n - 2), pixel_size_A=pixel_size_A)
    np.testing.assert_allclose(
        F.low_pass(
            restored, resolution_A=2 * pixel_size_A * n / (n - 2), pixel_size_A=pixel_size_A
        ),
        inside,
        atol=2e-3,
    )


def test_fsc_weight_and_low_pass_edges() -> None:
    np.testing.assert_allclose(
        F.fsc_weight(np.array([1.0, 1 / 3, 0.0, -0.2])), [1.0, 0.5**0.5, 0.0, 0.0], atol=1e-6
    )
    n = 32
    vol = np.zeros((n, n, n), np.float32)
    vol[n // 2, n // 2, n // 2] = 1.0
    filtered = F.low_pass(vol, resolution_A=4.0, pixel_size_A=1.0, edge_width_shells=2)
    spectrum = np.abs(rfftn(filtered))
    shells = F.shell_index((n, n, n))
    np.testing.assert_allclose(spectrum[shells == 8], 0.5, atol=1e-4)
    np.testing.assert_allclose(spectrum[shells <= 6], 1.0, atol=1e-4)
    np.testing.assert_allclose(spectrum[shells >= 10], 0.0, atol=1e-4)


def test_soft_spherical_mask_profile() -> None:
    mask = F.soft_spherical_mask((33, 33), radius_px=8, edge_width_px=4)
    centre = 16
    assert mask[centre, centre] == 1.0
    assert mask[centre, centre + 8] == 1.0
    assert mask[centre, centre + 10] == pytest.approx(0.5, abs=1e-6)
    assert mask[centre, centre + 12] == 0.0
    with pytest.raises(ValueError, match="radius_px"):
        F.soft_spherical_mask((8, 8), radius_px=0)
