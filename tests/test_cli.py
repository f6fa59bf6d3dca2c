"""The ``cryokube`` CLI: apply (with --wait and progress), get, logs, cancel; clear errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from cryokube.operator import cli
from cryokube.processing.io.movies import write_movie_tiff

MANIFEST = """\
apiVersion: cryokube.io/v1alpha1
kind: Project
metadata: {name: demo}
spec:
  storage: {path: data}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {name: movies}
spec:
  project: demo
  type: import_movies
  params: {blob_paths: "raw/*.tif", psize_A: 1.2}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    write_movie_tiff(raw / "a.tif", np.ones((2, 16, 16), np.uint8), compression="lzw")
    path = tmp_path / "pipeline.yaml"
    path.write_text(MANIFEST)
    return path


def test_apply_wait_get_and_logs(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    assert cli.main(["--state", state, "apply", "-f", str(manifest), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "project.cryokube.io/demo configured" in out
    assert "job.cryokube.io/movies configured" in out
    assert "movies               [########################] 100%  Succeeded" in out
    assert cli.main(["--state", state, "get", "jobs", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "namespace": "default",
            "name": "movies",
            "type": "import_movies",
            "phase": "Succeeded",
            "progress": 100,
            "gpus": 0,
            "reason": "Completed",
            "message": "all shards completed",
        }
    ]
    assert cli.main(["--state", state, "get", "jobs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "TYPE", "PHASE", "PROGRESS", "GPUS"]
    assert table[1].split() == ["default", "movies", "import_movies", "Succeeded", "100%", "0"]
    assert cli.main(["--state", state, "logs", "movies"]) == 0
    assert "imported 1 movies" in capsys.readouterr().out


def test_apply_refuses_invalid_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("psize_A: 1.2", "psize_A: -3"))
    assert cli.main(["--state", str(tmp_path / "s"), "apply", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.params.psize_A" in err
    assert "bad.yaml" in err


def test_cancel_and_unknown_job(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    assert cli.main(["--state", state, "apply", "-f", str(manifest)]) == 0
    assert cli.main(["--state", state, "cancel", "movies"]) == 0
    assert "cancel requested" in capsys.readouterr().out
    assert cli.main(["--state", state, "cancel", "nope"]) == 1
    assert "nope not found" in capsys.readouterr().err


def test_progress_display_redraws_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    display = cli.ProgressDisplay(out)
    row = {"name": "ctf", "phase": "Running", "progress": 50, "reason": "Running"}
    display.update([row])
    display.update([{**row, "progress": 75}])
    text = out.getvalue()
    assert "\x1b[1F" in text  # moved up one line to redraw
    assert "[##################------]  75%  Running" in text


def test_every_example_applies_locally(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = repo_root / "examples"
    files = sorted(examples.rglob("*.yaml"))
    n_documents = sum(1 for f in files for doc in f.read_text().split("\n---") if "kind:" in doc)
    args = ["--state", str(tmp_path / "state"), "apply"]
    for folder in sorted({f.parent for f in files}):
        args += ["-f", str(folder)]
    assert cli.main(args) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n_documents
    assert all(line.endswith(" configured") for line in lines)
    assert "project.cryokube.io/apoferritin configured" in lines
