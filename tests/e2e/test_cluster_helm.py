"""``helm install`` of the chart into the real API server: every object passes the server's
validation (schemas, RBAC escalation checks, admission) and the Deployments become available on
kwok's nodes.
"""

from __future__ import annotations

import json

import pytest
from e2e.cluster import REPO_ROOT, Cluster

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

NAMESPACE = "cryokube-helm"
VALUES = REPO_ROOT / "tests" / "data" / "chart" / "values-cloud-s3.yaml"


def test_helm_install_passes_server_side_validation(cluster: Cluster) -> None:
    common = ["charts/cryokube", "-n", NAMESPACE, "--create-namespace", "-f", str(VALUES)]
    dry = cluster.helm("install", "cryokube", *common, "--dry-run=server")
    assert "STATUS: pending-install" in dry.stdout
    cluster.helm("install", "cryokube", *common, "--wait", "--timeout", "180s")
    try:
        status = json.loads(
            cluster.helm("status", "cryokube", "-n", NAMESPACE, "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed"
        deployments = cluster.get("deployments", namespace=NAMESPACE)
        assert deployments
        for d in deployments:
            assert d["status"].get("availableReplicas") == d["spec"]["replicas"], d["metadata"][
                "name"
            ]
        kinds = {
            item["kind"]
            for item in json.loads(
                cluster.kubectl(
                    "get",
                    "networkpolicies,serviceaccounts,services,ingresses",
                    "-n",
                    NAMESPACE,
                    "-o",
                    "json",
                ).stdout
            )["items"]
        }
        assert {"NetworkPolicy", "ServiceAccount", "Service", "Ingress"} <= kinds
        assert _metadata_service_may(cluster) == {"create jobs.cryokube.io"}
    finally:
        cluster.helm("uninstall", "cryokube", "-n", NAMESPACE, "--wait", "--timeout", "120s")


def _metadata_service_may(cluster: Cluster) -> set[str]:
    """What the API server's authorizer lets the metadata service's ServiceAccount do in a lab
    namespace, among the verbs a console could be tempted to use (``kubectl auth can-i``)."""
    account = f"system:serviceaccount:{NAMESPACE}:cryokube-metadata"
    asked = [
        f"{verb} {resource}"
        for resource in (
            "jobs.cryokube.io",
            "projects.cryokube.io",
            "jobs.batch",
            "pods",
            "secrets",
        )
        for verb in ("create", "get", "list", "delete", "patch")
    ]
    allowed = set()
    for question in asked:
        verb, resource = question.split()
        answer = cluster.kubectl(
            "auth", "can-i", verb, resource, "-n", "lab-a", "--as", account, check=False
        )
        if answer.stdout.strip() == "yes":
            allowed.add(question)
    return allowed
