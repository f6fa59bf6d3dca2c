"""Reconstruction science: back-projection, 2D classification, refinement (``make bench -k recon``).

- ``recon_backprojection``: particles per second reconstructing a 64^3 volume from simulated
  particles (CTF, SNR 0.1) at their true poses. Roofline: the memory traffic of trilinear
  insertion, 8 voxels per Fourier sample, each a complex64 datum and a float32 weight read and
  written (192 bytes per sample), at ``memory_bandwidth_GBps``. Accuracy: FSC = 0.143
  resolution of the map against the ground-truth volume, in px.
- ``recon_class2d``: particles per second per EM iteration of 2D classification (K = 4,
  10 deg rotations, +-3 px shifts, alignment to half Nyquist; 6 mini-batches of 100, then 2
  full passes, counted as particle-iterations) on 4 simulated views, after
  :func:`compile_cpu_kernels` (from 8 December 2026). Roofline:
  the flops of the E-step's cross-term matrix product (2 real products of
  (particles x shifts) x band x (classes x rotations)) at ``matmul_GFLOPs`` (before 7 December
  2026, 23:40 UTC at ``fft_GFLOPs_2threads``, 4 to 5 times below the BLAS rate). Accuracy:
  purity of the classes (fraction).
- ``recon_refine``: particles per second per iteration of gold-standard refinement (2 global
  and 1 local iterations), after :func:`compile_cpu_kernels`. Roofline (:func:`refine_work`):
  the pose-score matrix products of every iteration at ``matmul_GFLOPs`` plus the memory
  traffic of the local search's trilinear slice extraction (27 candidate slices per particle
  over the whole image, 8 complex64 voxels read per sample) at ``memory_bandwidth_GBps``
  (before 8 December 2026 the traffic alone). Accuracy: median angular pose error in degrees.
- ``recon_abinitio``: issue 5's done-when. Ab-initio (K = 1, 30 mini-batches of 200, 15 deg
  grid) then 6 iterations of refinement from 10,000 simulated particles (box 64, 2 A/px,
  SNR 0.1, CTF 0.8-2 um; ``CRYOKUBE_BENCH_ABINITIO_PARTICLES`` sets the count) with unknown
  poses. Value: gold-standard resolution over that of the reconstruction from the true poses
  on the same half sets (goal at most 1.5). Accuracy: FSC = 0.5 resolution against the
  truth of the refined map in the hand that ``compare_hands`` resolved. No roofline: the
  figure is a resolution, and the wall times are in the notes.

The peer tools (RELION 3.1.3, ASPIRE) run in ``bench_reconstruction_peers.py``; its 2D
classification and refinement use the particles of ``recon_class2d`` and ``recon_refine``.
"""

from __future__ import annotations

import os
import time

import numpy as np
from cryokube.processing.algorithms.abinitio import ab_initio, compare_hands
from cryokube.processing.algorithms.class2d import Class2DResult, classify_2d
from cryokube.processing.algorithms.fsc import (
    fsc,
    masked_fsc,
    resolution_at_threshold,
    soft_spherical_mask,
)
from cryokube.processing.algorithms.projection import project
from cryokube.processing.algorithms.reconstruction import reconstruct
from cryokube.processing.algorithms.refine import (
    back_project_halves,
    fourier_band,
    local_perturbations,
    refine_3d,
    so3_grid,
)
from cryokube.processing.algorithms.symmetry import axis_rotation
from cryokube.processing.backend import rotate_image, shift_image
from cryokube.processing.ctf import ctf_2d
from cryokube.processing.simulate import ParticleStack, phantom_volume, simulate_particles
from harness import Record, benchmark, best_time_s, peak_traced_MB

BOX = 64
PIXEL_SIZE_A = 2.0


def _ctf(stack: ParticleStack, box: int) -> np.ndarray:
    """The simulated particles' CTF on their ``rfft2`` grid."""
    t = stack.truth
    return np.asarray(
        ctf_2d(
            (box, box),
            t.pixel_size_A,
            defocus_u_A=t.defocus_u_A,
            defocus_v_A=t.defocus_v_A,
            astig_angle_deg=t.astig_angle_deg,
            voltage_kV=t.voltage_kV,
            cs_mm=t.cs_mm,
            amp_contrast=t.amp_contrast,
            b_factor_A2=t.b_factor_A2,
        )
    )


def compile_cpu_kernels() -> None:
    """Compile the CPU kernels (numba: gridding about 4 s, bilinear image rotation under 1 s,
    once per process) untimed, so that a one-call timing sees a job's steady state."""
    rotation = np.eye(3, dtype=np.float32)[None]
    reconstruct(project(np.zeros((8, 8, 8), np.float32), rotation), rotation)
    rotate_image(np.zeros((1, 8, 8), np.float32), 10.0)


@benchmark("recon_backprojection")
def backprojection(machine: dict[str, float]) -> list[Record]:
    n_particles = 2000
    phantom = phantom_volume(BOX, PIXEL_SIZE_A, seed=1)
    stack = simulate_particles(phantom.volume, PIXEL_SIZE_A, n_particles, snr=0.1, seed=2)
    ctf = _ctf(stack, BOX)
    rotations = stack.truth.rotations.astype(np.float32)
    shifts = stack.truth.shifts_px[:, ::-1].astype(np.float32)

    def run() -> np.ndarray:
        return np.asarray(reconstruct(stack.images, rotations, shifts_px=shifts, ctf=ctf))

    t = best_time_s(run, repeat=2)
    volume = run()
    resolution_px = resolution_at_threshold(
        fsc(volume, phantom.volume), box_size_px=BOX, pixel_size_A=1.0
    )
    ky, kx = np.meshgrid(np.fft.fftfreq(BOX), np.fft.rfftfreq(BOX), indexing="ij")
    samples = n_particles * int(np.count_nonzero(ky**2 + kx**2 <= 0.25))
    limit_s = samples * 192 / (machine["memory_bandwidth_GBps"] * 1e9)
    return [
        Record(
            f"reconstruction/backprojection_{BOX}px",
            n_particles / t,
            "particles/s",
            ratio_to_limit=t / limit_s,
            limit="trilinear insertion traffic (192 B/sample) at memory_bandwidth_GBps",
            accuracy=resolution_px,
            accuracy_unit="px, FSC 0.143 against the truth (2000 particles, SNR 0.1, CTF)",
            peak_memory_MB=peak_traced_MB(run),
        )
    ]


def class2d_particles(n: int, per_view: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (4 per_view, n, n) of 4 distinct views, rotated in plane, shifted up to 2 px,
    at SNR 0.1 (no CTF), and each image's view (its true class)."""
    volume = phantom_volume(n, PIXEL_SIZE_A, seed=3).volume
    views = np.stack(
        [
            axis_rotation(a, d)
            for a, d in [((1, 0, 0), 0), ((1, 0, 0), 90), ((0, 1, 0), 90), ((1, 1, 0), 60)]
        ]
    ).astype(np.float32)
    projections = project(volume, views)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(views)), per_view)
    images = np.stack([rotate_image(projections[k], rng.uniform(0, 360)) for k in labels])
    images = shift_image(images, rng.uniform(-2, 2, (labels.size, 2)).astype(np.float32))
    images = images + rng.normal(0, np.sqrt(np.var(images) / 0.1), images.shape).astype(np.float32)
    return images, labels


def median_pose_error_deg(rotations: np.ndarray, truth: np.ndarray) -> float:
    """Median angle (deg) of the rotations taking the found poses to the true ones."""
    relative = np.einsum("nij,nkj->nik", rotations.astype(np.float64), truth)
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return float(np.median(np.degrees(np.arccos(cos))))


def class_purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of particles whose class's most common true label is their own."""
    return float(
        sum(np.bincount(labels[assignments == k]).max() for k in np.unique(assignments))
        / labels.size
    )


# 2D classification schedule: mini-batches, their size, then full passes
CLASS2D_ONLINE_ITERATIONS, CLASS2D_BATCH, CLASS2D_FULL_ITERATIONS = 6, 100, 2


def class2d_particle_iterations(n_particles: int) -> float:
    """Particle-iterations of :func:`run_classify_2d`: mini-batch passes plus full passes."""
    online = CLASS2D_ONLINE_ITERATIONS * CLASS2D_BATCH
    return (online + CLASS2D_FULL_ITERATIONS * n_particles) / n_particles


def run_classify_2d(images: np.ndarray, n_classes: int) -> Class2DResult:
    """``classify_2d`` as ``recon_class2d`` and its RELION peer run it: alignment to 8 A,
    10 deg, +-3 px, the schedule above."""
    return classify_2d(
        images, n_classes=n_classes, pixel_size_A=PIXEL_SIZE_A, max_resolution_A=4 * PIXEL_SIZE_A,
        angle_step_deg=10.0, max_shift_px=3, n_online_iterations=CLASS2D_ONLINE_ITERATIONS,
        online_batch_size=CLASS2D_BATCH, n_full_iterations=CLASS2D_FULL_ITERATIONS,
    )  # fmt: skip


@benchmark("recon_class2d")
def class2d(machine: dict[str, float]) -> list[Record]:
    n, per_view, n_classes = 48, 100, 4
    images, labels = class2d_particles(n, per_view)
    iterations = class2d_particle_iterations(labels.size)
    compile_cpu_kernels()
    t0 = time.perf_counter()
    assignments = run_classify_2d(images, n_classes).assignments
    t = time.perf_counter() - t0
    purity = class_purity(assignments, labels)
    band = int(np.pi * (n / 4) ** 2 / 2)
    flops = 2 * 2 * labels.size * 49 * band * n_classes * 36 * iterations
    limit_s = flops / (machine["matmul_GFLOPs"] * 1e9)
    return [
        Record(
            f"class2d/iteration_{n}px",
            labels.size * iterations / t,
            "particles/s per iteration",
            ratio_to_limit=t / limit_s,
            limit="E-step matrix-product flops at matmul_GFLOPs",
            accuracy=purity,
            accuracy_unit="class purity (fraction), 4 views, SNR 0.1",
        )
    ]


def refine_particles(n: int, n_particles: int) -> tuple[np.ndarray, ParticleStack, float]:
    """Truth volume (n px over 128 A), particles at SNR 0.3 with CTF, and the pixel size (A)."""
    pixel_size_A = 128.0 / n
    volume = phantom_volume(n, pixel_size_A, seed=4).volume
    stack = simulate_particles(volume, pixel_size_A, n_particles, snr=0.3, seed=5)
    return volume, stack, pixel_size_A


# The refinement's global grid and shift range, passed to refine_3d and counted by refine_work
REFINE_GLOBAL_STEP_DEG, REFINE_MAX_SHIFT_PX = 15.0, 3


def refine_work(
    n: int, n_particles: int, pixel_size_A: float, resolutions_A: list[float]
) -> tuple[float, float]:
    """Flops of the pose-score products and bytes of local-search slice interpolation of
    :func:`refine_3d` iterations at ``resolutions_A`` (each iteration's alignment band).

    Iteration 0 scores every particle against the global SO(3) grid's references at every shift
    of the range, iteration 1 against the grid at 9 local shifts; later ones against the local
    candidate rotations at 9 shifts, interpolating each candidate's slice over the whole image
    (8 complex64 voxels read per sample). A score costs two real products (4 flops per band
    sample and shift) and the CTF^2-weighted norm (2).
    """
    grid = len(so3_grid(REFINE_GLOBAL_STEP_DEG))
    candidates = len(local_perturbations(REFINE_GLOBAL_STEP_DEG / 2))
    all_shifts = (2 * REFINE_MAX_SHIFT_PX + 1) ** 2
    flops = traffic = 0.0
    for iteration, resolution_A in enumerate(resolutions_A):
        band = fourier_band(n, radius_shells=n * pixel_size_A / resolution_A).index.size
        poses = grid if iteration <= 1 else candidates
        shifts = all_shifts if iteration == 0 else 9
        flops += n_particles * poses * band * (4 * shifts + 2)
        if iteration > 1:
            traffic += n_particles * poses * n * (n // 2 + 1) * 8 * 8
    return flops, traffic


@benchmark("recon_refine")
def refine(machine: dict[str, float]) -> list[Record]:
    n, n_particles, iterations = 48, 400, 3
    volume, stack, pixel_size_A = refine_particles(n, n_particles)
    ctf = _ctf(stack, n)
    truth = stack.truth
    compile_cpu_kernels()
    t0 = time.perf_counter()
    result = refine_3d(
        stack.images, volume, pixel_size_A=pixel_size_A, ctf=ctf, n_iterations=iterations,
        initial_resolution_A=20.0, global_step_deg=REFINE_GLOBAL_STEP_DEG,
        max_shift_px=REFINE_MAX_SHIFT_PX,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    flops, traffic_bytes = refine_work(
        n, n_particles, pixel_size_A, [20.0, *result.resolution_history_A][:iterations]
    )
    products_s = flops / (machine["matmul_GFLOPs"] * 1e9)
    traffic_s = traffic_bytes / (machine["memory_bandwidth_GBps"] * 1e9)
    limit_s = products_s + traffic_s
    return [
        Record(
            f"refine/iteration_{n}px",
            n_particles * iterations / elapsed,
            "particles/s per iteration",
            ratio_to_limit=elapsed / limit_s,
            limit="pose-score products at matmul_GFLOPs + local-search slice interpolation "
            "traffic at memory_bandwidth_GBps",
            extra={
                "roofline_products_s": products_s,
                "roofline_traffic_s": traffic_s,
                # the figure before 8 December 2026 counted the traffic alone
                "ratio_to_traffic_alone": elapsed / traffic_s,
            },
            accuracy=median_pose_error_deg(result.rotations, truth.rotations),
            accuracy_unit="deg, median pose error (SNR 0.3, CTF)",
            notes=f"gold-standard resolution {result.resolution_A:.2f} A",
        )
    ]


@benchmark("recon_abinitio")
def abinitio_then_refine(_machine: dict[str, float]) -> list[Record]:
    n_particles = int(os.environ.get("CRYOKUBE_BENCH_ABINITIO_PARTICLES", "10000"))
    truth_volume = phantom_volume(BOX, PIXEL_SIZE_A, seed=1).volume
    stack = simulate_particles(
        truth_volume, PIXEL_SIZE_A, n_particles, snr=0.1, seed=2, defocus_range_A=(8e3, 2e4)
    )
    ctf = _ctf(stack, BOX)
    t0 = time.perf_counter()
    initial = ab_initio(
        stack.images, pixel_size_A=PIXEL_SIZE_A, ctf=ctf, n_iterations=30, batch_size=200,
        angle_step_deg=15.0,
    )  # fmt: skip
    abinitio_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = refine_3d(
        stack.images, initial.volumes[0], pixel_size_A=PIXEL_SIZE_A, ctf=ctf, n_iterations=6,
        initial_resolution_A=20.0,
    )  # fmt: skip
    refine_s = time.perf_counter() - t0
    known = back_project_halves(
        stack.images,
        stack.truth.rotations.astype(np.float32),
        stack.truth.shifts_px[:, ::-1].astype(np.float32),
        result.halves,
        ctf=ctf,
    )
    mask = soft_spherical_mask((BOX,) * 3, radius_px=0.4 * BOX)
    # the same corrected masked FSC (and mask) as the refinement's own gold-standard figure
    known_fsc = masked_fsc(known[0], known[1], mask, rng=np.random.default_rng(0)).corrected
    known_A = resolution_at_threshold(known_fsc, box_size_px=BOX, pixel_size_A=PIXEL_SIZE_A)
    hands = compare_hands(result.full_map, truth_volume, pixel_size_A=PIXEL_SIZE_A)
    against_truth_A = resolution_at_threshold(
        fsc(hands.aligned * mask, truth_volume * mask),
        box_size_px=BOX,
        pixel_size_A=PIXEL_SIZE_A,
        threshold=0.5,
    )
    hand = "mirror of the truth" if hands.mirrored else "truth's hand"
    return [
        Record(
            f"abinitio/then_refine_{n_particles}_{BOX}px",
            result.resolution_A / known_A,
            "x the known-pose gold-standard resolution",
            accuracy=against_truth_A,
            accuracy_unit="A, FSC 0.5 against the truth in the resolved hand",
            notes=(
                f"gold-standard {result.resolution_A:.2f} A ({result.resolution_A / PIXEL_SIZE_A:.2f}"
                f" px), known poses {known_A:.2f} A ({known_A / PIXEL_SIZE_A:.2f} px); came out in "
                f"the {hand} (correlation {hands.correlation:.3f}, mirror "
                f"{hands.mirror_correlation:.3f}); ab-initio {abinitio_s:.0f} s, refinement "
                f"{refine_s:.0f} s"
            ),
        )
    ]
