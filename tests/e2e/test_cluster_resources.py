"""CryoKube's CRDs served by a real kube-apiserver: examples apply, bad specs are rejected by the
OpenAPI schema with messages naming the field, printer columns and ``kubectl explain`` work.
"""

from __future__ import annotations

import json

import pytest
from e2e.cluster import REPO_ROOT, Cluster

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

EXAMPLES = sorted((REPO_ROOT / "examples").rglob("*.yaml"))


def test_every_example_applies(cluster: Cluster) -> None:
    cluster.namespace("lab-a")
    assert len(EXAMPLES) > 3
    for path in EXAMPLES:
        result = cluster.kubectl("apply", "--server-side", "-f", str(path), check=False)
        assert result.returncode == 0, f"{path.relative_to(REPO_ROOT)}: {result.stderr}"
    projects = cluster.get("projects", namespace="lab-a")
    assert [p["metadata"]["name"] for p in projects] == ["apoferritin"]
    assert "pvc" in projects[0]["spec"]["storage"]
    jobs = cluster.get("jobs.cryokube.io", namespace="lab-a")
    assert len(jobs) >= len(EXAMPLES) - 1


def test_s3_project_applies_in_cluster_mode(cluster: Cluster) -> None:
    ns = cluster.namespace("lab-s3")
    project = {
        "apiVersion": "cryokube.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "beta-gal", "namespace": ns},
        "spec": {
            "storage": {
                "s3": {
                    "bucket": "cryo",
                    "prefix": "lab-s3/beta-gal",
                    "endpoint": "https://s3.example.org",
                    "secretRef": "s3-credentials",
                }
            },
            "gpuQuota": 2,
        },
    }
    cluster.apply([project])
    stored = cluster.get_one("projects", "beta-gal", namespace=ns)
    assert stored is not None
    assert stored["spec"]["storage"]["s3"]["bucket"] == "cryo"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"project": "p", "type": "ctf_estimation", "resources": {"gpus": -1}},
            "spec.resources.gpus",
        ),
        ({"project": "p", "type": "ctf_estimation", "shards": 0}, "spec.shards"),
        ({"project": "p"}, "spec.type: Required value"),
        ({"type": "ctf_estimation"}, "spec.project: Required value"),
    ],
)
def test_schema_rejects_bad_job_specs(
    cluster: Cluster, spec: dict[str, object], message: str
) -> None:
    ns = cluster.namespace("lab-bad")
    body = {
        "apiVersion": "cryokube.io/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": spec,
    }
    result = cluster.kubectl("create", "-f", "-", stdin=json.dumps(body), check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert message in result.stderr


def test_get_cjob_shows_printer_columns(cluster: Cluster) -> None:
    cluster.namespace("lab-a")
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "examples" / "project.yaml"))
    cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "examples" / "pipeline.yaml"))
    header = cluster.kubectl("get", "cjob", "-n", "lab-a").stdout.splitlines()[0].split()
    assert header == ["NAME", "TYPE", "PHASE", "PROGRESS", "GPUS", "AGE"]
    wide = cluster.kubectl("get", "cjob", "-n", "lab-a", "-o", "wide").stdout.splitlines()[0]
    assert "REASON" in wide.upper()


def test_explain_shows_descriptions(cluster: Cluster) -> None:
    explained = cluster.kubectl("explain", "cjob.spec.resources").stdout
    assert "FIELDS:" in explained
    assert "GPUs per pod (none: 1 for GPU jobs, 0 otherwise)." in explained
    quota = cluster.kubectl("explain", "projects.spec.gpuQuota").stdout
    assert "Most GPUs the project's jobs use at once (none: unlimited)." in quota
