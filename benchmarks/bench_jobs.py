"""What the job wrapper costs on top of the algorithms it calls: motion correction per movie.

Two simulated counting movies (1024 x 1024 x 20 frames, 1 A/px, with a gain reference and hot
pixels) are imported, then motion-corrected by ``cryokube-worker run`` as a pod runs it:
process start, input resolution, gain and defect correction, alignment, MRC and trajectory
output, per-movie checkpoints, the dataset and the manifest. The peer is the same work as bare
in-process calls (``read_movie`` with ``FrameCorrection``, ``align_movie``, ``write_mrc``) on the
same files, so ``ratio_to_peer`` = bare time / job time is the fraction of the job's time spent
in the science (1 means no overhead). Wall times on this machine; both run in the same process
environment (``CRYOKUBE_DEVICE=cpu``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryokube.processing.algorithms.motion import align_movie
from cryokube.processing.io.gain import FrameCorrection, find_defects, load_gain
from cryokube.processing.io.movies import read_movie
from cryokube.processing.io.mrc import write_mrc
from cryokube.processing.simulate import save_movie, simulate_movie
from harness import Record, benchmark

N_MOVIES = 2
SHAPE = (1024, 1024)
N_FRAMES = 20
PIXEL_A = 1.0
DOSE_E_PER_A2 = 1.0
MOTION_PARAMS = {"res_max_align": 5.0}
WORKER = str(Path(sys.executable).with_name("cryokube-worker"))


def _worker(
    root: Path, job: str, job_type: str, params: dict[str, object], inputs: list[str]
) -> float:
    """Run one job with the real worker; return its wall time (s)."""
    env = {
        **os.environ,
        "CRYOKUBE_PROJECT": "bench",
        "CRYOKUBE_JOB": job,
        "CRYOKUBE_JOB_UID": f"uid-{job}",
        "CRYOKUBE_JOB_TYPE": job_type,
        "CRYOKUBE_PARAMS": json.dumps(params),
        "CRYOKUBE_INPUTS": json.dumps(
            [dict(zip(("job", "output"), ref.split("/"), strict=True)) for ref in inputs]
        ),
        "CRYOKUBE_STORAGE_ROOT": str(root),
        "CRYOKUBE_DEVICE": "cpu",
    }
    t0 = time.perf_counter()
    result = subprocess.run([WORKER, "run"], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{job_type} failed: {result.stderr[-2000:]}")
    return elapsed


def _bare(root: Path, out: Path) -> float:
    """The same motion correction as in-process calls; return the wall time (s)."""
    t0 = time.perf_counter()
    gain = load_gain(root / "gain.mrc")
    for i in range(N_MOVIES):
        raw = read_movie(root / "movies" / f"m{i}.tif")
        correction = FrameCorrection(gain=gain, defects=find_defects(raw.sum(axis=0) * gain))
        frames = correction.apply(raw)
        result = align_movie(
            frames,
            pixel_size_A=PIXEL_A,
            dose_per_frame_e_per_A2=DOSE_E_PER_A2,
            max_resolution_A=MOTION_PARAMS["res_max_align"],
            bfactor_A2=500.0,
            local_bfactor_A2=500.0,
            patch_grid=None,
        )
        write_mrc(out / f"m{i}_dw.mrc", result.micrograph, pixel_size_A=PIXEL_A)
        write_mrc(out / f"m{i}.mrc", result.micrograph_plain, pixel_size_A=PIXEL_A)
        np.save(out / f"m{i}_traj.npy", result.global_shifts_px)
    return time.perf_counter() - t0


@benchmark("jobs_motion_overhead")
def bench_motion_job(limits: dict[str, float]) -> list[Record]:
    del limits  # the reference is the bare algorithm calls, measured below
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(tmp) / "project"
        (root / "movies").mkdir(parents=True)
        truths = []
        for i in range(N_MOVIES):
            movie = simulate_movie(
                shape=SHAPE,
                pixel_size_A=PIXEL_A,
                n_frames=N_FRAMES,
                dose_per_frame_e_per_A2=DOSE_E_PER_A2,
                total_drift_px=8.0,
                local_drift_px=0.0,
                seed=3,  # one camera: one gain reference for both movies
            )
            save_movie(movie, root / "movies" / f"m{i}.tif", gain_path=root / "gain.mrc")
            truths.append(movie.truth.drift_px[:, ::-1])
        _worker(
            root,
            "import",
            "import_movies",
            {
                "blob_paths": "movies/*.tif",
                "gain_ref_path": "gain.mrc",
                "psize_A": PIXEL_A,
                "total_dose_e_per_A2": DOSE_E_PER_A2 * N_FRAMES,
            },
            [],
        )
        job_s = _worker(root, "motion", "motion_correction", MOTION_PARAMS, ["import/movies"])
        (root / "bare").mkdir()
        bare_s = min(_bare(root, root / "bare") for _ in range(2))
        rms = [
            float(np.sqrt(np.mean(np.sum((np.load(p) - truth) ** 2, axis=1))))
            for p, truth in zip(
                sorted((root / "motion" / "motioncorrected").glob("*_traj_px.npy")),
                truths,
                strict=True,
            )
        ]
    return [
        Record(
            name="jobs_motion_overhead",
            value=job_s / N_MOVIES,
            unit="s/movie",
            peer="bare in-process algorithm calls on the same files",
            ratio_to_peer=bare_s / job_s,
            accuracy=max(rms),
            accuracy_unit="px RMS trajectory error (worst movie)",
            notes=(
                f"{N_MOVIES} movies {SHAPE[1]}x{SHAPE[0]}x{N_FRAMES} LZW TIFF; job includes "
                "process start, checkpoints, dataset and manifest"
            ),
        )
    ]
