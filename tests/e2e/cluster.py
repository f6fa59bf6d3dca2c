"""The cluster test tier's handle on a real control plane started by ``scripts/cluster.sh``.

Everything goes through the pinned ``kubectl`` and ``helm`` (``.tools/bin``) with a kubeconfig:
the admin's (client certificate in ``system:masters``) for set-up and checks, and the operator's
own ServiceAccount token for the operator, so RBAC is what a cluster would enforce.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
#: Binaries ``scripts/cluster.sh`` and these tests need, all built by ``scripts/tools.sh``.
CLUSTER_TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
GPU_RESOURCE = "nvidia.com/gpu"
#: The session's fake nodes: three GPU nodes with two GPUs each and one CPU node.
GPU_NODES = {"gpu-0": 2, "gpu-1": 2, "gpu-2": 2}
CPU_NODES = ("cpu-0",)
T = TypeVar("T")


def missing_tools() -> list[str]:
    """Names in :data:`CLUSTER_TOOLS` not built into ``.tools/bin``."""
    return [name for name in CLUSTER_TOOLS if not (TOOLS_BIN / name).is_file()]


def fake_node(name: str, *, gpus: int, taint_value: str = "") -> dict[str, Any]:
    """A kwok-managed Node manifest advertising ``gpus`` NVIDIA GPUs.

    GPU nodes carry a GPU node pool's ``nvidia.com/gpu:NoSchedule`` taint (``taint_value``, none
    by default), so only pods that tolerate it (CryoKube projects set the toleration) land
    there; ``gpus=0`` gives an untainted CPU node.
    """
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    labels = {"kubernetes.io/hostname": name, "type": "kwok"}
    spec: dict[str, Any] = {}
    if gpus:
        labels["nvidia.com/gpu.present"] = "true"
        spec["taints"] = [{"key": GPU_RESOURCE, "value": taint_value, "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def project_volume(namespace: str, claim: str = "cryo-data") -> list[dict[str, Any]]:
    """A PersistentVolume pre-bound to claim ``namespace/claim`` and that claim.

    The scheduler binds no pod whose PVC is unbound, and this cluster has no provisioner; the
    controller manager's volume binder completes the binding. kwok never mounts anything. The
    volume is retained: delete it with the namespace.
    """
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": "1Ti"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/var/lib/cryokube-e2e/{namespace}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": f"{namespace}-{claim}",
                "resources": {"requests": {"storage": "1Ti"}},
            },
        },
    ]


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.5
) -> T:
    """Call ``probe`` until it returns something other than ``None`` or ``False``.

    Raises
    ------
    TimeoutError
        Naming ``what`` and the last value seen, after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not reached in {timeout_s:.0f} s (last: {last!r})")


@dataclass
class Cluster:
    """A running control plane: its state folder and an admin kubeconfig.

    Attributes
    ----------
    state_dir : Path
        Folder ``scripts/cluster.sh`` keeps etcd data, certificates, logs and pid files in.
    kubeconfig : Path
        Admin kubeconfig (client certificate, ``system:masters``).
    """

    state_dir: Path
    kubeconfig: Path

    @classmethod
    def start(cls, state_dir: Path) -> Cluster:
        """Start etcd, the control plane and kwok through ``scripts/cluster.sh``."""
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "cluster.sh"), "start", str(state_dir)],
            check=True,
            timeout=300,
        )
        return cls(state_dir=state_dir, kubeconfig=state_dir / "kubeconfig")

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after 5 s)."""
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "cluster.sh"), "stop", str(self.state_dir)],
            check=True,
            timeout=120,
        )

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned ``kubectl`` with the admin (or the given) kubeconfig."""
        result = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=stdin,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned ``helm`` against this cluster."""
        result = subprocess.run(
            [str(TOOLS_BIN / "helm"), "--kubeconfig", str(self.kubeconfig), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, documents: Iterable[dict[str, Any]], *, namespace: str | None = None) -> None:
        """Server-side apply of manifests (a JSON ``List``) as the admin."""
        ns = ["-n", namespace] if namespace else []
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)})
        self.kubectl("apply", "--server-side", "--field-manager=e2e", *ns, "-f", "-", stdin=body)

    def get(self, resource: str, *, namespace: str | None = None, selector: str = "") -> list[Any]:
        """Items of ``kubectl get RESOURCE -o json`` (all namespaces when none is given)."""
        where = ["-n", namespace] if namespace else ["-A"]
        sel = ["-l", selector] if selector else []
        out = self.kubectl("get", resource, *where, *sel, "-o", "json").stdout
        items: list[Any] = json.loads(out)["items"]
        return items

    def get_one(self, resource: str, name: str, *, namespace: str) -> dict[str, Any] | None:
        """One object, or ``None`` when it does not exist."""
        result = self.kubectl(
            "get", resource, name, "-n", namespace, "-o", "json", "--ignore-not-found"
        )
        return json.loads(result.stdout) if result.stdout.strip() else None

    def namespace(self, name: str) -> str:
        """Create namespace ``name`` (idempotent) and return it."""
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
        return name


@dataclass
class Operator:
    """``python -m cryokube.operator.handlers`` as a subprocess with a ServiceAccount kubeconfig.

    Attributes
    ----------
    kubeconfig : Path
        Token kubeconfig of the chart's operator ServiceAccount.
    log_path : Path
        The operator's stdout and stderr, appended to across restarts.
    env : dict of str to str
        Extra environment (``CRYOKUBE_RECHECK_INTERVAL_S`` ...).
    """

    kubeconfig: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the operator; it serves every namespace unless ``env`` sets
        ``CRYOKUBE_WATCH_NAMESPACES``."""
        if self.process is not None:
            raise RuntimeError("the operator is already running")
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CRYOKUBE_METRICS_PORT": "0",
            "PYTHONSAFEPATH": "1",
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cryokube.operator.handlers"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )

    def stop(self) -> None:
        """SIGTERM (kopf finishes handlers in flight), SIGKILL after 20 s."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        """Everything the operator has written so far."""
        return self.log_path.read_text(errors="replace")


def service_account_kubeconfig(cluster: Cluster, *, namespace: str, name: str, path: Path) -> Path:
    """Write a kubeconfig for ServiceAccount ``namespace/name`` with a TokenRequest token."""
    token = cluster.kubectl(
        "create", "token", name, "-n", namespace, "--duration", "2h"
    ).stdout.strip()
    admin = cluster.kubectl("config", "view", "--raw", "-o", "json").stdout
    server = json.loads(admin)["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": server}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": name}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def chart_operator_kubeconfig(
    cluster: Cluster, *, release: str, namespace: str, path: Path, values: Iterable[str] = ()
) -> Path:
    """Apply the chart's operator ServiceAccount and RBAC and write a kubeconfig for it.

    ``helm template`` renders only those two templates of release ``release`` in ``namespace``
    (created if missing), with ``--set`` ``values``; the admin applies them.
    """
    cluster.namespace(namespace)
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = cluster.helm(
        "template",
        release,
        "charts/cryokube",
        "--namespace",
        namespace,
        *sets,
        "--show-only",
        "templates/operator-serviceaccount.yaml",
        "--show-only",
        "templates/operator-rbac.yaml",
    ).stdout
    cluster.kubectl("apply", "-f", "-", stdin=rendered)  # objects name their namespaces
    (account,) = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "ServiceAccount"
    ]
    return service_account_kubeconfig(cluster, namespace=namespace, name=account, path=path)
