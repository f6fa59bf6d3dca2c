"""Golden-file tests of the pure manifest builders (no cluster).

Each ``tests/data/operator/input/<case>.yaml`` holds a Project, a Job and optionally the
operator's worker defaults (the chart's ``worker-defaults.yaml``); the child batch Job built from
them must equal ``output/<case>.yaml``. ``{namespace}`` is substituted in both, and
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
from cryokube.operator.handlers.startup import OperatorConfig, load_worker_defaults
from cryokube.operator.manifests import (
    JOB_LABEL,
    WorkerConfig,
    build_child_job,
    build_token_secret,
    child_name,
    user_metadata,
    with_project_owner,
)
from cryokube.operator.models import (
    API_VERSION,
    JobResource,
    ProjectResource,
    parse_job,
    parse_project,
)

DATA = Path(__file__).parent / "data" / "operator"
CASES = sorted(p.stem for p in (DATA / "input").glob("*.yaml"))
NAMESPACE = "ns-golden"
CONFIG = WorkerConfig(metadata_url="http://cryokube-metadata.cryokube:8080")


def load_case(case: str) -> tuple[ProjectResource, JobResource]:
    project, job, _ = load_case_with_defaults(case)
    return project, job


def load_case_with_defaults(case: str) -> tuple[ProjectResource, JobResource, WorkerConfig]:
    """The case's Project, Job and worker defaults (:data:`CONFIG` when the case has none)."""
    text = (DATA / "input" / f"{case}.yaml").read_text().replace("{namespace}", NAMESPACE)
    project_body, job_body, *defaults = yaml.safe_load_all(text)
    config = WorkerConfig.model_validate(defaults[0]) if defaults else CONFIG
    return parse_project(project_body), parse_job(job_body), config


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
    project, job, config = load_case_with_defaults(case)
    actual = build_child_job(job, project, config=config)
    golden = DATA / "output" / f"{case}.yaml"
    if os.environ.get("CRYOKUBE_UPDATE_GOLDEN"):
        text = yaml.safe_dump(actual, sort_keys=False, width=100).replace(NAMESPACE, "{namespace}")
        golden.write_text(text)
    expected = yaml.safe_load(golden.read_text().replace("{namespace}", NAMESPACE))
    assert matches(expected, actual) == []


@pytest.mark.parametrize("case", CASES)
def test_child_is_hardened(case: str) -> None:
    project, job, config = load_case_with_defaults(case)
    pod = build_child_job(job, project, config=config)["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["allowPrivilegeEscalation"] is False


def test_exit_code_2_fails_the_job_at_once() -> None:
    project, job = load_case("pvc_sharded_gpu")
    spec = build_child_job(job, project, config=CONFIG)["spec"]
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [2]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_local_path_storage_is_rejected_in_a_cluster() -> None:
    _, job = load_case("pvc_sharded_gpu")
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
    _, job = load_case("pvc_sharded_gpu")
    secret = build_token_secret(job, "tok-123")
    assert base64.b64decode(secret["data"]["token"]) == b"tok-123"
    assert secret["metadata"]["labels"][JOB_LABEL] == "motion"


def test_worker_defaults_never_loosen_the_hardening() -> None:
    project, job = load_case("pvc_sharded_gpu")
    loose = WorkerConfig.model_validate(
        {
            "podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
            "containerSecurityContext": {"privileged": True, "readOnlyRootFilesystem": False},
        }
    )
    pod = build_child_job(job, project, config=loose)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == project.spec.run_as_user
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["runAsNonRoot"] is True


def test_worker_defaults_file_is_read_once_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "worker-defaults.yaml"
    path.write_text("image: registry.lab/worker:9\ngpuResourceName: nvidia.com/mig-1g.10gb\n")
    monkeypatch.setenv("CRYOKUBE_WORKER_DEFAULTS", str(path))
    monkeypatch.setenv("CRYOKUBE_WATCH_NAMESPACES", "lab-a, lab-b,,")
    config = OperatorConfig.from_env()
    assert config.watch_namespaces == ("lab-a", "lab-b")
    assert config.workers.image == "registry.lab/worker:9"
    assert config.workers.gpu_resource_name == "nvidia.com/mig-1g.10gb"
    monkeypatch.delenv("CRYOKUBE_WORKER_DEFAULTS")
    monkeypatch.delenv("CRYOKUBE_WATCH_NAMESPACES")
    assert OperatorConfig.from_env().workers == WorkerConfig()
    assert OperatorConfig.from_env().watch_namespaces == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tolerations:\n  - {key: nvidia.com/gpu, operator: Equals}\n", "tolerations.0.operator"),
        ("ssdCache: {sizeLimit: lots}\n", "ssdCache.sizeLimit"),
        ("gpuResourceNam: nvidia.com/gpu\n", "gpuResourceNam"),
        ("image: [a, b]\n", "image"),
        ("checkpointIntervalS: -1\n", "checkpointIntervalS"),
        ("nodeSelector: {a: b\n", "while parsing"),
    ],
)
def test_bad_worker_defaults_name_the_file_and_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "worker-defaults.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="CRYOKUBE_WORKER_DEFAULTS") as caught:
        load_worker_defaults(path)
    assert str(path) in str(caught.value)
    assert named in str(caught.value)


def with_uid(project: ProjectResource, uid: str) -> ProjectResource:
    return project.model_copy(update={"metadata": project.metadata.model_copy(update={"uid": uid})})


def test_project_owner_is_added_once_beside_other_owners() -> None:
    project = with_uid(load_case("pvc_sharded_gpu")[0], "p-uid")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "c-uid"}
    owners = with_project_owner([other], project)
    reference = {
        "apiVersion": API_VERSION,
        "kind": "Project",
        "name": "apoferritin",
        "uid": "p-uid",
    }
    assert owners == [other, reference]  # no controller flag: the Project does not reconcile Jobs
    assert with_project_owner(owners, project) is None  # idempotent: nothing to patch
    assert with_project_owner([], with_uid(project, "")) is None  # not created yet: no reference
