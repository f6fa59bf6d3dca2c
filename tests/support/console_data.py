"""A small finished pipeline for the console tests: simulated data, real output files, manifests.

:func:`write_pipeline` writes, under a project root, the outputs five finished jobs would leave
(motion, CTF, picking, 2D classes, refinement) in the layout the worker runtime writes: job
folders with ``manifest.json`` last, ``.cs`` datasets, MRC files and ``.npy`` arrays. The truth
(particle centres, FSC crossing) is returned so tests can check what the console draws.
:func:`register_pipeline` registers the same jobs in a running metadata service and finishes
them through the worker RPC, as the operator and the workers would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryokube.processing.ctf import ctf_radial
from cryokube.processing.datasets import Dataset, save_cs
from cryokube.processing.io import write_mrc
from cryokube.processing.simulate import phantom_volume, simulate_micrograph
from cryokube.processing.worker.manifest import FileEntry, GroupEntry, JobManifest

from support.metadata_app import OPERATOR, worker

PIXEL_SIZE_A = 2.0
BOX_PX = 32
FSC_RESOLUTION_A = 8.0


@dataclass(frozen=True)
class PipelineJob:
    """A job of the test pipeline: name, type, upstream ``(job, output)`` edges."""

    name: str
    job_type: str
    inputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PipelineTruth:
    """What the files encode: the picks (px) of the first micrograph and the FSC resolution."""

    jobs: tuple[PipelineJob, ...]
    picks_xy_px: np.ndarray
    micrograph_shape: tuple[int, int]
    fsc_resolution_A: float


JOBS = (
    PipelineJob("motion-1", "motion_correction", ()),
    PipelineJob("ctf-1", "ctf_estimation", (("motion-1", "micrographs"),)),
    PipelineJob("picks-1", "blob_picker", (("ctf-1", "micrographs"),)),
    PipelineJob("classes-1", "classify_2d", (("picks-1", "particles"),)),
    PipelineJob("refine-1", "homogeneous_refinement", (("classes-1", "particles"),)),
)


def _entry(root: Path, key: str) -> FileEntry:
    data = (root / key).read_bytes()
    return FileEntry(path=key, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _npy(root: Path, key: str, array: np.ndarray) -> FileEntry:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    np.save(root / key, array)
    return _entry(root, key)


def _mrc(root: Path, key: str, array: np.ndarray, *, stack: bool = False) -> FileEntry:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    write_mrc(root / key, array.astype(np.float32), pixel_size_A=PIXEL_SIZE_A, stack=stack)
    return _entry(root, key)


def _cs(root: Path, key: str, columns: dict[str, Any]) -> str:
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    save_cs(Dataset.from_columns(columns, seed=1), root / key)
    return key


def _manifest(
    root: Path, job: PipelineJob, groups: list[GroupEntry], params: dict[str, Any]
) -> None:
    manifest = JobManifest(
        project="apo", job=job.name, job_uid=f"uid-{job.name}", job_type=job.job_type,
        params=params, inputs=[{"job": j, "output": o} for j, o in job.inputs],
        outputs={g.name: g for g in groups},
    )  # fmt: skip
    (root / job.name / "manifest.json").write_text(manifest.model_dump_json())


def write_pipeline(root: Path) -> PipelineTruth:
    """Write the five jobs' outputs under ``root``; return the truth they encode."""
    phantom = phantom_volume(BOX_PX, PIXEL_SIZE_A, seed=3)
    volume = np.asarray(phantom.volume, np.float32)
    mic = simulate_micrograph(
        volume, PIXEL_SIZE_A, shape=(256, 256), n_particles=6, carbon_fraction=0.0, seed=4
    )
    rng = np.random.default_rng(5)
    motion, ctf, picks, classes, refine = JOBS

    mic_key = "motion-1/micrographs/mic_0001.mrc"
    frames = np.arange(12, dtype=np.float64)
    trajectories = [np.stack([0.4 * frames + i, -0.2 * frames**1.2], axis=1) for i in range(3)]
    files = [_mrc(root, mic_key, mic.image)]
    files += [
        _npy(root, f"motion-1/micrographs/mic_{i + 1:04d}_traj_px.npy", t)
        for i, t in enumerate(trajectories)
    ]
    _manifest(
        root,
        motion,
        [GroupEntry(name="micrographs", kind="micrographs", files=files, n_items=3)],
        {},
    )

    n_mics = 40
    df1 = rng.normal(15000.0, 2500.0, n_mics)
    columns = {
        "ctf/df1_A": df1.astype(np.float32), "ctf/df2_A": (df1 - 300).astype(np.float32),
        "ctf/ctf_fit_to_A": np.full(n_mics, 4.5, np.float32),
    }  # fmt: skip
    freq = np.linspace(1 / 50, 1 / 4.2, 200)
    ctf_1d = ctf_radial(freq, defocus_A=15000.0, voltage_kV=300.0, cs_mm=2.7, amp_contrast=0.07)
    model = np.asarray(ctf_1d, np.float64) ** 2
    measured = model + rng.normal(0.0, 0.05, freq.size)
    fit = _npy(root, "ctf-1/micrographs/mic_0001_ctf_fit.npy", np.stack([freq, measured, model]))
    dataset = _cs(root, "ctf-1/micrographs.cs", columns)
    _manifest(
        root, ctf,
        [GroupEntry(name="micrographs", kind="micrographs", datasets=[dataset], files=[fit], n_items=n_mics)],
        {"res_max_align": 4.5},
    )  # fmt: skip

    centres = mic.truth.centres_px
    ny, nx = mic.image.shape
    n = centres.shape[0]
    particles = _cs(root, "picks-1/particles.cs", {
        "location/micrograph_path": np.asarray([mic_key] * n, dtype="S"),
        "location/micrograph_shape": np.tile(np.asarray([ny, nx], np.uint32), (n, 1)),
        "location/center_x_frac": (centres[:, 0] / nx).astype(np.float32),
        "location/center_y_frac": (centres[:, 1] / ny).astype(np.float32),
    })  # fmt: skip
    _manifest(
        root, picks, [GroupEntry(name="particles", kind="particles", datasets=[particles], n_items=n)],
        {"box_size_pix": BOX_PX},
    )  # fmt: skip

    averages = np.stack([volume.sum(axis=k) for k in range(3)] + [volume.sum(axis=0).T])
    stack = _mrc(root, "classes-1/class_averages.mrcs", averages, stack=True)
    _manifest(root, classes, [GroupEntry(
        name="class_averages", kind="templates", files=[stack], n_items=4,
        summary={"class_sizes": [120, 340, 75, 12]},
    )], {})  # fmt: skip

    shells = np.arange(1, 17) / (BOX_PX * PIXEL_SIZE_A)
    # A logistic fall-off through exactly 0.143 at 1/FSC_RESOLUTION_A (a shell frequency).
    logit = np.log(1 / 0.143 - 1)
    curve = 1.0 / (1.0 + np.exp((shells - 1.0 / FSC_RESOLUTION_A) * 120.0 + logit))
    fsc = _npy(root, "refine-1/volume_fsc.npy", np.stack([shells, curve]))
    vol = _mrc(root, "refine-1/volume.mrc", volume)
    _manifest(
        root, refine, [GroupEntry(name="volume", kind="volume", files=[vol, fsc], n_items=1)], {}
    )
    return PipelineTruth(JOBS, centres, (ny, nx), FSC_RESOLUTION_A)


async def register_pipeline(api: Any, project: str = "apo") -> dict[str, str]:
    """Register :data:`JOBS` in ``project`` through the API and finish them over the worker RPC.

    ``api`` is an aiohttp test client of the service. Returns the job UIDs by name.
    """
    uids = {}
    for job in JOBS:
        uid = f"uid-{job.name}"
        body = {
            "uid": uid, "name": job.name, "project": project, "job_type": job.job_type,
            "inputs": [{"job": j, "output": o} for j, o in job.inputs],
        }  # fmt: skip
        resp = await api.post("/api/v1/jobs", json=body, headers=OPERATOR)
        assert resp.status == 201, await resp.text()
        w = worker(project, uid)
        rpc = f"/rpc/v1/jobs/{uid}"
        assert (await api.post(f"{rpc}/heartbeat", json={"node": "gpu-1"}, headers=w)).status == 200
        event = {"seq": 0, "message": f"{job.job_type} started"}
        assert (await api.post(f"{rpc}/events", json=event, headers=w)).status == 201
        done = {"succeeded": True, "message": "done"}
        assert (await api.post(f"{rpc}/complete", json=done, headers=w)).status == 200
        uids[job.name] = uid
    return uids
