"""Session fixtures of the cluster tier: one control plane, fake nodes, the operator.

``make e2e`` runs this folder (``make test`` never collects it: ``norecursedirs``). The control
plane takes a few seconds to start; it is shared by every test, which keep to their own
namespaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e.cluster import (
    CPU_NODES,
    GPU_NODES,
    REPO_ROOT,
    Cluster,
    Operator,
    chart_operator_kubeconfig,
    fake_node,
    missing_tools,
)

#: Namespace and release name the chart's operator RBAC is rendered with.
OPERATOR_NAMESPACE = "cryokube-e2e"
OPERATOR_RELEASE = "e2e"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """etcd, kube-apiserver, controller manager, scheduler and kwok, with CRDs and nodes."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"not built: {', '.join(missing)}; run `make tools` (scripts/tools.sh)")
    running = Cluster.start(tmp_path_factory.mktemp("cluster"))
    try:
        running.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        running.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        nodes = [fake_node(n, gpus=g) for n, g in GPU_NODES.items()]
        nodes += [fake_node(n, gpus=0) for n in CPU_NODES]
        running.kubectl(
            "create",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        running.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's operator ServiceAccount and RBAC (``helm template``), and a token for it."""
    return chart_operator_kubeconfig(
        cluster,
        release=OPERATOR_RELEASE,
        namespace=OPERATOR_NAMESPACE,
        path=tmp_path_factory.mktemp("operator") / "kubeconfig",
    )


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator as a subprocess with only its ServiceAccount's rights and the chart's
    worker defaults (the rendered ConfigMap's file, as the chart mounts it).

    Tests that stop it (restart) start it again before they return.
    """
    folder = tmp_path_factory.mktemp("operator-log")
    rendered = cluster.helm(
        "template",
        OPERATOR_RELEASE,
        "charts/cryokube",
        "--namespace",
        OPERATOR_NAMESPACE,
        "--show-only",
        "templates/worker-defaults-configmap.yaml",
    ).stdout
    defaults = folder / "worker-defaults.yaml"
    defaults.write_text(yaml.safe_load(rendered)["data"]["worker-defaults.yaml"])
    running = Operator(
        kubeconfig=operator_kubeconfig,
        log_path=folder / "operator.log",
        env={"CRYOKUBE_RECHECK_INTERVAL_S": "2", "CRYOKUBE_WORKER_DEFAULTS": str(defaults)},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
