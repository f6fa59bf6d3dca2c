"""The Dockerfiles in images/, checked statically (no Docker engine runs here).

A small parser reads each Dockerfile into stages and instructions; the tests check the rules the
deployment issue sets (multi-stage, exact base tags, non-root user, no build tools in the final
stage, health checks, exec-form commands), that the entry points exist, that ports and user ids
agree with the chart, and that the wheel builds from exactly the files the images copy.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

IMAGES = ("operator", "metadata", "worker")
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+(\.\d+)?[\w.-]*$")
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|git|python3-dev|python3-pip|python3-venv"
    r"|pip install)\b"
)


@dataclass
class Stage:
    """One FROM stage: its resolved base image, name and (instruction, arguments) list."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages, joining continuation lines and resolving global ARGs."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    defaults: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            key, _, value = rest.partition("=")
            defaults[key.strip()] = value.strip()
        elif instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((instruction, rest.strip()))
    return stages


@pytest.fixture(scope="module", params=IMAGES)
def image(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def stages(repo_root: Path, image: str) -> list[Stage]:
    return parse_dockerfile((repo_root / "images" / f"{image}.Dockerfile").read_text())


@pytest.fixture(scope="module")
def chart_values(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "charts/cryokube/values.yaml").read_text())
    return loaded


def test_multi_stage_with_exact_base_tags(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert EXACT_TAG.match(stage.base), f"base image {stage.base!r} needs an exact version tag"
    final = stages[-1]
    assert final.base == stages[0].base, "the venv runs only on the image it was built on"
    assert any(a.startswith(f"--from={stages[0].name} ") for a in final.args("COPY"))


def test_final_stage_runs_as_non_root(stages: list[Stage], chart_values: dict[str, Any]) -> None:
    final = stages[-1]
    users = final.args("USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "USER must be a numeric id"
    assert gid.isdigit(), "USER must name a numeric group"
    assert int(uid) != 0
    assert int(gid) != 0
    assert int(uid) == chart_values["podSecurityContext"]["runAsUser"]
    last_user = max(i for i, (ins, _) in enumerate(final.instructions) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in final.instructions[last_user:])


def test_no_build_tools_in_final_stage(stages: list[Stage]) -> None:
    for command in stages[-1].args("RUN"):
        assert not BUILD_TOOLS.search(command), command
    assert "ADD" not in {ins for stage in stages for ins, _ in stage.instructions}


def test_package_installs_leave_no_caches(stages: list[Stage]) -> None:
    for stage in stages:
        for command in stage.args("RUN"):
            if "apt-get install" in command:
                assert "--no-install-recommends" in command
                assert "rm -rf /var/lib/apt/lists/*" in command
            if re.search(r"pip\b.* install ", command):
                assert "--no-cache-dir" in command, command


def test_commands_in_exec_form_with_a_health_check(stages: list[Stage]) -> None:
    final = stages[-1]
    (entrypoint,) = final.args("ENTRYPOINT")
    assert isinstance(json.loads(entrypoint), list)
    for cmd in final.args("CMD"):
        assert isinstance(json.loads(cmd), list)
    (healthcheck,) = final.args("HEALTHCHECK")
    if healthcheck != "NONE":
        assert isinstance(json.loads(healthcheck.split(" CMD ", 1)[1]), list)


def test_copied_sources_exist(repo_root: Path, stages: list[Stage]) -> None:
    for stage in stages:
        for arguments in stage.args("COPY"):
            if arguments.startswith("--from="):
                continue
            *sources, _ = arguments.split()
            for source in sources:
                assert (repo_root / source).exists(), source


def entry_point(stages: list[Stage]) -> list[str]:
    (entrypoint,) = stages[-1].args("ENTRYPOINT")
    command: list[str] = json.loads(entrypoint)
    return command


def test_entry_points_exist(repo_root: Path, stages: list[Stage]) -> None:
    command = entry_point(stages)
    if command[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(f"{command[2]}.__main__") is not None, command
    else:
        pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
        assert command[0] in pyproject["project"]["scripts"], command


def test_ports_agree_with_the_chart(
    stages: list[Stage], image: str, chart_values: dict[str, Any]
) -> None:
    expected = {
        "operator": chart_values["operator"]["metricsPort"],
        "metadata": chart_values["metadataService"]["port"],
    }
    exposed = [int(p) for p in stages[-1].args("EXPOSE")]
    assert exposed == ([expected[image]] if image in expected else [])
    if image == "metadata":
        (cmd,) = stages[-1].args("CMD")
        assert json.loads(cmd)[-1] == str(expected[image])


def test_worker_image_has_cuda_runtime_and_cupy(repo_root: Path) -> None:
    stages = parse_dockerfile((repo_root / "images/worker.Dockerfile").read_text())
    assert stages[-1].base.startswith("docker.io/nvidia/cuda:12.")
    assert "-runtime-" in stages[-1].base
    assert any('[gpu]"' in command for command in stages[0].args("RUN"))
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert any(
        d.startswith("cupy-cuda12x") for d in pyproject["project"]["optional-dependencies"]["gpu"]
    )


@pytest.mark.slow
def test_wheel_builds_from_exactly_the_copied_files(repo_root: Path, tmp_path: Path) -> None:
    """Build the wheel as the images do, from a context holding only what they COPY."""
    stages = parse_dockerfile((repo_root / "images/metadata.Dockerfile").read_text())
    context = tmp_path / "context"
    context.mkdir()
    for arguments in stages[0].args("COPY"):
        *sources, _ = arguments.split()
        for source in sources:
            origin = repo_root / source
            if origin.is_dir():
                shutil.copytree(
                    origin, context / source, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(origin, context / source)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("cryokube-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    for image in IMAGES:
        command = entry_point(
            parse_dockerfile((repo_root / "images" / f"{image}.Dockerfile").read_text())
        )
        if command[:2] == ["python", "-m"]:
            assert f"{command[2].replace('.', '/')}/__main__.py" in names, command
        else:
            assert f"{command[0]} =" in scripts, command
