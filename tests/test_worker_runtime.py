"""The worker runtime as a real process: inputs, outputs, manifest, exit codes, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryokube.processing.datasets import load_cs
from cryokube.processing.io.movies import write_movie_tiff

WORKER = str(Path(sys.executable).with_name("cryokube-worker"))


def make_project(root: Path, n_movies: int = 2) -> Path:
    rng = np.random.default_rng(0)
    (root / "movies").mkdir(parents=True)
    for i in range(n_movies):
        frames = rng.poisson(1.0, size=(4, 32, 48)).astype(np.uint8)
        write_movie_tiff(root / "movies" / f"m{i}.tif", frames, compression="lzw")
    return root


def run_worker(
    root: Path,
    job: str,
    job_type: str,
    params: dict[str, Any],
    inputs: list[dict[str, str]] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "CRYOKUBE_PROJECT": "apoferritin",
        "CRYOKUBE_JOB": job,
        "CRYOKUBE_JOB_UID": f"uid-{job}",
        "CRYOKUBE_JOB_TYPE": job_type,
        "CRYOKUBE_PARAMS": json.dumps(params),
        "CRYOKUBE_INPUTS": json.dumps(inputs or []),
        "CRYOKUBE_STORAGE_ROOT": str(root),
        "CRYOKUBE_DEVICE": "cpu",
        **env,
    }
    return subprocess.run(
        [WORKER, "run"], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cryokube" not in p.parts
    }


def test_import_movies_writes_dataset_and_manifest(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    result = run_worker(
        root,
        "import",
        "import_movies",
        {"blob_paths": "movies/*.tif", "psize_A": 1.1, "accel_kv": 300},
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((root / "import" / "manifest.json").read_text())
    group = manifest["outputs"]["movies"]
    assert group["kind"] == "movies"
    assert group["n_items"] == 2
    assert group["datasets"] == ["import/movies.cs"]
    dataset = load_cs(root / "import" / "movies.cs")
    assert dataset.strings("movie_blob/path") == ["movies/m0.tif", "movies/m1.tif"]
    assert dataset["movie_blob/shape"].tolist() == [[4, 32, 48], [4, 32, 48]]
    np.testing.assert_allclose(dataset["movie_blob/psize_A"], 1.1, rtol=1e-6)
    # the spool holds every report in order, ending with the completion
    spool = (root / "import" / ".cryokube" / "reports-0" / "events.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in spool]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert entries[-1] == {
        "seq": len(entries) - 1,
        "endpoint": "complete",
        "body": {"succeeded": True, "message": "succeeded"},
    }
    assert any(e["endpoint"] == "outputs" and e["body"]["name"] == "movies" for e in entries)


def test_retry_after_success_does_not_run_again(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    params = {"blob_paths": "movies/*.tif"}
    assert run_worker(root, "import", "import_movies", params).returncode == 0
    before = tree(root)
    (root / "movies" / "m9.tif").write_bytes((root / "movies" / "m0.tif").read_bytes())
    again = run_worker(root, "import", "import_movies", params)
    assert again.returncode == 0, again.stderr
    after = tree(root)
    after.pop("movies/m9.tif")
    assert after == before  # same manifest, same dataset: nothing duplicated or redone


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"psize_A": -1}, "CRYOKUBE_PARAMS.psize_A"),
        ({"res_max_algin": 3}, "CRYOKUBE_PARAMS.res_max_algin"),
        ({"blob_paths": "nothing/*.tif"}, "params.blob_paths: no file"),
        ({"blob_paths": "../other/*.tif"}, "'..' would leave the project root"),
        ({"gain_ref_path": "gain.mrc"}, "params.gain_ref_path"),
    ],
)
def test_bad_parameters_exit_2_and_leave_project_untouched(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    root = make_project(tmp_path / "project")
    before = tree(root)
    result = run_worker(root, "import", "import_movies", params)
    assert result.returncode == 2, result.stderr
    spool = (root / "import" / ".cryokube" / "reports-0" / "events.jsonl").read_text()
    assert message in spool
    assert tree(root) == before


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "required slot 'movies'"),
        ([{"job": "missing", "output": "movies"}], "job 'missing' has not finished"),
        ([{"job": "import", "output": "nope"}], "job 'import' has no output 'nope'"),
    ],
)
def test_missing_inputs_exit_2(tmp_path: Path, inputs: list[dict[str, str]], message: str) -> None:
    root = make_project(tmp_path / "project")
    assert run_worker(root, "import", "import_movies", {}).returncode == 0
    before = tree(root)
    result = run_worker(root, "motion", "motion_correction", {}, inputs)
    assert result.returncode == 2
    spool = (root / "motion" / ".cryokube" / "reports-0" / "events.jsonl").read_text()
    assert message in spool
    assert tree(root) == before


def test_bad_environment_names_the_variable(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    result = run_worker(root, "import", "import_movies", {}, CRYOKUBE_PARAMS="{not json")
    assert result.returncode == 2
    assert "CRYOKUBE_PARAMS is not valid JSON" in result.stderr
    result = run_worker(root, "import", "no_such_type", {})
    assert result.returncode == 2
    assert "CRYOKUBE_JOB_TYPE" in result.stderr
    assert "no_such_type" in result.stderr


def test_wrong_kind_of_input_exits_2_naming_the_slot(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    assert run_worker(root, "import", "import_movies", {}).returncode == 0
    before = tree(root)
    # CTF estimation takes micrographs; raw movies are the wrong kind of data
    result = run_worker(root, "ctf", "ctf_estimation", {}, [{"job": "import", "output": "movies"}])
    assert result.returncode == 2
    spool = (root / "ctf" / ".cryokube" / "reports-0" / "events.jsonl").read_text()
    assert "output is movies but slot 'micrographs' takes micrographs" in spool
    assert tree(root) == before
