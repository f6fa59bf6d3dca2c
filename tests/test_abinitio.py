"""Ab-initio reconstruction followed by refinement, from simulated particles with unknown poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryokube.processing.algorithms.abinitio import (
    ab_initio,
    choose_hand,
    compare_hands,
    mirror_volume,
)
from cryokube.processing.algorithms.fsc import fsc, resolution_at_threshold, soft_spherical_mask
from cryokube.processing.algorithms.refine import back_project_halves, refine_3d
from cryokube.processing.algorithms.symmetry import axis_rotation
from cryokube.processing.datasets import Dataset, load_cs, save_cs
from cryokube.processing.io.mrc import read_mrc, write_mrc
from cryokube.processing.simulate import ParticleStack, phantom_volume, simulate_particles
from scipy import ndimage
from test_jobs_reconstruction import assert_rejected, run_ok, write_stacks
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
    with pytest.raises(ValueError, match="n_classes"):
        ab_initio(images, pixel_size_A=1.0, n_classes=5)
    with pytest.raises(ValueError, match="class_similarity"):
        ab_initio(images, pixel_size_A=1.0, class_similarity=1.0)
    with pytest.raises(ValueError, match="cubes of one shape"):
        compare_hands(np.zeros((8, 8, 8)), np.zeros((9, 9, 9)), pixel_size_A=1.0)
    with pytest.raises(ValueError, match="cubes of one shape"):
        choose_hand(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), pixel_size_A=1.0)


@pytest.mark.parametrize("mirrored", [False, True])
def test_compare_hands_finds_the_hand_and_superposes_the_map(mirrored: bool) -> None:
    """A phantom turned by 50 deg and moved by (2, -1, 3) px, or its mirror image, is put back.

    Box 32 at 4 A/px: the aligned map matches the truth to Nyquist (FSC 0.5 at 8 A), while the
    best fit of the other hand correlates 0.955 against 0.989 (the phantom is nearly achiral at
    low resolution; at box 64 and 2 A/px, 0.83 against 0.98).
    """
    n, pixel_size_A = 32, 4.0
    truth = np.asarray(phantom_volume(n, pixel_size_A, seed=1).volume, np.float32)
    turn = axis_rotation((1, 2, 3), 50.0)
    centre = np.full(3, n // 2)
    turned = ndimage.affine_transform(truth, turn, offset=centre - turn @ centre, order=3)
    moved = np.roll(turned, (2, -1, 3), axis=(0, 1, 2))
    volume = mirror_volume(moved) if mirrored else moved
    hands = compare_hands(volume, truth, pixel_size_A=pixel_size_A)
    assert hands.mirrored is mirrored
    # the decision alone (what the ab_initio job needs) is the same, without the full-size fit
    choice = choose_hand(volume, truth, pixel_size_A=pixel_size_A)
    assert (choice.mirrored, choice.correlation, choice.mirror_correlation) == (
        hands.mirrored,
        hands.correlation,
        hands.mirror_correlation,
    )
    right, wrong = sorted([hands.correlation, hands.mirror_correlation], reverse=True)
    assert right > 0.95
    assert wrong < right - 0.02
    curve = fsc(hands.aligned, truth)
    assert resolution_at_threshold(
        curve, box_size_px=n, pixel_size_A=pixel_size_A, threshold=0.5
    ) == pytest.approx(2 * pixel_size_A)


def two_volume_particles(
    n: int, pixel_size_A: float, per_class: int
) -> tuple[list[np.ndarray], list[ParticleStack]]:
    """Two phantoms and ``per_class`` particles of each (SNR 0.3, CTF 0.8-2 um), in order."""
    volumes = [
        np.asarray(phantom_volume(n, pixel_size_A, seed=seed).volume, np.float32) for seed in (1, 2)
    ]
    stacks = [
        simulate_particles(
            volume, pixel_size_A, per_class, snr=0.3, seed=11 + k, defocus_range_A=(8e3, 2e4)
        )
        for k, volume in enumerate(volumes)
    ]
    return volumes, stacks


@pytest.mark.slow
def test_ab_initio_separates_two_volumes() -> None:
    """K = 2 on 150 particles of each of two phantoms (box 32, 4 A/px, SNR 0.3, CTF).

    Over 15 mini-batches of 100 at a 20 deg grid, 98% of the particles land in their own
    class (up to the label permutation); without the annealed class similarity one class took
    all but 1 of 400 particles in the same setting.
    """
    n, pixel_size_A, per_class = 32, 4.0, 150
    _, stacks = two_volume_particles(n, pixel_size_A, per_class)
    truth = np.repeat([0, 1], per_class)
    result = ab_initio(
        np.concatenate([s.images for s in stacks]),
        pixel_size_A=pixel_size_A,
        ctf=np.concatenate([truth_ctf(s, n) for s in stacks]),
        n_classes=2,
        n_iterations=15,
        batch_size=100,
        angle_step_deg=20.0,
    )
    agreement = max(np.mean(result.classes == truth), np.mean(result.classes != truth))
    assert agreement >= 0.9
    assert result.volumes.shape == (2, n, n, n)
    assert result.class_posterior.shape == (2 * per_class, 2)
    np.testing.assert_allclose(result.class_posterior.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result.class_posterior.argmax(axis=-1), result.classes)
    assert result.class_sizes.tolist() == np.bincount(result.classes).tolist()
    assert result.class_sizes[0] >= result.class_sizes[1]


@pytest.mark.slow
def test_ab_initio_job_writes_a_map_per_class_in_the_reference_hand(tmp_path: Path) -> None:
    """The job on the two-phantom particles, with the mirror image of phantom 0 as reference.

    Wiring only (6 mini-batches of 50 keep the worker within its 2 minutes; the classes are
    checked in the test above): one map per class (largest first), each particle's class, and
    the map of the class holding most of phantom 0 published in the reference's hand; a
    reference of another box is refused.
    """
    n, pixel_size_A, per_class = 32, 4.0, 100
    root = tmp_path / "project"
    volumes, stacks = two_volume_particles(n, pixel_size_A, per_class)
    names = write_stacks(root, "raw", np.concatenate([s.images for s in stacks]), 1)
    truth = np.repeat([0, 1], per_class)
    defocus_A = np.concatenate([s.truth.defocus_u_A for s in stacks]).astype(np.float32)
    angle_deg = np.concatenate([s.truth.astig_angle_deg for s in stacks])
    save_cs(
        Dataset.from_columns(
            {
                "blob/path": names * truth.size,
                "blob/idx": np.arange(truth.size, dtype=np.uint32),
                "blob/psize_A": np.full(truth.size, pixel_size_A, np.float32),
                "blob/sign": np.full(truth.size, -1.0, np.float32),  # raw contrast
                "ctf/df1_A": defocus_A,
                "ctf/df2_A": np.concatenate([s.truth.defocus_v_A for s in stacks]).astype(
                    np.float32
                ),
                "ctf/df_angle_rad": np.radians(angle_deg).astype(np.float32),
                "ctf/amp_contrast": np.full(truth.size, stacks[0].truth.amp_contrast, np.float32),
            },
            seed=0,
        ),
        root / "raw" / "particles.cs",
    )
    run_ok(root, "import", "import_particles", {"particle_meta_path": "raw/particles.cs"})
    reference = mirror_volume(volumes[0])
    write_mrc(root / "raw" / "reference.mrc", reference, pixel_size_A=pixel_size_A)
    write_mrc(root / "raw" / "small.mrc", reference[:16, :16, :16], pixel_size_A=pixel_size_A)
    run_ok(root, "reference", "import_volume", {"volume_blob_path": "raw/reference.mrc"})
    run_ok(root, "small", "import_volume", {"volume_blob_path": "raw/small.mrc"})
    params = {
        "num_classes": 2,
        "abinit_num_init_iters": 2,
        "abinit_num_final_iters": 4,
        "abinit_minisize": 50,
    }
    particles_in = {"job": "import", "output": "particles"}
    assert_rejected(
        root,
        "bad",
        "ab_initio",
        params,
        [particles_in, {"job": "small", "output": "volume"}],
        "inputs.reference: 16 px at 4 A/px does not match the particles' 32 px at 4 A/px",
    )
    outputs = run_ok(
        root,
        "abinit",
        "ab_initio",
        params,
        [particles_in, {"job": "reference", "output": "volume"}],
    )
    summary = outputs["volume"]["summary"]
    assert summary["hand"].startswith("as inputs.reference")
    assert sum(summary["class_sizes"]) == truth.size
    assert summary["class_sizes"][0] >= summary["class_sizes"][1]
    assert len(outputs["volume"]["datasets"]) == 2
    classes = load_cs(root / outputs["particles"]["datasets"][0])["alignments3D/class"]
    assert np.bincount(classes, minlength=2).tolist() == summary["class_sizes"]
    phantom_0_class = int(np.bincount(classes[truth == 0]).argmax())
    dataset = load_cs(root / outputs["volume"]["datasets"][phantom_0_class])
    published, _ = read_mrc(root / dataset.strings("map/path")[0])
    assert not compare_hands(
        published, reference, pixel_size_A=pixel_size_A, resolution_A=summary["resolution_A"]
    ).mirrored


@pytest.mark.slow
def test_ab_initio_then_refinement_recovers_the_volume_in_a_resolved_hand() -> None:
    """Issue 5 done-when, scaled to CI: unknown poses, gold-standard resolution within 1.5x.

    1000 particles (box 64, 2 A/px, SNR 0.1, CTF 0.8-2 um) instead of 10,000, to fit the
    test budget on 2 cores (20 deg grid, 20 ab-initio and 5 refinement iterations; the
    10,000-particle figures are in docs/benchmarks.md). Measured (7 December 2026, code of
    1a7d3c8): gold-standard 8.53 A against 7.11 A from the true poses on the same halves
    (1.20x). Ab-initio cannot know the hand: the test resolves it against the truth
    (:func:`compare_hands` at 8.53 A: truth's hand, correlation 0.873 against 0.872 for the
    mirror; at 20 A 0.948 against 0.950), and the map in the resolved hand matches the truth
    to 10.7 A (FSC 0.5) against 7.1 A for the known-pose map (1.5x; at 10,000 particles 6.1 A
    against 5.8 A, 1.05x). The poses agree with that hand: one rotation explains them within
    38.1 deg (median) against 57.2 deg in the other hand, close to the 0.7 ratio asserted
    below; float32 sums in another order (one matrix product over interleaved real and
    imaginary parts in ``pose_scores``) gave 52.6 against 48.0 with the same gold-standard
    figure, so at this size the pose check is near its edge. At 800 particles in a 48 px box
    the poses came out unrelated to the truth while the half maps still agreed to within 1.5x:
    the gold-standard criterion alone does not prove success, hence the checks against the
    truth.
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
        initial.volumes[0],
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

    # compared at the map's own resolution: at 20 A the phantom's hands differ too little
    hands = compare_hands(
        result.full_map, vol, pixel_size_A=pixel_size_A, resolution_A=result.resolution_A
    )
    truth_A, known_truth_A = (
        resolution_at_threshold(
            fsc(m * mask, vol * mask), box_size_px=n, pixel_size_A=pixel_size_A, threshold=0.5
        )
        for m in (hands.aligned, (known[0] + known[1]) / 2)
    )
    assert truth_A <= 2.0 * known_truth_A
    refined = result.rotations.astype(np.float64)
    same_hand_deg = pose_spread_deg(truth_poses, refined)
    other_hand_deg = pose_spread_deg(MIRROR @ truth_poses @ MIRROR, refined)
    # the poses are explained by one rotation in the hand compare_hands found
    assert (other_hand_deg < same_hand_deg) is hands.mirrored
    assert min(same_hand_deg, other_hand_deg) < 0.7 * max(same_hand_deg, other_hand_deg)
