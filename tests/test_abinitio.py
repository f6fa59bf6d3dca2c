"""Ab-initio reconstruction followed by refinement, from simulated particles with unknown poses."""

from __future__ import annotations

import numpy as np
import pytest
from cryokube.processing.algorithms.abinitio import ab_initio, mirror_volume
from cryokube.processing.algorithms.fsc import fsc, resolution_at_threshold, soft_spherical_mask
from cryokube.processing.algorithms.refine import back_project_halves, refine_3d
from cryokube.processing.simulate import phantom_volume, simulate_particles
from test_refine import truth_ctf

MIRROR = np.diag([1.0, 1.0, -1.0])


def pose_spread_deg(reference: np.ndarray, refined: np.ndarray) -> float:
    """Median angle (deg) between ``reference.T @ refined`` and its mean rotation.

    A map related to the truth by a rotation ``Q`` has poses ``A_truth @ Q``, so the relative
    rotations agree up to the pose errors; for the mirrored map they agree with
    ``MIRROR @ A_truth @ MIRROR`` instead, and spread widely otherwise.
    """
    relative = np.einsum("nji,njk->nik", reference, refined)
    u, _, vt = np.linalg.svd(relative.mean(axis=0))
    mean = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    trace = np.einsum("nij,ij->n", relative, mean)
    return float(np.median(np.degrees(np.arccos(np.clip((trace - 1) / 2, -1, 1)))))


@pytest.mark.parametrize("n", [16, 17])
def test_mirror_volume_is_an_involution_about_the_centre(n: int) -> None:
    vol = np.random.default_rng(0).standard_normal((n, n, n)).astype(np.float32)
    mirrored = mirror_volume(vol)
    np.testing.assert_array_equal(mirror_volume(mirrored), vol)
    np.testing.assert_array_equal(mirrored[n // 2], vol[n // 2])
    np.testing.assert_array_equal(mirrored[n // 2 + 1], vol[n // 2 - 1])


def test_ab_initio_rejects_bad_input() -> None:
    images = np.zeros((4, 16, 16), np.float32)
    with pytest.raises(ValueError, match="final_resolution_A"):
        ab_initio(images, pixel_size_A=2.0, final_resolution_A=3.0)
    with pytest.raises(ValueError, match="learning_rate"):
        ab_initio(images, pixel_size_A=1.0, learning_rate=0.0)
    with pytest.raises(ValueError, match="ctf"):
        ab_initio(images, pixel_size_A=1.0, ctf=np.ones((4, 16, 16)))


@pytest.mark.slow
def test_ab_initio_then_refinement_recovers_the_volume() -> None:
    """Issue 5 done-when, scaled to CI: unknown poses, gold-standard resolution within 1.5x.

    1000 particles (box 64, 2 A/px, SNR 0.1, CTF 0.8-2 um) instead of 10,000, to fit the
    test budget on 2 cores (20 deg grid, 20 ab-initio and 5 refinement iterations); the
    hand of the result is reported, not chosen. A run with a 15 deg grid, 30 ab-initio and 6 refinement iterations reached 8.5 A against 7.1 A from
    the true poses (1.2x), in the truth's hand (pose spread 23 deg against 67 deg for the
    mirror). At 800 particles in a 48 px box the poses came out unrelated to the truth while
    the half maps still agreed to within 1.5x: the gold-standard criterion alone does not
    prove success, hence the pose check.
    """
    n, pixel_size_A = 64, 2.0
    vol = phantom_volume(n, pixel_size_A, seed=1).volume
    stack = simulate_particles(
        vol, pixel_size_A, 1000, snr=0.1, seed=2, defocus_range_A=(8000.0, 20000.0)
    )
    ctf = truth_ctf(stack, n)
    truth_poses = stack.truth.rotations
    initial = ab_initio(
        stack.images,
        pixel_size_A=pixel_size_A,
        ctf=ctf,
        n_iterations=20,
        batch_size=100,
        angle_step_deg=20.0,
    )
    assert initial.resolution_schedule_A[0] == pytest.approx(35.0)
    assert initial.resolution_schedule_A[-1] == pytest.approx(12.0)
    result = refine_3d(
        stack.images,
        initial.volume,
        pixel_size_A=pixel_size_A,
        ctf=ctf,
        n_iterations=5,
        initial_resolution_A=20.0,
    )

    known = back_project_halves(
        stack.images,
        truth_poses.astype(np.float32),
        stack.truth.shifts_px[:, ::-1].astype(np.float32),
        result.halves,
        ctf=ctf,
    )
    mask = soft_spherical_mask((n, n, n), radius_px=0.4 * n)
    known_A = resolution_at_threshold(
        fsc(known[0] * mask, known[1] * mask), box_size_px=n, pixel_size_A=pixel_size_A
    )
    assert result.resolution_A <= 1.5 * known_A

    refined = result.rotations.astype(np.float64)
    same_hand_deg = pose_spread_deg(truth_poses, refined)
    other_hand_deg = pose_spread_deg(MIRROR @ truth_poses @ MIRROR, refined)
    # the hand is reported, not chosen: one hand explains the poses by a single rotation far
    # better than the other (box 64 run: 23 deg against 67 deg, the truth's hand)
    assert min(same_hand_deg, other_hand_deg) < 0.7 * max(same_hand_deg, other_hand_deg)
