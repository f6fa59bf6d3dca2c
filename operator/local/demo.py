"""``cryokube demo``: the whole pipeline on simulated movies, with every result against truth.

It simulates a phantom protein, micrographs of it at known defocus and positions, and counting
movies of those micrographs with known drift, gain and hot pixels (all seeded); writes them into
a project folder; applies the same kind of Project and Job manifests a cluster user writes
(``<state>/demo/pipeline.yaml``: import, motion correction, CTF, blob picking, extraction, 2D
classification, select 2D, ab-initio, homogeneous refinement); runs them to the end with progress
bars; and prints each job's key result beside the known truth.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from cryokube.operator.local.store import ResourceStore, load_manifests

NAMESPACE = "demo"


@dataclass(frozen=True)
class DemoSize:
    """How much data the demo simulates (``small`` is what the test runs)."""

    n_movies: int
    micrograph_px: int
    particles_per_micrograph: int
    box_px: int
    pixel_size_A: float
    n_frames: int
    dose_per_frame_e_per_A2: float
    num_classes: int


SIZES = {
    "small": DemoSize(4, 448, 16, 40, 2.5, 12, 1.5, 3),
    "default": DemoSize(10, 1024, 50, 48, 3.0, 20, 2.0, 6),
}

DEFOCI_A = (9000.0, 12000.0, 15000.0, 18000.0, 21000.0, 24000.0, 27000.0, 30000.0)


@dataclass
class MovieTruth:
    """One simulated exposure: its file, drift, CTF and particle centres."""

    path: str
    drift_yx_px: Any
    defocus_mean_A: float
    centres_yx_px: Any


@dataclass
class DemoTruth:
    """What the demo data were made from (physical units)."""

    pixel_size_A: float
    movies: list[MovieTruth]
    particle_diameter_A: float
    volume: Any

    @property
    def n_particles(self) -> int:
        return sum(len(m.centres_yx_px) for m in self.movies)


def simulate_project(root: Path, size: DemoSize) -> DemoTruth:
    """Write movies and a gain reference under ``root`` (``raw/``); return the truth."""
    from cryokube.processing.simulate import (
        phantom_volume,
        save_movie,
        simulate_micrograph,
        simulate_movie,
    )

    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    phantom = phantom_volume(size.box_px, size.pixel_size_A, seed=1)
    movies = []
    for index in range(size.n_movies):
        defocus = DEFOCI_A[index % len(DEFOCI_A)]
        micrograph = simulate_micrograph(
            phantom.volume, size.pixel_size_A,
            shape=(size.micrograph_px, size.micrograph_px),
            n_particles=size.particles_per_micrograph,
            defocus_u_A=defocus + 300.0, defocus_v_A=defocus - 300.0, astig_angle_deg=30.0,
            ice_texture=0.5, carbon_fraction=0.0, keep_clean=True, seed=100 + index,
        )  # fmt: skip
        assert micrograph.clean is not None
        movie = simulate_movie(
            micrograph.clean, pixel_size_A=size.pixel_size_A, n_frames=size.n_frames,
            dose_per_frame_e_per_A2=size.dose_per_frame_e_per_A2, seed=200 + index,
            gain_variation=0.0,  # one camera: every movie shares the gain written below
            image_contrast=0.1,  # more clips the particle cores at zero (simulate_movie)
        )  # fmt: skip
        path = f"raw/movie_{index:03d}.tif"
        save_movie(movie, root / path, gain_path=raw / "gain.mrc" if index == 0 else None)
        movies.append(
            MovieTruth(
                path=path,
                drift_yx_px=movie.truth.drift_px[:, ::-1],
                defocus_mean_A=defocus,
                centres_yx_px=micrograph.truth.centres_px[:, ::-1],
            )
        )
    return DemoTruth(
        pixel_size_A=size.pixel_size_A, movies=movies,
        particle_diameter_A=particle_diameter_A(phantom.volume, size.pixel_size_A),
        volume=phantom.volume,
    )  # fmt: skip


def particle_diameter_A(volume: Any, pixel_size_A: float) -> float:
    """Diameter of the density above 5% of its peak, about the box centre (Å)."""
    inside = np.argwhere(volume > 0.05 * volume.max())
    centre = (np.asarray(volume.shape) - 1) / 2
    return float(2 * np.linalg.norm(inside - centre, axis=1).max() * pixel_size_A)


def pipeline_manifest(root: Path, size: DemoSize, truth: DemoTruth) -> str:
    """The demo's Project and Jobs: the shape users ``kubectl apply`` in a cluster."""
    diameter = truth.particle_diameter_A
    return f"""\
apiVersion: cryokube.io/v1alpha1
kind: Project
metadata: {{name: demo, namespace: {NAMESPACE}}}
spec:
  storage: {{path: {root}}}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: movies, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: import_movies
  params: {{blob_paths: "raw/*.tif", gain_ref_path: raw/gain.mrc, psize_A: {size.pixel_size_A},
           accel_kv: 300, cs_mm: 2.7,
           total_dose_e_per_A2: {size.n_frames * size.dose_per_frame_e_per_A2}}}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: motion, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: motion_correction
  params: {{res_max_align: {max(5.0, 2.5 * size.pixel_size_A)}, bfactor: 500}}
  inputs: [{{job: movies, output: movies}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: ctf, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: ctf_estimation
  params: {{amp_contrast: 0.07, res_min_align: 30, res_max_align: {max(6.0, 2.5 * size.pixel_size_A)},
           box_size_pix: 128, df_search_min: 5000, df_search_max: 40000}}
  inputs: [{{job: motion, output: micrographs}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: picks, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: blob_picker
  params: {{diameter_min_A: {0.8 * diameter:.0f}, diameter_max_A: {1.2 * diameter:.0f},
           max_num_hits: {round(1.2 * size.particles_per_micrograph)}}}
  inputs: [{{job: ctf, output: micrographs}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: extract, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: extract_particles
  params: {{box_size_pix: {size.box_px}, flip_contrast: true}}
  inputs:
    - {{job: ctf, output: micrographs}}
    - {{job: picks, output: particles}}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: classes, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: classify_2d
  params: {{num_classes: {size.num_classes}, circular_mask_diameter_A: {diameter:.0f}}}
  inputs: [{{job: extract, output: particles}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: select, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: select_2d
  params: {{min_particles: 3, min_res_A: {8 * size.pixel_size_A:.0f}}}
  inputs:
    - {{job: classes, output: particles}}
    - {{job: classes, output: class_averages}}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: abinit, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: ab_initio
  params: {{num_classes: 1, abinit_num_init_iters: 20, abinit_num_final_iters: 30,
           abinit_init_res_A: 35, abinit_max_res_A: {max(12.0, 4 * size.pixel_size_A):.0f}}}
  inputs: [{{job: select, output: particles_selected}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: refine, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: homogeneous_refinement
  params: {{}}
  inputs:
    - {{job: select, output: particles_selected}}
    - {{job: abinit, output: volume}}
"""


def job_summaries(root: Path) -> dict[str, dict[str, Any]]:
    """Each finished job's main output summary (its first output group), from its manifest."""
    out: dict[str, dict[str, Any]] = {}
    for manifest in sorted(root.glob("*/manifest.json")):
        body = json.loads(manifest.read_text())
        groups = list(body["outputs"].values())
        out[body["job"]] = groups[0].get("summary", {}) if groups else {}
    return out


def _dataset(root: Path, job: str, group: str) -> Any:
    from cryokube.processing.datasets import concatenate, load_cs

    manifest = json.loads((root / job / "manifest.json").read_text())
    parts = [load_cs(root / key) for key in manifest["outputs"][group]["datasets"]]
    return parts[0] if len(parts) == 1 else concatenate(parts)


@dataclass
class Accuracy:
    """The demo's results against the truth, in physical units."""

    drift_rms_error_px: float
    defocus_mean_error_percent: float
    pick_precision: float
    pick_recall: float
    final_resolution_A: float
    map_truth_correlation: float
    nyquist_A: float


def accuracy(root: Path, truth: DemoTruth) -> Accuracy:
    """Compare the jobs' outputs with the simulation: trajectories, defocus, picks, map."""
    by_movie = {m.path: m for m in truth.movies}
    micrographs = _dataset(root, "ctf", "micrographs")
    movie_paths = micrographs.strings("movie_blob/path")
    errors, defocus_errors, micrograph_movie = [], [], {}
    for i, movie_path in enumerate(movie_paths):
        movie = by_movie[movie_path]
        trajectory = np.load(root / micrographs.strings("rigid_motion/path")[i])
        errors.append(np.sum((trajectory - movie.drift_yx_px) ** 2, axis=1))
        fitted = 0.5 * (micrographs["ctf/df1_A"][i] + micrographs["ctf/df2_A"][i])
        defocus_errors.append(abs(fitted / movie.defocus_mean_A - 1.0))
        micrograph_movie[micrographs.strings("micrograph_blob/path")[i]] = movie
    picks = _dataset(root, "picks", "particles")
    radius_px = 0.2 * truth.particle_diameter_A / truth.pixel_size_A
    matched, found = 0, 0
    for path, movie in micrograph_movie.items():
        rows = np.asarray([p == path for p in picks.strings("location/micrograph_path")])
        shape = picks["location/micrograph_shape"][rows]
        yx = np.stack(
            [picks["location/center_y_frac"][rows] * shape[:, 0],
             picks["location/center_x_frac"][rows] * shape[:, 1]], axis=1,
        )  # fmt: skip
        found += len(yx)
        if len(yx):
            d = np.linalg.norm(yx[:, None, :] - movie.centres_yx_px[None, :, :], axis=2)
            matched += int(np.sum(d.min(axis=0) <= radius_px))
    refine = job_summaries(root)["refine"]
    return Accuracy(
        drift_rms_error_px=float(np.sqrt(np.mean(np.concatenate(errors)))),
        defocus_mean_error_percent=100 * float(np.mean(defocus_errors)),
        pick_precision=min(1.0, matched / max(found, 1)),
        pick_recall=matched / max(truth.n_particles, 1),
        final_resolution_A=float(refine["resolution_A"]),
        map_truth_correlation=map_truth_correlation(root, truth),
        nyquist_A=2 * truth.pixel_size_A,
    )


def map_truth_correlation(root: Path, truth: DemoTruth) -> float:
    """Correlation of the refined map with the simulated volume, both low-passed to 20 A.

    Ab-initio builds the map in a frame and hand of its own, so the map is first superposed on
    the truth in the better hand (:func:`~cryokube.processing.algorithms.abinitio.choose_hand`,
    which reports this correlation). With the small demo's few dozen particles this is
    steadier than the gold-standard figure, whose half-set FSC crosses 0.143 at a shell that a
    small change in the data moves by several shells.
    """
    from cryokube.processing.algorithms.abinitio import choose_hand
    from cryokube.processing.io.mrc import read_mrc

    refined = _dataset(root, "refine", "volume")
    volume, _ = read_mrc(root / refined.strings("map/path")[0], mmap=False)
    hands = choose_hand(volume, truth.volume, pixel_size_A=truth.pixel_size_A)
    return max(hands.correlation, hands.mirror_correlation)


def report(summaries: dict[str, dict[str, Any]], result: Accuracy | None) -> list[str]:
    """One line per job with its key result, then the comparison with the truth."""
    lines = []
    for job, summary in summaries.items():
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items() if not isinstance(v, list))
        lines.append(f"{job:<8} {shown}")
    if result is not None:
        lines += [
            "against the truth of the simulation:",
            f"  motion: trajectory RMS error {result.drift_rms_error_px:.2f} px",
            f"  CTF: mean defocus error {result.defocus_mean_error_percent:.1f} %",
            (
                f"  picking: precision {result.pick_precision:.2f}, recall {result.pick_recall:.2f}"
                " (match radius 0.2 diameter)"
            ),
            (
                f"  refinement: gold-standard resolution {result.final_resolution_A:.1f} A "
                f"(FSC 0.143; Nyquist {result.nyquist_A:.1f} A), "
                f"correlation with the truth {result.map_truth_correlation:.2f} (at 20 A)"
            ),
        ]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(*, state: Path, size: str, slots: int, out: TextIO) -> int:
    """Simulate, apply and run the demo pipeline; print the results. Returns the exit code."""
    code, _ = run_demo(state=state, size=size, slots=slots, out=out)
    return code


def run_demo(*, state: Path, size: str, slots: int, out: TextIO) -> tuple[int, Accuracy | None]:
    """:func:`run`, also returning the comparison with the truth (None if a job failed)."""
    from cryokube.operator.cli import run_until_idle

    chosen = SIZES[size]
    root = (state / "demo" / "project").resolve()
    t0 = time.perf_counter()
    out.write(f"simulating {chosen.n_movies} movies ({chosen.n_frames} frames of "
              f"{chosen.micrograph_px}^2 px) into {root} ...\n")  # fmt: skip
    out.flush()
    truth = simulate_project(root, chosen)
    manifest = state / "demo" / "pipeline.yaml"
    manifest.write_text(pipeline_manifest(root, chosen, truth))
    store = ResourceStore(state)
    for document in load_manifests([manifest]):
        store.apply(document)
    out.write(f"applied {manifest}\n")
    rows = asyncio.run(run_until_idle(store, state, slots=slots, out=out))
    failed = [r for r in rows if r["phase"] != "Succeeded"]
    result = None if failed else accuracy(root, truth)
    out.write("\nresults:\n")
    out.writelines(f"  {line}\n" for line in report(job_summaries(root), result))
    out.writelines(f"  {r['name']}: {r['phase']} ({r['reason']}): {r['message']}\n" for r in failed)
    out.write(
        f"\ndone in {time.perf_counter() - t0:.0f} s; logs: cryokube --state {state} logs JOB; "
        f"console: cryokube --state {state} up\n"
    )
    return (1 if failed else 0), result
