"""The operator on a real control plane: 1,000 GPU Jobs across 50 fake GPU nodes.

``scripts/cluster.sh`` starts etcd, kube-apiserver, the controller manager, the scheduler and
kwok (tools built by ``make tools``); 50 kwok nodes advertise 8 ``nvidia.com/gpu`` each. The
operator runs as its own process with an admin kubeconfig, as in ``bench_operator.py``. This
process submits 1,000 one-GPU Job resources (one Project, no quota) and watches pods: the
submission-to-pod-created latency of a Job is the time from its POST returning to the watch
event of its first pod (the operator's reconcile, the batch Job, the Job controller's pod).
Reconciles per second come from the operator's Prometheus counter; memory is its peak RSS.

Peer: ``bench_operator.py``'s kmock figure, measured in the same run (the same 1,000 Jobs
reconciled into children, against an emulator with no controllers and no etcd).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import bench_operator
import harness
import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from e2e.cluster import Cluster, fake_node, missing_tools, project_volume

N_JOBS = int(os.environ.get("CRYOKUBE_BENCH_JOBS", "1000"))
N_NODES = 50
GPUS_PER_NODE = 8
NS = "bench"
TIMEOUT_S = 420.0
HTTP_GONE = 410
HTTP_GATEWAY_TIMEOUT = 504


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _setup(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    nodes = [fake_node(f"gpu-{i:02d}", gpus=GPUS_PER_NODE) for i in range(N_NODES)]
    cluster.apply(nodes)
    cluster.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
    cluster.namespace(NS)
    cluster.apply(project_volume(NS, "data"))
    cluster.apply(
        [
            {
                "apiVersion": "cryokube.io/v1alpha1",
                "kind": "Project",
                "metadata": {"name": "apo", "namespace": NS},
                "spec": {
                    "storage": {"pvc": {"claimName": "data"}},
                    "workers": {
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                        ]
                    },
                },
            }
        ]
    )


def _watch_pods(api: Any, first_pod: dict[str, float], stop: threading.Event) -> None:
    """Record the local time of the first pod event of every Job (label cryokube.io/job).

    Each round is a fresh list + watch: under this load the API server's watch cache lags etcd,
    and resuming a watch at the last resourceVersion seen fails with 504 "Too large resource
    version" (it killed this thread, and the benchmark then waited for pods it never saw). A
    pod first seen in a re-list is timed at that re-list, late by at most one round.
    """
    core = kubernetes.client.CoreV1Api(api)
    while not stop.is_set():
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in watch.stream(core.list_namespaced_pod, NS, timeout_seconds=30):  # type: ignore[no-untyped-call]
                job = (event["object"].metadata.labels or {}).get("cryokube.io/job")
                if job and job not in first_pod:
                    first_pod[job] = time.perf_counter()
                if stop.is_set():
                    watch.stop()  # type: ignore[no-untyped-call]
                    break
        except kubernetes.client.ApiException as exc:
            if exc.status not in (HTTP_GONE, HTTP_GATEWAY_TIMEOUT):
                raise


def _reconciles(port: int) -> float:
    """Sum of ``cryokube_operator_reconciles_total`` over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cryokube_operator_reconciles_total{")
    )


def _measure(cluster: Cluster) -> dict[str, Any]:
    _setup(cluster)
    api = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    custom = kubernetes.client.CustomObjectsApi(api)
    first_pod: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_pods, args=(api, first_pod, stop), daemon=True)
    watcher.start()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONSAFEPATH": "1",
        "KUBECONFIG": str(cluster.kubeconfig),
        "CRYOKUBE_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryokube.operator.handlers"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("CRYOKUBE_BENCH_VERBOSE") else subprocess.DEVNULL,
    )
    submitted: dict[str, float] = {}
    try:
        time.sleep(5.0)  # the operator's start-up (imports, watches) stays off the clock
        t0 = time.perf_counter()
        for i in range(N_JOBS):
            name = f"job-{i:04d}"
            body = {
                "apiVersion": "cryokube.io/v1alpha1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"project": "apo", "type": "ctf_estimation", "resources": {"gpus": 1}},
            }
            custom.create_namespaced_custom_object("cryokube.io", "v1alpha1", NS, "jobs", body)
            submitted[name] = time.perf_counter()
        submit_s = time.perf_counter() - t0
        while len(first_pod) < N_JOBS and time.perf_counter() - t0 < TIMEOUT_S:
            time.sleep(0.2)
        all_s = time.perf_counter() - t0
        reconciles = _reconciles(port)
    finally:
        stop.set()
        peak_rss_MB, _ = bench_operator._stop_operator(proc)
        api.close()
    if len(first_pod) < N_JOBS:
        raise RuntimeError(f"only {len(first_pod)} of {N_JOBS} Jobs got a pod in {TIMEOUT_S} s")
    latencies = sorted(first_pod[n] - submitted[n] for n in submitted)
    return {
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "submit_s": submit_s,
        "all_s": all_s,
        "reconciles_per_s": reconciles / all_s,
        "peak_rss_MB": peak_rss_MB,
    }


@harness.benchmark("cluster_1000_jobs")
def cluster_1000_jobs(limits: dict[str, float]) -> list[harness.Record]:
    del limits  # the reference is the kmock run of bench_operator, measured below
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"not built: {', '.join(missing)}; run `make tools`")
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-cluster-") as state:
        cluster = Cluster.start(Path(state))
        try:
            m = _measure(cluster)
        finally:
            cluster.stop()
    kmock = asyncio.run(bench_operator._measure())
    kmock_rate = N_JOBS / (kmock["all_s"] - kmock["first_s"])
    cluster_rate = N_JOBS / m["all_s"]
    peer = f"bench_operator's kmock emulator, same run ({kmock_rate:.0f} jobs/s)"
    notes = (
        f"{N_JOBS} one-GPU Jobs on {N_NODES} kwok nodes x {GPUS_PER_NODE} GPUs; POSTs took "
        f"{m['submit_s']:.1f} s; every Job had a pod after {m['all_s']:.1f} s"
    )
    return [
        harness.Record(
            name="cluster_jobs_to_pods_per_s",
            value=cluster_rate,
            unit="jobs/s",
            peer=peer,
            ratio_to_peer=cluster_rate / kmock_rate,
            peak_memory_MB=m["peak_rss_MB"],
            notes=notes + "; peak RSS is the operator process's",
            extra={"kmock_peak_rss_MB": kmock["peak_rss_MB"]},
        ),
        harness.Record(
            name="cluster_submit_to_pod_p50_s",
            value=m["p50_s"],
            unit="s",
            extra={"p99_s": m["p99_s"]},
            notes="POST of the Job resource returned -> watch event of its first pod",
        ),
        harness.Record(
            name="cluster_submit_to_pod_p99_s",
            value=m["p99_s"],
            unit="s",
            notes="POST of the Job resource returned -> watch event of its first pod",
        ),
        harness.Record(
            name="cluster_operator_reconciles_per_s",
            value=m["reconciles_per_s"],
            unit="reconciles/s",
            notes="cryokube_operator_reconciles_total at the end / wall time from first POST",
        ),
    ]
