"""Golden-file tests of the pure manifest builders (no cluster).

Each ``tests/data/operator/input/<case>.yaml`` holds a Project and a Job; the child batch Job
built from them must equal ``output/<case>.yaml``. ``{namespace}`` is substituted in both, and
``<ANY>`` in an expected file matches any value. Regenerate an expected file only after reading
the diff: ``CRYOKUBE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_operator_manifests.py``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryokube.operator.manifests import (
    JOB_LABEL,
    WorkerConfig,
    build_child_job,
    build_token_secret,
    child_name,
    user_metadata,
)
from cryokube.operator.models import JobResource, ProjectResource, parse_job, parse_project

DATA = Path(__file__).parent / "data" / "operator"
CASES = sorted(p.stem for p in (DATA / "input").glob("*.yaml"))
NAMESPACE = "ns-golden"
CONFIG = WorkerConfig(metadata_url="http://cryokube-metadata.cryokube:8080")


def load_case(case: str) -> tuple[ProjectResource, JobResource]:
    text = (DATA / "input" / f"{case}.yaml").read_text().replace("{namespace}", NAMESPACE)
    project_body, job_body = yaml.safe_load_all(text)
    return parse_project(project_body), parse_job(job_body)


def matches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Differences between an expected tree (with ``<ANY>`` wildcards) and an actual one."""
    if expected == "<ANY>":
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        diffs = [f"{path}.{k}: missing" for k in expected if k not in actual]
        diffs += [f"{path}.{k}: unexpected" for k in actual if k not in expected]
        for k in expected.keys() & actual.keys():
            diffs += matches(expected[k], actual[k], f"{path}.{k}")
        return diffs
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in matches(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


@pytest.mark.parametrize("case", CASES)
def test_child_job_matches_golden(case: str) -> None:
    project, job = load_case(case)
    actual = build_child_job(job, project, config=CONFIG)
    golden = DATA / "output" / f"{case}.yaml"
    if os.environ.get("CRYOKUBE_UPDATE_GOLDEN"):
        text = yaml.safe_dump(actual, sort_keys=False, width=100).replace(NAMESPACE, "{namespace}")
        golden.write_text(text)
    expected = yaml.safe_load(golden.read_text().replace("{namespace}", NAMESPACE))
    assert matches(expected, actual) == []


@pytest.mark.parametrize("case", CASES)
def test_child_is_hardened(case: str) -> None:
    project, job = load_case(case)
    pod = build_child_job(job, project, config=CONFIG)["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["allowPrivilegeEscalation"] is False


def test_exit_code_2_fails_the_job_at_once() -> None:
    project, job = load_case(CASES[0])
    spec = build_child_job(job, project, config=CONFIG)["spec"]
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [2]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_local_path_storage_is_rejected_in_a_cluster() -> None:
    _, job = load_case(CASES[0])
    project = parse_project(
        {"metadata": {"name": "apoferritin"}, "spec": {"storage": {"path": "/data/apo"}}}
    )
    with pytest.raises(ValueError, match=r"storage\.path"):
        build_child_job(job, project, config=CONFIG)


@pytest.mark.parametrize(
    ("job_name", "expected"),
    [
        ("ctf", "ctf-run"),
        ("a" * 59, "a" * 59 + "-run"),
        ("a" * 60, "<hashed>"),
        ("a" * 61, "<hashed>"),
    ],
)
def test_child_names_are_deterministic_and_fit_63_chars(job_name: str, expected: str) -> None:
    name = child_name(job_name)
    assert name == child_name(job_name)
    assert len(name) <= 63
    if expected == "<hashed>":
        assert name != child_name(job_name[:-1])
    else:
        assert name == expected


def test_tool_keys_are_not_copied_to_children() -> None:
    kept = user_metadata({"kopf.zalando.org/x": "1", "kubectl.kubernetes.io/y": "2", "team": "s"})
    assert kept == {"team": "s"}


def test_token_secret_carries_the_token_and_the_job_label() -> None:
    _, job = load_case(CASES[0])
    secret = build_token_secret(job, "tok-123")
    assert base64.b64decode(secret["data"]["token"]) == b"tok-123"
    assert secret["metadata"]["labels"][JOB_LABEL] == "motion"
