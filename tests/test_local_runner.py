"""The workstation runner: manifests validated and stored, Jobs run as worker processes with
the operator's own planner (gating, failures, cancellation)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from cryokube.operator.local.controller import LocalController
from cryokube.operator.local.store import ManifestError, ResourceStore, load_manifests
from cryokube.processing.io.movies import write_movie_tiff

PROJECT = """\
apiVersion: cryokube.io/v1alpha1
kind: Project
metadata: {name: apoferritin, namespace: lab-a}
spec:
  storage: {path: data}
"""


def job(name: str, job_type: str, params: str = "{}", inputs: str = "[]", extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        ---
        apiVersion: cryokube.io/v1alpha1
        kind: Job
        metadata: {{name: {name}, namespace: lab-a}}
        spec:
          project: apoferritin
          type: {job_type}
          params: {params}
          inputs: {inputs}
        """)
        + extra
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    movies = tmp_path / "data" / "movies"
    movies.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        frames = rng.poisson(1.0, size=(3, 24, 32)).astype(np.uint8)
        write_movie_tiff(movies / f"m{i}.tif", frames, compression="lzw")
    return tmp_path


def apply(store: ResourceStore, workdir: Path, text: str) -> None:
    manifest = workdir / "pipeline.yaml"
    manifest.write_text(text)
    for document in load_manifests([manifest]):
        store.apply(document)


def phases(store: ResourceStore) -> dict[str, tuple[str, str]]:
    out = {}
    for body in store.list("Job"):
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        out[body["metadata"]["name"]] = (body["status"]["phase"], ready["reason"])
    return out


async def test_pipeline_runs_gates_and_fails_downstream(workdir: Path) -> None:
    store = ResourceStore(workdir / "state")
    apply(
        store,
        workdir,
        PROJECT
        + job("import", "import_movies", "{blob_paths: 'movies/*.tif', psize_A: 1.0}")
        + job("empty", "import_movies", "{blob_paths: 'nothing/*.tif'}")
        + job("motion", "motion_correction", inputs="[{job: empty, output: movies}]")
        + job("ctf", "ctf_estimation", inputs="[{job: motion, output: micrographs}]"),
    )
    project = store.get("Project", "lab-a", "apoferritin")
    assert project is not None
    assert project["spec"]["storage"]["path"] == str((workdir / "data").resolve())
    controller = LocalController(store, slots=1, log_dir=workdir / "logs")
    await controller.reconcile_once()
    first = phases(store)
    assert {first["import"][0], first["empty"][0]} == {"Pending"}  # one runs, one waits for a slot
    assert first["motion"] == ("Waiting", "WaitingForInputs")
    await controller.run(interval_s=0.1, until_idle=True)
    final = phases(store)
    assert final["import"] == ("Succeeded", "Completed")
    # no movie matches: the worker exits 2 (bad input) and the Job fails at once, no retry
    assert final["empty"] == ("Failed", "PodFailurePolicy")
    assert final["motion"] == ("Failed", "InputFailed")
    assert final["ctf"] == ("Failed", "InputFailed")
    assert (workdir / "data" / "import" / "manifest.json").exists()
    assert not (workdir / "data" / "motion").exists()


async def test_cancel_stops_a_waiting_job(workdir: Path) -> None:
    store = ResourceStore(workdir / "state")
    apply(
        store,
        workdir,
        PROJECT + job("ctf", "ctf_estimation", inputs="[{job: motion, output: micrographs}]"),
    )
    controller = LocalController(store, slots=1, log_dir=workdir / "logs")
    await controller.reconcile_once()
    assert phases(store)["ctf"] == ("Waiting", "WaitingForInputs")
    store.patch_spec("Job", "lab-a", "ctf", {"cancel": True})
    await controller.reconcile_once()
    assert phases(store)["ctf"] == ("Cancelled", "Cancelled")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (job("ctf", "ctf_estimation", "{amp_contrast: 7}"), "spec.params.amp_contrast"),
        (job("ctf", "no_such_type"), "no_such_type"),
        (job("x", "import_movies", "{res_max_algin: 3}"), "spec.params.res_max_algin"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "expected apiVersion"),
        ("kind: [unclosed\n", "pipeline.yaml"),
    ],
)
def test_invalid_manifests_are_refused_naming_the_field(
    workdir: Path, text: str, message: str
) -> None:
    store = ResourceStore(workdir / "state")
    with pytest.raises(ManifestError, match=message):
        apply(store, workdir, text)
    assert list(store.list("Job")) == []


def test_progress_comes_from_the_report_spools_without_a_service(workdir: Path) -> None:
    import json

    from cryokube.operator.local.controller import spooled_progress
    from cryokube.operator.models import parse_job, parse_project

    store = ResourceStore(workdir / "state")
    apply(store, workdir, PROJECT + job("motion", "motion_correction", extra="  shards: 2\n"))
    project = parse_project(store.get("Project", "lab-a", "apoferritin"))
    motion = parse_job(store.get("Job", "lab-a", "motion"))
    assert spooled_progress(project, motion) is None
    spools = workdir / "data" / "motion" / ".cryokube"
    for shard, fractions in enumerate(([0.25, 0.5], [1.0])):
        folder = spools / f"reports-{shard}"
        folder.mkdir(parents=True)
        lines = [{"seq": i, "endpoint": "progress", "body": {"fraction": f, "seq": i}}
                 for i, f in enumerate(fractions)]  # fmt: skip
        lines.append({"seq": 9, "endpoint": "events", "body": {"message": "progress is 0.1"}})
        (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert spooled_progress(project, motion) == 75  # mean of the shards' latest: 0.5 and 1.0
