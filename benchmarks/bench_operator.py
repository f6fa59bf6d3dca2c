"""Operator throughput: 1,000 Job resources reconciled into child batch Jobs against kmock.

The emulator serves in this process; the operator runs as its own process
(``python -m cryokube.operator.handlers``), exactly as in its pod, so its peak RSS is its own.
The reference ("limit") is the emulator's own create rate measured in the same run: this
process creating 1,000 batch Jobs sequentially through the same kubernetes client. The
operator's ratio to it (operator time / direct-create time) says how much the reconcile loop
(watch, index, plan, Secret + Job creation, status patch) costs over the bare API writes.

kmock keeps every request it served and matches each new one by scanning that log through its
reaction filters, so it serves request ``R`` in ``O(R)`` time; a 1,000-Job run makes ~8,000
requests and then measured the emulator, not the operator (at 200 Jobs it had not finished in
600 s, with the operator idle in ``epoll``). The benchmark's emulator forgets each request once
served (:class:`_ForgetfulEmulator`): nothing here asserts on requests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import harness
import kmock
import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support import k8s

N_JOBS = int(os.environ.get("CRYOKUBE_BENCH_JOBS", "1000"))
NS = "bench"
TIMEOUT_S = 600.0
CHILD = kmock.resource("batch", "v1", "jobs")


class _ForgetfulEmulator(kmock.KubernetesEmulator):
    """kmock's emulator made O(1) per request for this benchmark.

    Its request log holds only the requests being served, a request naming one object finds it
    by key instead of scanning every stored object, and it notes when each child batch Job of
    namespace :data:`NS` was created (no polling of the object store).
    """

    children: dict[str, float]

    async def _handle(self, request: Any) -> Any:
        try:
            response = await super()._handle(request)
        finally:
            self._requests.remove(request)  # kmock's Request compares by identity
        is_create = request.action == kmock.action.CREATE
        if is_create and request.resource == CHILD and request.namespace == NS:
            self.children.setdefault(request.data["metadata"]["name"], time.perf_counter())
        return response

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        if request.name is None or (request.namespace is None and not strict):
            return super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[misc]
        key = (request.resource, request.namespace, request.name)
        return [self._objects[key]] if key in self._objects else []


async def _create_crs(host: str) -> None:
    """POST the Project and the Job resources (raw aiohttp: the fastest client, off the clock)."""
    meta = {"namespace": NS, "resourceVersion": "1"}
    base = f"{host}/apis/cryokube.io/v1alpha1/namespaces/{NS}"
    project = {
        "apiVersion": "cryokube.io/v1alpha1",
        "kind": "Project",
        "metadata": {**meta, "name": "apo", "uid": str(uuid.uuid4())},
        "spec": {"storage": {"pvc": {"claimName": "data"}}},
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/projects", json=project) as response:
            response.raise_for_status()
        for i in range(N_JOBS):
            body = {
                "apiVersion": "cryokube.io/v1alpha1",
                "kind": "Job",
                "metadata": {**meta, "name": f"job-{i:04d}", "uid": str(uuid.uuid4())},
                "spec": {"project": "apo", "type": "ctf_estimation"},
            }
            async with session.post(f"{base}/jobs", json=body) as response:
                response.raise_for_status()


def _direct_creates(api: Any) -> float:
    """Seconds for this process to create N_JOBS small batch Jobs directly (the floor)."""
    batch = kubernetes.client.BatchV1Api(api)
    t0 = time.perf_counter()
    for i in range(N_JOBS):
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"direct-{i:04d}", "namespace": "direct"},
            "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "w"}]}}},
        }
        batch.create_namespaced_job("direct", body)
    return time.perf_counter() - t0


def _start_operator(host: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONSAFEPATH": "1", "CRYOKUBE_KUBE_HOST": host}
    env["CRYOKUBE_METRICS_PORT"] = "0"
    return subprocess.Popen(
        [sys.executable, "-m", "cryokube.operator.handlers"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("CRYOKUBE_BENCH_VERBOSE") else subprocess.DEVNULL,
    )


def _stop_operator(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Read the operator's peak RSS (MB) and CPU time (s) so far, then kill it.

    The peak is ``VmHWM``: ``wait4``'s ``ru_maxrss`` would carry the benchmark process's own
    peak across the fork (Linux keeps it through ``exec``). SIGKILL, not SIGTERM: with 1,000
    Jobs kopf's graceful exit drains its event queues for minutes, which is not what we measure.
    """
    status_text = Path(f"/proc/{proc.pid}/status").read_text()
    hwm_kB = next(
        int(line.split()[1]) for line in status_text.splitlines() if line.startswith("VmHWM:")
    )
    stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    proc.kill()
    proc.wait()
    return hwm_kB / 1024, cpu_s


async def _measure() -> dict[str, float]:
    emulator = _ForgetfulEmulator()
    emulator.children = {}
    async with emulator, kmock.Server(emulator):
        k8s.declare_resources(emulator)
        conf = kubernetes.client.Configuration()
        conf.host = str(emulator.url).rstrip("/")
        api = kubernetes.client.ApiClient(conf)
        try:
            direct_s = await asyncio.to_thread(_direct_creates, api)
            await _create_crs(conf.host)
            t0 = time.perf_counter()
            proc = _start_operator(conf.host)
            try:
                while len(emulator.children) < N_JOBS and time.perf_counter() - t0 < TIMEOUT_S:
                    await asyncio.sleep(0.2)
            finally:
                peak_rss_MB, cpu_s = await asyncio.to_thread(_stop_operator, proc)
        finally:
            api.close()
        created = sorted(emulator.children.values())
        if len(created) < N_JOBS:
            raise RuntimeError(f"only {len(created)} of {N_JOBS} children in {TIMEOUT_S} s")
    return {
        "direct_s": direct_s,
        "first_s": created[0] - t0,
        "all_s": created[-1] - t0,
        "peak_rss_MB": peak_rss_MB,
        "cpu_s": cpu_s,
    }


@harness.benchmark("operator_1000_jobs")
def operator_1000_jobs(limits: dict[str, float]) -> list[harness.Record]:
    del limits  # the reference is the emulator's create rate, measured below
    m = asyncio.run(_measure())
    reconcile_s = m["all_s"] - m["first_s"]
    floor = f"direct batch-Job creates against the same emulator ({N_JOBS / m['direct_s']:.0f}/s)"
    return [
        harness.Record(
            name="operator_children_per_s",
            value=N_JOBS / reconcile_s,
            unit="jobs/s",
            ratio_to_limit=reconcile_s / m["direct_s"],
            limit=floor,
            peak_memory_MB=m["peak_rss_MB"],
            notes=(
                f"{N_JOBS} Job CRs exist before start; first child after {m['first_s']:.2f} s "
                f"(process start, imports, watch); all after {m['all_s']:.2f} s; peak RSS is the "
                "operator process's"
            ),
        ),
        harness.Record(
            name="operator_cpu_per_job",
            value=1e3 * m["cpu_s"] / N_JOBS,
            unit="ms CPU/job",
            ratio_to_limit=m["cpu_s"] / reconcile_s,
            limit="share of the wall time the operator process was on a CPU (1 = CPU-bound)",
            notes="user + system time of the operator process from its start to the last child",
        ),
    ]
