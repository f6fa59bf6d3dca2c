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
    finally:
        cluster.helm("uninstall", "cryokube", "-n", NAMESPACE, "--wait", "--timeout", "120s")
