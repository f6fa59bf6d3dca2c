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
    "small": DemoSize(3, 512, 12, 48, 3.0, 12, 1.5, 4),
    "default": DemoSize(8, 1024, 40, 64, 2.5, 20, 1.2, 8),
}

DEFOCI_A = (9000.0, 12000.0, 15000.0, 18000.0, 21000.0, 24000.0, 27000.0, 30000.0)


@dataclass
class DemoTruth:
    """What the demo data were made from (physical units)."""

    pixel_size_A: float
    defocus_A: list[float]
    drift_total_px: list[float]
    n_particles: int
    particle_diameter_A: float
    volume: Any


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
    defoci, drifts = [], []
    n_particles = 0
    for index in range(size.n_movies):
        defocus = DEFOCI_A[index % len(DEFOCI_A)]
        micrograph = simulate_micrograph(
            phantom.volume, size.pixel_size_A,
            shape=(size.micrograph_px, size.micrograph_px),
            n_particles=size.particles_per_micrograph,
            defocus_u_A=defocus + 300.0, defocus_v_A=defocus - 300.0, astig_angle_deg=30.0,
            carbon_fraction=0.0, keep_clean=True, seed=100 + index,
        )  # fmt: skip
        assert micrograph.clean is not None
        movie = simulate_movie(
            micrograph.clean, pixel_size_A=size.pixel_size_A, n_frames=size.n_frames,
            dose_per_frame_e_per_A2=size.dose_per_frame_e_per_A2, seed=200 + index,
        )  # fmt: skip
        save_movie(
            movie, raw / f"movie_{index:03d}.tif",
            gain_path=raw / "gain.mrc" if index == 0 else None,
        )  # fmt: skip
        defoci.append(defocus)
        path = np.diff(movie.truth.drift_px, axis=0)
        drifts.append(float(np.linalg.norm(path, axis=1).sum()))
        n_particles += len(micrograph.truth.centres_px)
    return DemoTruth(
        pixel_size_A=size.pixel_size_A, defocus_A=defoci, drift_total_px=drifts,
        n_particles=n_particles, particle_diameter_A=0.8 * size.box_px * size.pixel_size_A,
        volume=phantom.volume,
    )  # fmt: skip


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
  params: {{amp_contrast: 0.07, res_max_align: {max(5.0, 2.5 * size.pixel_size_A)}}}
  inputs: [{{job: motion, output: micrographs}}]
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {{name: picks, namespace: {NAMESPACE}}}
spec:
  project: demo
  type: blob_picker
  params: {{diameter_min_A: {0.7 * diameter:.0f}, diameter_max_A: {1.1 * diameter:.0f},
           max_num_hits: {2 * size.particles_per_micrograph}}}
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
  params: {{}}
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
  params: {{num_classes: 1}}
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
    """Each finished job's output summaries, from its manifest."""
    out: dict[str, dict[str, Any]] = {}
    for manifest in sorted(root.glob("*/manifest.json")):
        body = json.loads(manifest.read_text())
        merged: dict[str, Any] = {}
        for group in body["outputs"].values():
            merged.update(group.get("summary", {}))
        out[body["job"]] = merged
    return out


def report(summaries: dict[str, dict[str, Any]], truth: DemoTruth) -> list[str]:
    """One line per job: its key result, and the truth where one is known."""
    lines = []
    truth_notes = {
        "movies": f"truth: {len(truth.drift_total_px)} movies",
        "motion": f"truth: mean total drift {np.mean(truth.drift_total_px):.2f} px",
        "ctf": f"truth: defocus {min(truth.defocus_A):.0f}-{max(truth.defocus_A):.0f} A",
        "picks": f"truth: {truth.n_particles} particles",
    }
    for job, summary in summaries.items():
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items() if not isinstance(v, list))
        note = truth_notes.get(job, "")
        lines.append(f"{job:<10} {shown}" + (f"   [{note}]" if note else ""))
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(*, state: Path, size: str, slots: int, out: TextIO) -> int:
    """Simulate, apply and run the demo pipeline; print the results. Returns the exit code."""
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
    out.write("\nresults:\n")
    out.writelines(f"  {line}\n" for line in report(job_summaries(root), truth))
    failed = [r for r in rows if r["phase"] != "Succeeded"]
    out.writelines(f"  {r['name']}: {r['phase']} ({r['reason']}): {r['message']}\n" for r in failed)
    out.write(
        f"\ndone in {time.perf_counter() - t0:.0f} s; logs: cryokube --state {state} logs JOB; "
        f"console: cryokube --state {state} up\n"
    )
    return 1 if failed else 0
