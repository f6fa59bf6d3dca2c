"""Iteration checkpoints: a long job stopped after iteration k resumes and ends as if never stopped.

Each job runs once straight through (the real worker process) and once in this process with a
zero checkpoint interval, stopped by its progress report of iteration ``k`` (the report comes
after the checkpoint is written, as a pod killed there would leave it); the retried pod is the
real worker process again. Tiny simulated particles (box 32 px at 4 A/px) keep each run to
seconds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryokube.processing.algorithms.class2d import Class2DState
from cryokube.processing.datasets import Dataset, load_cs, save_cs
from cryokube.processing.io.mrc import read_mrc, write_mrc
from cryokube.processing.jobs import get as get_job_type
from cryokube.processing.jobs._checkpoint import CHECKPOINT_NAME, Checkpoint
from cryokube.processing.simulate import phantom_volume, simulate_particles
from cryokube.processing.storage import PosixStorage, S3Storage, Storage
from cryokube.processing.worker.context import JobContext, ResolvedInput, scratch_dir
from cryokube.processing.worker.manifest import JobManifest
from cryokube.processing.worker.reporter import Reporter
from cryokube.processing.worker.runtime import EXIT_TRANSIENT, resolve_inputs
from cryokube.processing.worker.settings import SettingsError, WorkerSettings, settings_from_env
from test_jobs_reconstruction import BOX_PX, PIXEL_SIZE_A, manifest, run_ok, write_stacks
from test_storage import s3_with_iam
from test_worker_runtime import run_worker

PARTICLES = [{"job": "import", "output": "particles"}]
CLASSIFY = {
    "num_classes": 3,
    "max_res_A": 12.0,
    "num_online_em_iters": 4,
    "batch_size_per_class": 20,
    "num_final_full_iters": 2,
}
REFINE = {"refine_res_init_A": 30.0, "refine_num_final_iterations": 0}
REFINE_INPUTS = [*PARTICLES, {"job": "truth", "output": "volume"}]
ABINITIO = {
    "num_classes": 2,
    "abinit_init_res_A": 35.0,
    "abinit_max_res_A": 16.0,
    "abinit_num_init_iters": 1,
    "abinit_num_final_iters": 2,
    "abinit_minisize": 10,
}


class Stopped(Exception):
    """The job was stopped at an iteration, as a killed pod stops."""


class StopAt(Reporter):
    """A spool-only reporter that stops the job when it reports progress ``message``."""

    def __init__(self, spool_dir: Path, job_uid: str, message: str) -> None:
        super().__init__(spool_dir, url=None, job_uid=job_uid, token=None)
        self.message = message

    def progress(self, fraction: float, message: str = "") -> int:
        seq = super().progress(fraction, message)
        if message == self.message:
            raise Stopped(message)
        return seq


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 particles in random views imported from .cs, and the true map imported."""
    root = tmp_path_factory.mktemp("checkpoints") / "project"
    volume = np.asarray(phantom_volume(BOX_PX, PIXEL_SIZE_A, seed=1).volume, np.float32)
    stack = simulate_particles(volume, PIXEL_SIZE_A, 160, snr=1.0, seed=3)
    names = write_stacks(root, "raw", stack.images, 1)
    n = len(stack.images)
    t = stack.truth
    save_cs(
        Dataset.from_columns(
            {
                "blob/path": [names[0]] * n,
                "blob/idx": np.arange(n, dtype=np.uint32),
                "blob/psize_A": np.full(n, PIXEL_SIZE_A, np.float32),
                "blob/sign": np.full(n, -1.0, np.float32),  # raw contrast: protein dark
                "ctf/df1_A": t.defocus_u_A.astype(np.float32),
                "ctf/df2_A": t.defocus_v_A.astype(np.float32),
                "ctf/df_angle_rad": np.radians(t.astig_angle_deg).astype(np.float32),
                "ctf/amp_contrast": np.full(n, t.amp_contrast, np.float32),
            },
            seed=0,
        ),
        root / "raw" / "particles.cs",
    )
    run_ok(root, "import", "import_particles", {"particle_meta_path": "raw/particles.cs"})
    write_mrc(root / "raw" / "truth.mrc", volume, pixel_size_A=PIXEL_SIZE_A)
    run_ok(root, "truth", "import_volume", {"volume_blob_path": "raw/truth.mrc"})
    return root


def spool(root: Path, job: str) -> list[dict[str, Any]]:
    path = root / job / ".cryokube" / "reports-0" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_until(
    root: Path,
    job: str,
    job_type: str,
    params: dict[str, Any],
    inputs: list[dict[str, str]],
    stop_message: str,
) -> None:
    """Run ``job`` in this process, checkpointing every iteration, until it reports
    ``stop_message``; the spool is the one the worker process uses."""
    settings = WorkerSettings(
        project="apoferritin",
        job=job,
        job_uid=f"uid-{job}",
        job_type=job_type,
        params=params,
        inputs=inputs,
        storage_root=str(root),
        device="cpu",
    )
    storage = PosixStorage(root)
    job_def = settings.job_type_def
    reporter = StopAt(root / job / ".cryokube" / "reports-0", settings.job_uid, stop_message)
    with scratch_dir() as scratch:
        ctx = JobContext(
            job_type=job_def,
            params=job_def.params.model_validate(params),
            job=job,
            job_uid=settings.job_uid,
            project=settings.project,
            inputs=resolve_inputs(settings, storage),
            storage=storage,
            reporter=reporter,
            scratch=scratch,
            checkpoint_interval_s=0.0,
        )
        assert job_def.run is not None
        with pytest.raises(Stopped):
            job_def.run(ctx)
    reporter.close()


def stop_and_resume(
    root: Path,
    job: str,
    job_type: str,
    params: dict[str, Any],
    inputs: list[dict[str, str]],
    *,
    iteration: int,
    n_iterations: int,
) -> None:
    """Stop ``job`` after ``iteration``, retry it as a worker process, check the resume.

    The retry logs the resume, reports progress from the resumed iteration's fraction on
    (after reading the particles) and never backwards, and removes the checkpoint.
    """
    checkpoint = root / job / CHECKPOINT_NAME
    run_until(root, job, job_type, params, inputs, f"iteration {iteration}/{n_iterations}")
    assert checkpoint.is_file()
    assert not (root / job / "manifest.json").exists()
    before = len(spool(root, job))
    result = run_worker(root, job, job_type, params, inputs)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not checkpoint.exists()
    retry = spool(root, job)[before:]
    logs = [e["body"]["message"] for e in retry if e["endpoint"] == "events"]
    assert any(f"resuming after iteration {iteration}/{n_iterations}" in m for m in logs), logs
    progress = [
        e["body"]
        for e in retry
        if e["endpoint"] == "progress" and not e["body"]["message"].startswith("read ")
    ]
    assert progress[0]["fraction"] == pytest.approx(0.1 + 0.8 * iteration / n_iterations)
    assert progress[0]["message"].endswith(f"resumed after {iteration}/{n_iterations}")
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


@pytest.mark.slow
def test_classify_2d_resumed_after_iteration_3_ends_as_run_straight(project: Path) -> None:
    root = project
    run_ok(root, "classes-a", "classify_2d", CLASSIFY, PARTICLES)
    stop_and_resume(
        root, "classes-b", "classify_2d", CLASSIFY, PARTICLES, iteration=3, n_iterations=6
    )
    straight, resumed = (manifest(root, job)["outputs"] for job in ("classes-a", "classes-b"))
    assert resumed["class_averages"]["summary"] == straight["class_averages"]["summary"]
    np.testing.assert_allclose(
        read_mrc(root / "classes-b" / "class_averages.mrcs")[0],
        read_mrc(root / "classes-a" / "class_averages.mrcs")[0],
        rtol=1e-5,
        atol=1e-6,
    )
    a, b = (load_cs(root / job / "particles.cs") for job in ("classes-a", "classes-b"))
    np.testing.assert_array_equal(b["alignments2D/class"], a["alignments2D/class"])
    for column in ("pose", "shift", "class_posterior"):
        np.testing.assert_allclose(
            b[f"alignments2D/{column}"], a[f"alignments2D/{column}"], rtol=1e-5, atol=1e-6
        )
    for group in ("particles", "class_averages"):
        paths = [f["path"] for f in resumed[group]["files"]]
        assert not any("checkpoints" in p for p in paths), paths


@pytest.mark.slow
def test_classify_2d_ignores_a_corrupt_checkpoint_and_starts_over(project: Path) -> None:
    root = project
    checkpoint = root / "classes-c" / CHECKPOINT_NAME
    run_until(root, "classes-c", "classify_2d", CLASSIFY, PARTICLES, "iteration 2/6")
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the zip member's CRC no longer matches
    checkpoint.write_bytes(bytes(data))
    before = len(spool(root, "classes-c"))
    result = run_worker(root, "classes-c", "classify_2d", CLASSIFY, PARTICLES)
    assert result.returncode == 0, result.stderr[-3000:]
    retry = spool(root, "classes-c")[before:]
    warnings = [
        e["body"]["message"]
        for e in retry
        if e["endpoint"] == "events" and e["body"]["level"] == "warning"
    ]
    assert any("it is unreadable" in m and "starting over" in m for m in warnings), warnings
    progress = [e["body"] for e in retry if e["endpoint"] == "progress"]
    assert not any("resumed" in p["message"] for p in progress)
    assert not checkpoint.exists()


@pytest.mark.slow
def test_refinement_resumed_after_iteration_2_ends_as_run_straight(project: Path) -> None:
    root = project
    run_ok(root, "refine-a", "homogeneous_refinement", REFINE, REFINE_INPUTS)
    stop_and_resume(
        root,
        "refine-b",
        "homogeneous_refinement",
        REFINE,
        REFINE_INPUTS,
        iteration=2,
        n_iterations=4,
    )
    straight, resumed = (manifest(root, job)["outputs"] for job in ("refine-a", "refine-b"))
    assert resumed["volume"]["summary"] == straight["volume"]["summary"]
    for name in ("volume.mrc", "volume_half_A.mrc", "volume_half_B.mrc"):
        np.testing.assert_allclose(
            read_mrc(root / "refine-b" / name)[0],
            read_mrc(root / "refine-a" / name)[0],
            rtol=1e-5,
            atol=1e-6,
        )
    a, b = (load_cs(root / job / "particles.cs") for job in ("refine-a", "refine-b"))
    np.testing.assert_array_equal(b["alignments3D/split"], a["alignments3D/split"])
    for column in ("pose", "shift"):
        np.testing.assert_allclose(
            b[f"alignments3D/{column}"], a[f"alignments3D/{column}"], rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_ab_initio_resumed_after_iteration_1_ends_as_run_straight(project: Path) -> None:
    """Two classes, so that the class priors and the final class pass depend on the state."""
    root = project
    run_ok(root, "abinit-a", "ab_initio", ABINITIO, PARTICLES)
    stop_and_resume(root, "abinit-b", "ab_initio", ABINITIO, PARTICLES, iteration=1, n_iterations=3)
    straight, resumed = (manifest(root, job)["outputs"] for job in ("abinit-a", "abinit-b"))
    assert resumed["volume"]["summary"] == straight["volume"]["summary"]
    for name in ("volume_class_00.mrc", "volume_class_01.mrc"):
        np.testing.assert_allclose(
            read_mrc(root / "abinit-b" / name)[0],
            read_mrc(root / "abinit-a" / name)[0],
            rtol=1e-5,
            atol=1e-6,
        )
    a, b = (load_cs(root / job / "particles.cs") for job in ("abinit-a", "abinit-b"))
    np.testing.assert_array_equal(b["alignments3D/class"], a["alignments3D/class"])
    np.testing.assert_allclose(
        b["alignments3D/class_posterior"], a["alignments3D/class_posterior"], rtol=1e-5, atol=1e-6
    )
    for group in ("particles", "volume"):
        paths = [f["path"] for f in resumed[group]["files"]]
        assert not any("checkpoints" in p for p in paths), paths


@pytest.mark.slow
@pytest.mark.parametrize(("interval_s", "saved"), [("0", True), ("3600", False)])
def test_the_worker_reads_the_checkpoint_interval_from_the_environment(
    project: Path, interval_s: str, saved: bool
) -> None:
    """A worker whose publishing fails (a folder in the way of its class averages) keeps the
    checkpoint of its last iteration with CRYOKUBE_CHECKPOINT_INTERVAL_S=0, and has written
    none an hour apart."""
    job = f"classes-every-{interval_s}s"
    (project / job / "class_averages.mrcs").mkdir(parents=True)
    result = run_worker(
        project, job, "classify_2d", CLASSIFY, PARTICLES, CRYOKUBE_CHECKPOINT_INTERVAL_S=interval_s
    )
    assert result.returncode == EXIT_TRANSIENT, result.stderr[-3000:]
    checkpoint = project / job / CHECKPOINT_NAME
    assert checkpoint.is_file() is saved
    if saved:
        with np.load(checkpoint) as npz:
            meta = json.loads(npz["__checkpoint__"].tobytes())
        assert meta["values"]["iteration"] == 5  # of 6: the last one is never saved


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_checkpoint_interval_names_the_variable(value: str) -> None:
    env = {
        "CRYOKUBE_PROJECT": "p",
        "CRYOKUBE_JOB": "classes",
        "CRYOKUBE_JOB_UID": "uid-classes",
        "CRYOKUBE_JOB_TYPE": "classify_2d",
        "CRYOKUBE_STORAGE_ROOT": "/data",
    }
    assert settings_from_env(env).checkpoint_interval_s == 60.0
    assert settings_from_env(
        {**env, "CRYOKUBE_CHECKPOINT_INTERVAL_S": "0.5"}
    ).checkpoint_interval_s == pytest.approx(0.5)
    with pytest.raises(SettingsError, match=r"^CRYOKUBE_CHECKPOINT_INTERVAL_S: "):
        settings_from_env({**env, "CRYOKUBE_CHECKPOINT_INTERVAL_S": value})


# -- the checkpoint file itself ------------------------------------------------------------


def context(
    root: Path,
    params: dict[str, Any],
    upstream_uid: str = "uid-import",
    storage: Storage | None = None,
) -> JobContext:
    """A classify_2d context whose particles come from a (manifest-only) upstream job; its
    folder is ``classes`` in ``storage`` (default: ``root``)."""
    job_type = get_job_type("classify_2d")
    upstream = JobManifest(
        project="p",
        job="import",
        job_uid=upstream_uid,
        job_type="import_particles",
        params={},
        inputs=[],
        outputs={},
        finished_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    return JobContext(
        job_type=job_type,
        params=job_type.params.model_validate(params),
        job="classes",
        job_uid="uid-classes",
        project="p",
        inputs={"particles": [ResolvedInput("particles", "import", "particles", upstream)]},
        storage=PosixStorage(root) if storage is None else storage,
        reporter=Reporter(root / "spool", url=None, job_uid="uid-classes", token=None),
        scratch=root / "scratch",
        checkpoint_interval_s=0.0,
    )


def state(iteration: int = 2) -> Class2DState:
    rng = np.random.default_rng(7)
    rng.random(3)
    return Class2DState(
        iteration=iteration,
        references=np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4),
        sigma2=np.linspace(1.0, 2.0, 3, dtype=np.float32),
        log_prior=np.log(np.full(2, 0.5, np.float32)),
        running_data=None,
        running_weight=None,
        log_likelihood=[-1.5, -1.25],
        rng_state=dict(rng.bit_generator.state),
    )


def warnings_of(ctx: JobContext) -> list[str]:
    path = ctx.reporter.spool_dir / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        e["body"]["message"]
        for e in map(json.loads, lines)
        if e["endpoint"] == "events" and e["body"]["level"] == "warning"
    ]


def test_a_saved_state_reads_back_exactly(tmp_path: Path) -> None:
    ctx = context(tmp_path, CLASSIFY)
    checkpoint = Checkpoint(ctx, Class2DState, n_iterations=6)
    saved = state()
    checkpoint.save(saved)
    loaded = checkpoint.load()
    assert loaded is not None
    for name in ("references", "sigma2", "log_prior"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
        assert getattr(loaded, name).dtype == np.float32
    assert (loaded.iteration, loaded.running_data, loaded.running_weight) == (2, None, None)
    assert loaded.log_likelihood == saved.log_likelihood
    # the generator continues with the same numbers
    resumed = np.random.Generator(np.random.PCG64())
    resumed.bit_generator.state = loaded.rng_state
    original = np.random.default_rng(7)
    original.random(3)
    np.testing.assert_array_equal(resumed.random(5), original.random(5))
    assert warnings_of(ctx) == []
    checkpoint.remove()
    assert not (tmp_path / "classes" / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize(
    ("params", "upstream_uid", "n_iterations", "reason"),
    [
        ({**CLASSIFY, "num_classes": 4}, "uid-import", 6, "parameters or inputs changed"),
        (CLASSIFY, "uid-import-rerun", 6, "parameters or inputs changed"),
        (CLASSIFY, "uid-import", 2, "iteration 2 is outside 1..1"),
    ],
)
def test_a_checkpoint_of_other_parameters_or_inputs_is_ignored_and_logged(
    tmp_path: Path, params: dict[str, Any], upstream_uid: str, n_iterations: int, reason: str
) -> None:
    Checkpoint(context(tmp_path, CLASSIFY), Class2DState, n_iterations=6).save(state())
    ctx = context(tmp_path, params, upstream_uid)
    assert Checkpoint(ctx, Class2DState, n_iterations=n_iterations).load() is None
    [warning] = warnings_of(ctx)
    assert reason in warning
    assert warning.endswith("starting over")


def flip_reference_byte(data: bytes) -> bytes:
    """One flipped bit pattern inside the stored references: their CRC no longer matches."""
    at = data.index(state().references.tobytes()) + 5
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short
        lambda _: b"not a checkpoint",
        flip_reference_byte,
        lambda data: np.lib.format.magic(1, 0) + data[8:],  # an .npy header, then garbage
    ],
    ids=["truncated", "garbage", "flipped-byte", "npy-header"],
)
def test_a_damaged_checkpoint_is_ignored_and_logged(tmp_path: Path, damage: Any) -> None:
    ctx = context(tmp_path, CLASSIFY)
    checkpoint = Checkpoint(ctx, Class2DState, n_iterations=6)
    checkpoint.save(state())
    path = tmp_path / "classes" / CHECKPOINT_NAME
    path.write_bytes(damage(path.read_bytes()))
    assert checkpoint.load() is None
    [warning] = warnings_of(ctx)
    assert "it is unreadable" in warning, warning


def kill_while_writing(path: Path) -> None:
    """Start an atomic write of ``path`` in a process that is killed before it publishes."""
    code = (
        "import os, signal, sys\n"
        "from cryokube.processing.io.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=path.parent, check=False)
    assert result.returncode == -signal.SIGKILL


def test_the_next_start_removes_a_killed_save_and_resumes(tmp_path: Path) -> None:
    """A worker killed while saving leaves a temporary beside the checkpoint; the next start
    removes it (and no other file's) and resumes from the checkpoint saved before."""
    ctx = context(tmp_path, CLASSIFY)
    Checkpoint(ctx, Class2DState, n_iterations=6).save(state(2))
    folder = (tmp_path / "classes" / CHECKPOINT_NAME).parent
    kill_while_writing(folder / "iteration.npz")
    kill_while_writing(folder / "other.npz")
    stale, other = (
        [p.name for p in folder.glob(f".{name}.*.tmp")] for name in ("iteration.npz", "other.npz")
    )
    assert len(stale) == 1
    assert len(other) == 1
    resumed = Checkpoint(ctx, Class2DState, n_iterations=6).start("classifying")
    assert resumed is not None
    assert resumed.iteration == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(["iteration.npz", *other])


@pytest.mark.s3
def test_a_policy_without_multipart_listing_only_warns_at_the_start(tmp_path: Path) -> None:
    """S3 without ``s3:ListBucketMultipartUploads``: the start cannot look for an interrupted
    upload, says so, and the checkpoint still saves and resumes."""
    # moto names HEAD and ListObjectsV2 after the API calls (AWS: GetObject and ListBucket)
    allowed = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
    allowed += ["s3:HeadObject", "s3:ListObjectsV2"]
    with s3_with_iam(tmp_path / "moto", allowed) as (client, bucket):
        ctx = context(tmp_path, CLASSIFY, storage=S3Storage(client, bucket, "p"))
        assert Checkpoint(ctx, Class2DState, n_iterations=6).start("classifying") is None
        [warning] = warnings_of(ctx)
        assert "left an interrupted save in place: s3://locked/p/classes/" in warning
        assert "access denied" in warning
        Checkpoint(ctx, Class2DState, n_iterations=6).save(state(2))
        resumed = Checkpoint(ctx, Class2DState, n_iterations=6).start("classifying")
        assert resumed is not None
        assert resumed.iteration == 2
