"""Reconstruction against peer tools on the same particles (``make bench -k recon_peers``).

One simulated stack (``N_PARTICLES`` particles, default 2,000, override with the environment
variable ``CRYOKUBE_BENCH_PEER_PARTICLES``; 64 px at 2 A/px, SNR 0.1, per-particle CTF with
no B-factor envelope, shifts up to 2 px) is written once as RELION files with our own writers:
``particles.mrcs`` (:func:`~cryokube.processing.io.mrc.write_mrc`, the images negated: RELION
particles show protein white) and ``particles.star``
(:func:`~cryokube.processing.datasets.star.save_star` of a dataset holding the true poses,
shifts and CTFs). Every tool reads those files; ours takes the same arrays in memory.

- ``recon_peers_backprojection``: reconstruction from the known poses, ours (``reconstruct``)
  against RELION 3.1.3 ``relion_reconstruct --ctf``, ASPIRE's ``MeanEstimator`` (its own
  ``RelionSource`` reading our STAR file) and cryoDRGN's ``backproject_voxel`` (poses and CTFs
  parsed from our STAR file by its own ``parse_pose_star`` and ``parse_ctf_star``).
  Figures: seconds, particles/s, peak memory and the
  FSC = 0.143 resolution (A) of each map against the truth volume. Each map is also scored
  against the mirrored truth: a tool that read our Euler angles transposed or mirrored would
  match that (or nothing) instead of the truth.
- ``recon_peers_class2d``: particles/s per iteration of 2D classification, ours
  (``classify_2d`` exactly as in ``recon_class2d``: 400 particles of 4 views, 48 px, K = 4,
  10 deg, +-3 px, 8 A) against ``relion_refine`` Class2D on the same particles and settings
  (K = 4, 10 deg and 1 px at its finest sampling, ``--strict_highres_exp 8``, the same mask
  diameter, ``--j 2``, ``RELION_CLASS2D_ITERATIONS`` full passes). Accuracy: purity of each
  tool's classes against the known views.
- ``recon_peers_refine``: gold-standard refinement of the 400 particles of ``recon_refine``
  (48 px, SNR 0.3, CTF) from the truth volume low-passed to 20 A, with no poses or shifts
  given: ours (``refine_3d``, 3 iterations: 2 global at 15 deg, 1 local) against
  ``relion_refine_mpi --auto_refine`` (healpix order 2, i.e. 15 deg, oversampled to 7.5 deg,
  +-3 px) stopped after ``RELION_REFINE_ITERATIONS`` iterations (default 1, environment
  variable ``CRYOKUBE_BENCH_RELION_REFINE_ITERATIONS``: one RELION iteration takes minutes on
  loaded cores; a large value lets RELION's own convergence test end the run). The compared
  figures are those of the first, global iteration of each: particles/s and the median pose
  error against the truth; our whole run and RELION's last iteration (iterations, seconds,
  median pose error, its map's FSC = 0.143 resolution against the truth and its own
  gold-standard resolution) are in ``extra``.

Our timed calls follow ``compile_cpu_kernels`` (a job's steady state: numba compiles the CPU
gridding kernels once per process, about 4 s).
Peak memory is the growth of our process's peak resident set during the timed call and
``wait4`` peak RSS for a peer process (interpreter and libraries included), so the two are not
the same measure.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import peers
from bench_reconstruction import (
    _ctf,
    class2d_particle_iterations,
    class2d_particles,
    class_purity,
    compile_cpu_kernels,
    median_pose_error_deg,
    refine_particles,
    run_classify_2d,
)
from cryokube.processing.algorithms.fsc import fsc, resolution_at_threshold
from cryokube.processing.algorithms.reconstruction import reconstruct
from cryokube.processing.algorithms.refine import RefinementState, refine_3d
from cryokube.processing.datasets.dataset import Dataset
from cryokube.processing.datasets.star import save_star
from cryokube.processing.geometry import euler_to_matrix
from cryokube.processing.io.mrc import read_mrc, write_mrc
from cryokube.processing.jobs._particles import shift_from_offset
from cryokube.processing.simulate import ParticleStack, phantom_volume, simulate_particles
from harness import Record, benchmark, timed

BOX = 64
PIXEL_SIZE_A = 2.0
N_PARTICLES = int(os.environ.get("CRYOKUBE_BENCH_PEER_PARTICLES", "2000"))
ASPIRE_MAX_ITERATIONS = 50
RELION_CLASS2D_ITERATIONS = 10
RELION_REFINE_ITERATIONS = int(os.environ.get("CRYOKUBE_BENCH_RELION_REFINE_ITERATIONS", "1"))


def write_relion_particles(
    folder: Path, images: np.ndarray, pixel_size_A: float, columns: dict[str, np.ndarray]
) -> str:
    """Write ``particles.mrcs`` (``images`` as they are) and ``particles.star`` listing them
    with the dataset ``columns`` (300 kV, Cs 2.7 mm, 7% amplitude contrast unless they say
    otherwise); the STAR file's name."""
    n, box = len(images), images.shape[-1]
    write_mrc(folder / "particles.mrcs", images, pixel_size_A=pixel_size_A, stack=True)
    dataset = Dataset.from_columns(
        {
            "blob/path": np.full(n, "particles.mrcs"),
            "blob/idx": np.arange(n, dtype=np.uint32),
            "blob/psize_A": np.full(n, pixel_size_A, dtype=np.float32),
            "blob/shape": np.full((n, 2), box, dtype=np.uint32),
            "ctf/accel_kv": np.full(n, 300.0, dtype=np.float32),
            "ctf/cs_mm": np.full(n, 2.7, dtype=np.float32),
            "ctf/amp_contrast": np.full(n, 0.07, dtype=np.float32),
            **columns,
        },
        seed=0,
    )
    save_star(dataset, folder / "particles.star")
    return "particles.star"


def truth_columns(stack: ParticleStack) -> dict[str, np.ndarray]:
    """The dataset columns of the true CTFs, poses and shifts of ``stack``.

    Poses are the truth's RELION Euler angles (through the dataset's axis-angle column);
    ``rlnOriginX/YAngst`` is minus the truth's ``(x, y)`` particle offset, times the pixel
    size (:func:`~cryokube.processing.jobs._particles.shift_from_offset`, the sign our jobs
    write): RELION translates each image by ``+origin`` to centre it. With the opposite sign
    ``relion_reconstruct``'s map of 1,000 particles reaches only 16 A instead of 5.8 A.
    """
    t = stack.truth
    n = len(t.euler_deg)
    return {
        "ctf/accel_kv": np.full(n, t.voltage_kV, dtype=np.float32),
        "ctf/cs_mm": np.full(n, t.cs_mm, dtype=np.float32),
        "ctf/amp_contrast": np.full(n, t.amp_contrast, dtype=np.float32),
        "ctf/bfactor": np.full(n, t.b_factor_A2, dtype=np.float32),
        "ctf/df1_A": t.defocus_u_A.astype(np.float32),
        "ctf/df2_A": t.defocus_v_A.astype(np.float32),
        "ctf/df_angle_rad": np.radians(t.astig_angle_deg).astype(np.float32),
        "alignments3D/pose": t.pose_rad.astype(np.float32),
        "alignments3D/shift": shift_from_offset(t.shifts_px[:, ::-1]),
    }


def _resolutions_A(volume: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """FSC = 0.143 resolution (A) of ``volume`` against the truth and the mirrored truth.

    The mirror is ``z -> -z`` about the centre voxel ``N//2``.
    """
    mirrored = np.roll(truth[::-1], 1, axis=0)
    return _resolution_A(volume, truth, PIXEL_SIZE_A), _resolution_A(volume, mirrored, PIXEL_SIZE_A)


def _resolution_A(volume: np.ndarray, reference: np.ndarray, pixel_size_A: float) -> float:
    """FSC = 0.143 resolution (A) of ``volume`` against ``reference`` (RELION's rule)."""
    return resolution_at_threshold(
        fsc(volume, reference), box_size_px=volume.shape[0], pixel_size_A=pixel_size_A
    )


def _simulate() -> tuple[np.ndarray, ParticleStack]:
    phantom = phantom_volume(BOX, PIXEL_SIZE_A, seed=1)
    stack = simulate_particles(
        phantom.volume, PIXEL_SIZE_A, N_PARTICLES, snr=0.1, b_factor_A2=0.0, seed=2
    )
    return phantom.volume, stack


@benchmark("recon_peers_backprojection")
def backprojection_peers(_machine: dict[str, float]) -> list[Record]:
    truth, stack = _simulate()
    ctf = _ctf(stack, BOX)
    rotations = stack.truth.rotations.astype(np.float32)
    shifts = stack.truth.shifts_px[:, ::-1].astype(np.float32)
    compile_cpu_kernels()
    volume, seconds, peak_MB = timed(
        lambda: np.asarray(reconstruct(stack.images, rotations, shifts_px=shifts, ctf=ctf))
    )
    ours, ours_mirror = _resolutions_A(volume, truth)
    records = [
        Record(
            f"recon_peers/backprojection_{BOX}px/ours",
            N_PARTICLES / seconds,
            "particles/s",
            accuracy=ours,
            accuracy_unit="A, FSC 0.143 against the truth",
            peak_memory_MB=peak_MB,
            notes=f"{N_PARTICLES} particles in {seconds:.2f} s; against the mirrored truth "
            f"{ours_mirror:.3g} A",
        )
    ]
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-") as tmp:
        folder = Path(tmp)
        # RELION particles show protein white: the images negated.
        star = write_relion_particles(folder, -stack.images, PIXEL_SIZE_A, truth_columns(stack))
        # (result, output file, sign): ASPIRE's CTFFilter has the physical sign (protein
        # dark, ours), RELION's the opposite, so on RELION-style particles ASPIRE's map is the
        # negated density (its FSC against the truth is -0.96 at 8 A before the sign change).
        runs = [
            (peers.relion_reconstruct(folder, star, "relion.mrc"), "relion.mrc", 1.0),
            (
                peers.aspire_mean_estimator(
                    folder, star, "aspire.npy", max_iterations=ASPIRE_MAX_ITERATIONS
                ),
                "aspire.npy",
                -1.0,
            ),
            # cryoDRGN inverts the images itself (its default) and has the physical CTF sign
            (
                peers.cryodrgn_backproject(folder, star, "cryodrgn"),
                "cryodrgn/backproject.mrc",
                1.0,
            ),
        ]
        for peer, out, sign in runs:
            extra: dict[str, Any] = {"peer_peak_rss_MB": peer.peak_MB}
            notes = f"peer: {peer.notes}"
            if peer.seconds is not None:
                path = folder / out
                peer_map = np.load(path) if path.suffix == ".npy" else read_mrc(path)[0]
                resolution, mirror = _resolutions_A(sign * np.asarray(peer_map, np.float32), truth)
                extra |= {
                    "peer_seconds": peer.seconds,
                    "peer_particles_per_s": N_PARTICLES / peer.seconds,
                    "peer_resolution_A": resolution,
                    "peer_resolution_vs_mirror_A": mirror,
                }
                notes += f"; peer map {resolution:.3g} A against the truth, {mirror:.3g} A mirrored"
            records.append(
                Record(
                    f"recon_peers/backprojection_{BOX}px/vs {peer.name.split()[0]}",
                    N_PARTICLES / seconds,
                    "particles/s",
                    peer=peer.name,
                    ratio_to_peer=None if peer.seconds is None else peer.seconds / seconds,
                    accuracy=ours,
                    accuracy_unit="A, FSC 0.143 against the truth (ours)",
                    peak_memory_MB=peak_MB,
                    notes=notes,
                    extra=extra,
                )
            )
    return records


@benchmark("recon_peers_class2d")
def class2d_peers(_machine: dict[str, float]) -> list[Record]:
    box, per_view, n_classes = 48, 100, 4
    images, labels = class2d_particles(box, per_view)
    iterations = class2d_particle_iterations(labels.size)
    compile_cpu_kernels()
    result, seconds, peak_MB = timed(lambda: run_classify_2d(images, n_classes))
    rate = labels.size * iterations / seconds
    purity = class_purity(result.assignments, labels)
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-") as tmp:
        folder = Path(tmp)
        star = write_relion_particles(folder, images, PIXEL_SIZE_A, {})
        peer, classes = peers.relion_class2d(
            folder, star, n_classes=n_classes, iterations=RELION_CLASS2D_ITERATIONS,
            psi_step_deg=10.0, offset_range_px=3, max_resolution_A=4 * PIXEL_SIZE_A,
            particle_diameter_A=0.8 * box * PIXEL_SIZE_A,
        )  # fmt: skip
    extra: dict[str, Any] = {"peer_peak_rss_MB": peer.peak_MB}
    ratio = None
    notes = f"ours {iterations:g} particle-iterations in {seconds:.1f} s; peer: {peer.notes}"
    if peer.seconds is not None and classes is not None:
        peer_rate = labels.size * RELION_CLASS2D_ITERATIONS / peer.seconds
        ratio = rate / peer_rate
        extra |= {
            "peer_seconds": peer.seconds,
            "peer_particles_per_s_per_iteration": peer_rate,
            "peer_purity": class_purity(classes, labels),
        }
        notes += f", purity {extra['peer_purity']:.3f} after {RELION_CLASS2D_ITERATIONS} iterations"
    return [
        Record(
            f"recon_peers/class2d_{box}px",
            rate,
            "particles/s per iteration",
            peer=peer.name,
            ratio_to_peer=ratio,
            accuracy=purity,
            accuracy_unit="class purity (fraction), 4 views, SNR 0.1",
            peak_memory_MB=peak_MB,
            notes=notes,
            extra=extra,
        )
    ]


@benchmark("recon_peers_refine")
def refine_peers(_machine: dict[str, float]) -> list[Record]:
    box, n_particles, iterations = 48, 400, 3
    volume, stack, pixel_size_A = refine_particles(box, n_particles)
    truth = stack.truth
    ctf = _ctf(stack, box)
    # our iterations' end times and poses (the last one's come with the result)
    marks: list[tuple[float, np.ndarray]] = []

    def mark(state: RefinementState) -> None:
        # a copy: refine_3d goes on updating the state's arrays in place
        marks.append((time.perf_counter(), np.array(state.rotations, copy=True)))

    compile_cpu_kernels()
    start = time.perf_counter()
    result, seconds, peak_MB = timed(
        lambda: refine_3d(
            stack.images,
            volume,
            pixel_size_A=pixel_size_A,
            ctf=ctf,
            n_iterations=iterations,
            initial_resolution_A=20.0,
            global_step_deg=15.0,
            max_shift_px=3,
            on_iteration=mark,
        )
    )
    first_s = marks[0][0] - start
    first_error = median_pose_error_deg(marks[0][1], truth.rotations)
    error_deg = median_pose_error_deg(np.asarray(result.rotations), truth.rotations)
    ours_A = _resolution_A(np.asarray(result.full_map), volume, pixel_size_A)
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-") as tmp:
        folder = Path(tmp)
        # CTFs only: neither tool is told the poses or the shifts
        ctf_only = {k: v for k, v in truth_columns(stack).items() if k.startswith("ctf/")}
        star = write_relion_particles(folder, -stack.images, pixel_size_A, ctf_only)
        write_mrc(folder / "reference.mrc", volume, pixel_size_A=pixel_size_A)
        peer, relion = peers.relion_autorefine(
            folder, star, "reference.mrc", iterations=RELION_REFINE_ITERATIONS,
            initial_resolution_A=20.0, healpix_order=2, offset_range_px=3,
            particle_diameter_A=0.8 * box * pixel_size_A,
        )  # fmt: skip
    extra: dict[str, Any] = {
        "first_iteration_s": first_s,
        "first_iteration_median_pose_error_deg": first_error,
        "particles_per_s_per_iteration_all": n_particles * iterations / seconds,
        "median_pose_error_deg_all": error_deg,
        "resolution_A": ours_A,
        "gold_standard_resolution_A": result.resolution_A,
        "peer_peak_rss_MB": peer.peak_MB,
    }
    ratio = None
    notes = (
        f"ours: first (global) iteration {first_s:.1f} s, {iterations} iterations in "
        f"{seconds:.1f} s, then median pose error {error_deg:.3g} deg, map {ours_A:.3g} A against "
        f"the truth (gold-standard {result.resolution_A:.3g} A); peer: {peer.notes}"
    )
    if peer.seconds is not None and relion is not None:
        ratio = peer.seconds / (relion.iterations * first_s)
        angles = np.stack(
            [
                np.asarray(relion.particles[f"rlnAngle{a}"], dtype=np.float64)
                for a in ("Rot", "Tilt", "Psi")
            ],
            axis=1,
        )
        peer_error = median_pose_error_deg(euler_to_matrix(angles), truth.rotations)
        peer_A = _resolution_A(relion.volume, volume, pixel_size_A)
        extra |= {
            "peer_seconds": peer.seconds,
            "peer_iterations": relion.iterations,
            "peer_converged": relion.converged,
            "peer_particles_per_s_per_iteration": n_particles * relion.iterations / peer.seconds,
            "peer_median_pose_error_deg": peer_error,
            "peer_resolution_A": peer_A,
            "peer_gold_standard_resolution_A": relion.gold_standard_A,
        }
        ended = "converged" if relion.converged else "stopped"
        notes += (
            f", {ended} after {relion.iterations} iterations in {peer.seconds:.1f} s, median pose "
            f"error {peer_error:.3g} deg, map {peer_A:.3g} A against the truth (gold-standard "
            f"{relion.gold_standard_A:.3g} A)"
        )
    return [
        Record(
            f"recon_peers/refine_{box}px/first_iteration",
            n_particles / first_s,
            "particles/s per iteration",
            peer=peer.name,
            ratio_to_peer=ratio,
            accuracy=first_error,
            accuracy_unit="deg, median pose error after the first iteration (SNR 0.3, CTF)",
            peak_memory_MB=peak_MB,
            notes=notes,
            extra=extra,
        )
    ]
