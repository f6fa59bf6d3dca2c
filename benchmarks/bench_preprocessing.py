"""Pre-processing speed and accuracy: motion correction, CTF estimation and particle picking.

Inputs are generated here with known truth:

- motion: one 5760 x 4092 x 50 counting movie (0.885 A/px, 1 e/A^2 per frame, so 0.78 counts
  per pixel per frame) of a textured specimen drifting along a known path, written as LZW TIFF
  by :func:`cryokube.processing.io.movies.write_movie_tiff`; the timed figure is read plus
  alignment plus the dose-weighted sum, per movie, after an untimed alignment of a small movie
  (a motion job aligns its movies in one process: numba compiles its CPU kernels once);
- CTF: simulated 2048^2 micrographs (1.5 A/px, 300 kV) at 0.8-3.2 um defocus, timed after one
  untimed fit (from 8 December 2026: numba compiles the CPU kernel once per process);
- picking: simulated 2048^2 micrographs (2 A/px) with 150 particles each; ours is the best of
  5 timed calls after one untimed call (a job's steady state, FFT plans made; before 8 December
  2026 one call after one untimed pick), RELION's includes its process start.

Rooflines (``ratio_to_limit`` = measured time / roofline time, 1 is the limit):

- motion: the larger of its CPU and memory costs. CPU: LZW decode of the movie at
  2 x ``lzw_decode_MBps`` plus one forward real FFT of each full frame at
  ``fft_GFLOPs_2threads`` (the least a dose-weighting aligner must do: the exposure filter
  weights every frame's full spectrum); both run on the same cores, so their times add.
  Memory: the decoded frames written once and read once at ``memory_bandwidth_GBps``;
- CTF: the forward FFTs of the half-overlapping 512-px tiles of the averaged spectrum;
- picking: one forward FFT of the micrograph.

Peers (RELION 3.1.3 ``relion_run_motioncorr --use_own`` and ``relion_autopick --LoG``, ASPIRE
``estimate_ctf``) are installed by :mod:`peers` into ``benchmarks/.peers/`` and run on the same
files; when one cannot be installed or run, the record says why in ``notes``.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import peers
from cryokube.processing.algorithms.ctf_fit import estimate_ctf
from cryokube.processing.algorithms.motion import align_movie
from cryokube.processing.algorithms.picking import pick_blobs
from cryokube.processing.backend import fourier_resample, fourier_shift, irfft2, rfft2
from cryokube.processing.io.movies import read_movie, write_movie_tiff
from cryokube.processing.io.mrc import write_mrc
from cryokube.processing.simulate import phantom_volume, simulate_micrograph
from harness import Record, benchmark, best_time_s, timed
from limits import rfft2_flops
from scipy.spatial import cKDTree

MOVIE_SHAPE = (50, 4092, 5760)
MOVIE_PIXEL_A = 0.885
DOSE_E_PER_A2 = 1.0
CTF_DEFOCI_A = (8000.0, 16000.0, 24000.0, 32000.0)
CTF_PIXEL_A = 1.5
PICK_PIXEL_A = 2.0
PICK_DIAMETER_A = 76.8
N_PICK_MICROGRAPHS = 3


def _drifting_movie(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Counting frames (n, ny, nx) uint8 and their true drift (n, 2) as (dy, dx) px."""
    n_frames, ny, nx = MOVIE_SHAPE
    texture = fourier_resample(rng.standard_normal((ny // 8, nx // 8)).astype(np.float32), (ny, nx))
    image = np.clip(1.0 + 0.2 * texture / texture.std(), 0.0, None)
    t = np.arange(n_frames, dtype=np.float64)
    drift = np.stack([6.0 * np.sqrt(t) + 0.05 * t, -5.0 * np.sqrt(t)], axis=1)
    counts_per_px = DOSE_E_PER_A2 * MOVIE_PIXEL_A**2
    frames = np.empty(MOVIE_SHAPE, dtype=np.uint8)
    spectrum = rfft2(image)
    for i in range(n_frames):
        moved = irfft2(fourier_shift(spectrum, drift[i], (ny, nx)), (ny, nx))
        frames[i] = np.minimum(rng.poisson(counts_per_px * np.clip(moved, 0, None)), 255)
    return frames, drift


def _cpu_s() -> float:
    """User plus system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@benchmark("preprocessing_motion")
def motion(machine: dict[str, float]) -> list[Record]:
    rng = np.random.default_rng(0)
    frames, drift = _drifting_movie(rng)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "movie.tif"
        write_movie_tiff(path, frames, compression="lzw")
        n_bytes = frames.nbytes
        del frames

        def run() -> Any:
            movie = read_movie(path)
            return align_movie(
                movie, pixel_size_A=MOVIE_PIXEL_A, dose_per_frame_e_per_A2=DOSE_E_PER_A2
            )

        # A motion job aligns all its movies in one process: numba compiles the CPU kernels
        # once, untimed here as in a job's steady state (the compile time is in the record).
        started = time.perf_counter()
        align_movie(
            rng.poisson(1.0, (3, 256, 256)).astype(np.uint8),
            pixel_size_A=MOVIE_PIXEL_A,
            dose_per_frame_e_per_A2=DOSE_E_PER_A2,
        )
        compile_s = time.perf_counter() - started
        load_ours = os.getloadavg()[0]
        cpu_before = _cpu_s()
        result, seconds, peak_MB = timed(run)
        cpu_ours = _cpu_s() - cpu_before
        error = result.global_shifts_px - (drift - drift[0])
        error -= error.mean(axis=0)
        rms_px = float(np.sqrt(np.mean(np.sum(error**2, axis=1))))
        n_frames, ny, nx = MOVIE_SHAPE
        cpu_s = n_bytes / (2 * machine["lzw_decode_MBps"] * 1e6) + n_frames * rfft2_flops(
            ny, nx
        ) / (machine["fft_GFLOPs_2threads"] * 1e9)
        memory_s = 2 * n_bytes / (machine["memory_bandwidth_GBps"] * 1e9)
        roofline_s = max(cpu_s, memory_s)
        load_peer = os.getloadavg()[0]
        peer = peers.relion_motioncorr(
            path,
            pixel_size_A=MOVIE_PIXEL_A,
            dose=DOSE_E_PER_A2,
            truth_shifts_px=drift - drift[0],
        )
    notes = f"{n_frames} x {ny} x {nx} uint8 LZW TIFF, 5x5 patches; global trajectory truth"
    return [
        Record(
            "preprocessing_motion/seconds_per_movie",
            seconds,
            "s/movie",
            ratio_to_limit=seconds / roofline_s,
            limit="max(2 x lzw_decode_MBps + n_frames rfft2 at fft_GFLOPs_2threads, "
            "2 x movie bytes at memory_bandwidth_GBps)",
            peer=peer.name,
            ratio_to_peer=None if peer.seconds is None else peer.seconds / seconds,
            accuracy=rms_px,
            accuracy_unit="px RMS global trajectory error",
            peak_memory_MB=peak_MB,
            notes=f"{notes}; peer: {peer.notes}",
            extra={
                "peer_accuracy_px": peer.accuracy,
                "peer_peak_rss_MB": peer.peak_MB,
                "roofline_decode_fft_s": cpu_s,
                "roofline_memory_s": memory_s,
                "kernel_compile_s": compile_s,
                # CPU seconds (all threads) move far less with the other work on the machine
                # than wall times do: the work each tool did on the same movie.
                "cpu_s_ours": cpu_ours,
                "cpu_s_peer": peer.cpu_s,
                # Other work on the machine moves both timings: the 1-minute load average as
                # each run starts, and once both have finished.
                "load_average_1min_before_ours": load_ours,
                "load_average_1min_before_peer": load_peer,
                "load_average_1min_after": os.getloadavg()[0],
            },
        )
    ]


@benchmark("preprocessing_ctf")
def ctf(machine: dict[str, float]) -> list[Record]:
    phantom = phantom_volume(box_size=96, pixel_size_A=CTF_PIXEL_A, seed=0)
    micrographs = [
        simulate_micrograph(
            phantom.volume,
            CTF_PIXEL_A,
            shape=(2048, 2048),
            n_particles=250,
            carbon_fraction=0.0,
            snr=1.0,
            defocus_u_A=d + 300.0,
            defocus_v_A=d - 300.0,
            astig_angle_deg=20.0,
            seed=i,
        )
        for i, d in enumerate(CTF_DEFOCI_A)
    ]
    settings = {
        "pixel_size_A": CTF_PIXEL_A,
        "voltage_kV": 300.0,
        "cs_mm": 2.7,
        "amp_contrast": 0.07,
    }
    # A job's steady state: a CTF job fits its micrographs in one process, so numba compiles
    # the CPU kernel once, in this untimed fit.
    estimate_ctf(micrographs[0].image, **settings)
    fits, seconds, peak_MB = timed(lambda: [estimate_ctf(m.image, **settings) for m in micrographs])
    errors = [abs(f.defocus_mean_A / d - 1) * 100 for f, d in zip(fits, CTF_DEFOCI_A, strict=True)]
    n_tiles = 7 * 7
    roofline_s = (
        len(micrographs) * n_tiles * rfft2_flops(512, 512) / (machine["fft_GFLOPs_2threads"] * 1e9)
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, m in enumerate(micrographs):
            paths.append(Path(folder) / f"mic_{i}.mrc")
            write_mrc(paths[-1], m.image, pixel_size_A=CTF_PIXEL_A)
        peer = peers.aspire_ctf(Path(folder), CTF_DEFOCI_A, **settings)
    per_minute = 60.0 * len(micrographs) / seconds
    return [
        Record(
            "preprocessing_ctf/micrographs_per_minute",
            per_minute,
            "micrographs/min",
            ratio_to_limit=seconds / roofline_s,
            limit="512-px tile rfft2 at fft_GFLOPs_2threads",
            peer=peer.name,
            ratio_to_peer=None if peer.seconds is None else peer.seconds / seconds,
            accuracy=max(errors),
            accuracy_unit="% worst mean-defocus error",
            peak_memory_MB=peak_MB,
            notes=f"2048^2 at {CTF_PIXEL_A} A/px, 0.8-3.2 um; peer: {peer.notes}",
            extra={"peer_accuracy_percent": peer.accuracy, "peer_peak_rss_MB": peer.peak_MB},
        )
    ]


@benchmark("preprocessing_picking")
def picking(machine: dict[str, float]) -> list[Record]:
    phantom = phantom_volume(box_size=64, pixel_size_A=PICK_PIXEL_A, seed=0)
    micrographs = [
        simulate_micrograph(
            phantom.volume, PICK_PIXEL_A, shape=(2048, 2048), n_particles=150, seed=10 + i
        )
        for i in range(N_PICK_MICROGRAPHS)
    ]

    def pick(m: Any) -> Any:
        return pick_blobs(m.image, pixel_size_A=PICK_PIXEL_A, diameter_range_A=(50.0, 80.0))

    def pick_all() -> list[Any]:
        return [pick(m) for m in micrographs]

    # A job's steady state: best of 5 calls after a warm-up (FFT plans and first-call costs
    # paid once); a single call moved by 30% between runs. Peak memory from one more call.
    seconds = best_time_s(pick_all, repeat=5)
    picks, _, peak_MB = timed(pick_all)
    scores = []
    for p, m in zip(picks, micrographs, strict=True):
        truth = m.truth.centres_px[:, ::-1]
        distance, nearest = cKDTree(truth).query(p.centres_px)
        matched = len(set(nearest[distance < 0.2 * PICK_DIAMETER_A / PICK_PIXEL_A].tolist()))
        scores.append(min(matched / max(len(p), 1), matched / len(truth)))
    roofline_s = len(micrographs) * rfft2_flops(2048, 2048) / (machine["fft_GFLOPs_2threads"] * 1e9)
    with tempfile.TemporaryDirectory() as folder:
        peer = peers.relion_autopick_log(
            [m.image for m in micrographs],
            [m.truth.centres_px[:, ::-1] for m in micrographs],
            Path(folder),
            pixel_size_A=PICK_PIXEL_A,
            diameter_range_A=(50.0, 80.0),
            match_radius_px=0.2 * PICK_DIAMETER_A / PICK_PIXEL_A,
        )
    return [
        Record(
            "preprocessing_picking/micrographs_per_minute",
            60.0 * len(micrographs) / seconds,
            "micrographs/min",
            ratio_to_limit=seconds / roofline_s,
            limit="one 2048^2 rfft2 at fft_GFLOPs_2threads",
            peer=peer.name,
            ratio_to_peer=None if peer.seconds is None else peer.seconds / seconds,
            accuracy=min(scores),
            accuracy_unit="worst min(precision, recall)",
            peak_memory_MB=peak_MB,
            notes=f"2048^2 at {PICK_PIXEL_A} A/px, SNR 0.05, carbon edge; peer: {peer.notes}",
            extra={"peer_accuracy": peer.accuracy, "peer_peak_rss_MB": peer.peak_MB},
        )
    ]
