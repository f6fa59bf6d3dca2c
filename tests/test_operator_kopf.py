"""The operator running for real (kopf in-process) against kmock's Kubernetes emulator.

Each test applies resources through the production kubernetes client and waits for the
operator's reaction in the emulator. The emulator has no controllers: tests play the part of
the Job controller and kubelet by patching the child's status or creating pods.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import kmock
import kubernetes
import pytest

pytestmark = pytest.mark.k8s

NS = "lab-a"
GROUP, VERSION = "cryokube.io", "v1alpha1"
WAIT_S = 60.0
"""Deadline of every wait for the operator's reaction; it only matters when a test fails."""
START_STOP_S = 180.0
"""Deadline to start or stop kopf: a second or two on an idle machine (stopping waits out its
workers' 2 s exit timeout); on 2 cores at load 15, starting took about 40 s and stopping over
10 s, which failed the 10 s deadline this replaces."""
QUIET_S = 1.0
"""How long tests watch for something that must *not* happen (a second child, Event or owner
reference): at least three re-check timer periods (conftest sets 0.3 s)."""
RECHECK_MAX_S = QUIET_S / 3


def meta(name: str) -> dict[str, Any]:
    """Metadata the API server would add: the emulator sets neither uid nor resourceVersion.

    kopf.adopt needs the owner's uid, and kopf patches finalizers with a JSON-patch that tests
    ``resourceVersion`` (a constant here: the emulator never changes it).
    """
    return {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "resourceVersion": "1"}


class Cluster:
    """The test's view of the emulator, through the production kubernetes client."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        conf = kubernetes.client.Configuration()
        conf.host = str(emulator.url).rstrip("/")
        self.client = kubernetes.client.ApiClient(conf)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    async def apply_project(self, name: str = "apoferritin", **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Project",
            "metadata": meta(name),
            "spec": {"storage": {"pvc": {"claimName": "cryo-data", "subPath": name}}, **spec},
        }
        await asyncio.to_thread(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, NS, "projects", body
        )

    async def apply_job(self, name: str, job_type: str, **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Job",
            "metadata": meta(name),
            "spec": {"project": "apoferritin", "type": job_type, **spec},
        }
        await asyncio.to_thread(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, NS, "jobs", body
        )

    async def patch_job_spec(self, name: str, spec: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            NS,
            "jobs",
            name,
            {"spec": spec},
        )

    async def project(self, name: str = "apoferritin") -> dict[str, Any]:
        body: dict[str, Any] = await asyncio.to_thread(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, NS, "projects", name
        )
        return body

    async def job(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = await asyncio.to_thread(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, NS, "jobs", name
        )
        return body

    def children(self) -> dict[str, dict[str, Any]]:
        """Live child batch Jobs by name, read from the emulator's store."""
        return {
            key[2]: obj.raw
            for key, obj in list(self.emulator.objects.items())
            if key[0].group == "batch" and not obj.deleted
        }

    def creations(self, name: str) -> int:
        """How many times a batch Job called ``name`` was created (history entries)."""
        return sum(
            1
            for key, obj in list(self.emulator.objects.items())
            if key[0].group == "batch" and key[2] == name
            for version in obj.history
            if version is not None and "status" not in version and "spec" in version
        )

    def events(self) -> list[tuple[str, str, str]]:
        """``(involved object's name, type, reason)`` of every Event the operator POSTed.

        Read from kmock's request log, not its store: kopf names Events with ``generateName``,
        which the emulator does not expand, so it stores only the first Event of a namespace
        and answers the others 409 (docs/operator.md, Known limits).
        """
        return [
            (r.data["involvedObject"]["name"], r.data["type"], r.data["reason"])
            for r in list(self.emulator)
            if r.action == kmock.action.CREATE
            and r.resource is not None
            and r.resource.plural == "events"
        ]

    async def wait_event(self, name: str, kind: str, reason: str) -> None:
        """Wait until the operator has posted a ``kind`` Event with ``reason`` about ``name``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (name, kind, reason) not in self.events():
            if loop.time() > deadline:
                about = [e for e in self.events() if e[0] == name]
                pytest.fail(f"no {kind} {reason} Event about {name}; posted: {about}")
            await asyncio.sleep(0.05)

    async def set_child_status(self, name: str, status: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.batch.patch_namespaced_job_status, name, NS, {"status": status}
        )

    async def create_pod(self, name: str, job: str, status: dict[str, Any]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"cryokube.io/job": job}},
            "spec": {"containers": [{"name": "worker", "image": "w"}]},
            "status": status,
        }
        await asyncio.to_thread(self.core.create_namespaced_pod, NS, body)

    async def wait_job(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """Poll the Job resource until ``check`` holds; fail naming ``what`` after WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            body = await self.job(name)
            if check(body):
                return body
            if loop.time() > deadline:
                pytest.fail(f"job {name}: {what} not reached; status={body.get('status')}")
            await asyncio.sleep(0.05)

    async def wait_children(self, check: Callable[[dict[str, Any]], bool], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not check(self.children()):
            if loop.time() > deadline:
                pytest.fail(f"children: {what} not reached; have {sorted(self.children())}")
            await asyncio.sleep(0.05)


def ready(body: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition of a body (empty dict when absent)."""
    conds = body.get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == "Ready"), {})


def reason_is(reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: ready(body).get("reason") == reason


def phase_is(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get("status", {}).get("phase") == phase


class RunningOperator:
    """The operator in its own thread and event loop, as in a pod (see ``handlers.run``)."""

    def __init__(self, emulator: Any) -> None:
        handlers = importlib.import_module("cryokube.operator.handlers")
        # conftest sets the interval before any module imports the handlers; the QUIET_S checks
        # and the Jobs that only the timer re-checks rely on it.
        interval_s = handlers.jobs.RECHECK_INTERVAL_S
        assert interval_s <= RECHECK_MAX_S, f"re-check timer every {interval_s} s: imported early?"
        config = handlers.OperatorConfig(kube_host=str(emulator.url).rstrip("/"), metrics_port=0)
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.thread = threading.Thread(
            target=self._serve,
            args=(handlers.run(config, stop_flag=self.stop_flag, ready_flag=self.ready_flag),),
            name="operator",
        )

    @staticmethod
    def _serve(main: Coroutine[Any, Any, None]) -> None:
        asyncio.run(main)
        # kopf, stopped while a request is in flight, cancels it and can leave that request's
        # aiohttp session to the emulator unclosed. Collect it here, with its ResourceWarning
        # silenced, so it is not reported later against whichever test runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    async def start(self) -> None:
        self.thread.start()
        assert await asyncio.to_thread(self.ready_flag.wait, START_STOP_S), "not ready"

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, START_STOP_S)
        assert not self.thread.is_alive(), "operator did not stop"


@pytest.fixture
async def cluster(k8s_emulator: Any) -> AsyncIterator[Cluster]:
    """The emulator with the operator running against it."""
    operator = RunningOperator(k8s_emulator)
    await operator.start()
    c = Cluster(k8s_emulator)
    try:
        yield c
    finally:
        await operator.stop()
        c.client.close()


async def test_job_becomes_child_and_status_follows_it(cluster: Cluster) -> None:
    await cluster.apply_project(gpuQuota=4)
    await cluster.apply_job("motion", "motion_correction", params={"res_max_align": 5})
    await cluster.wait_children(lambda c: "motion-run" in c, "child motion-run created")
    await cluster.wait_event("motion", "Normal", "Created")
    child = cluster.children()["motion-run"]
    assert child["metadata"]["ownerReferences"][0]["name"] == "motion"
    assert child["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "cryokube-worker",
        "run",
    ]
    await cluster.wait_job("motion", phase_is("Pending"), "Pending")

    await cluster.create_pod(
        "motion-run-0",
        "motion",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes have nvidia.com/gpu",
                }
            ],
        },
    )
    body = await cluster.wait_job("motion", reason_is("Unschedulable"), "Unschedulable")
    assert "nvidia.com/gpu" in ready(body)["message"]

    await cluster.set_child_status("motion-run", {"active": 1})
    await asyncio.to_thread(
        cluster.core.patch_namespaced_pod_status,
        "motion-run-0",
        NS,
        {"status": {"phase": "Running", "conditions": []}},
    )
    await cluster.wait_job("motion", reason_is("Running"), "Running")

    await cluster.set_child_status(
        "motion-run", {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    )
    body = await cluster.wait_job("motion", phase_is("Succeeded"), "Succeeded")
    succeeded = next(c for c in body["status"]["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True"
    assert succeeded["reason"] == "Completed"


async def test_invalid_params_name_the_field_and_create_no_child(cluster: Cluster) -> None:
    await cluster.apply_project()
    await cluster.apply_job("ctf", "ctf_estimation", params={"res_max_align": -4})
    body = await cluster.wait_job("ctf", reason_is("InvalidSpec"), "InvalidSpec")
    assert "spec.params.res_max_align" in ready(body)["message"]
    await asyncio.sleep(QUIET_S)  # a while later: still no child
    assert cluster.children() == {}


async def test_dependencies_gate_and_input_failure_propagates(cluster: Cluster) -> None:
    await cluster.apply_project()
    await cluster.apply_job("motion", "motion_correction")
    await cluster.apply_job(
        "ctf", "ctf_estimation", inputs=[{"job": "motion", "output": "micrographs"}]
    )
    await cluster.apply_job("pick", "blob_picker", inputs=[{"job": "ctf", "output": "micrographs"}])
    await cluster.wait_job("ctf", reason_is("WaitingForInputs"), "WaitingForInputs")
    await cluster.wait_event("ctf", "Normal", "WaitingForInputs")
    await cluster.wait_children(lambda c: "motion-run" in c, "motion child")
    assert "ctf-run" not in cluster.children()

    await cluster.set_child_status(
        "motion-run", {"conditions": [{"type": "Complete", "status": "True"}]}
    )
    await cluster.wait_children(lambda c: "ctf-run" in c, "ctf child after motion succeeded")
    await cluster.set_child_status(
        "ctf-run",
        {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]},
    )
    body = await cluster.wait_job("pick", reason_is("InputFailed"), "InputFailed")
    assert body["status"]["phase"] == "Failed"
    assert "pick-run" not in cluster.children()
    await cluster.wait_event("ctf", "Warning", "PodFailurePolicy")
    await cluster.wait_event("pick", "Warning", "InputFailed")
    # One Event per reason change, not one per pass.
    await asyncio.sleep(QUIET_S)
    assert cluster.events().count(("pick", "Warning", "InputFailed")) == 1


async def test_gpu_quota_holds_jobs_back_until_gpus_free(cluster: Cluster) -> None:
    await cluster.apply_project(gpuQuota=2)
    for name in ("m1", "m2", "m3"):
        await cluster.apply_job(name, "motion_correction", resources={"gpus": 1})
    await cluster.wait_children(lambda c: len(c) == 2, "two children")
    waiting = [n for n in ("m1", "m2", "m3") if f"{n}-run" not in cluster.children()]
    assert len(waiting) == 1
    await cluster.wait_job(waiting[0], reason_is("QuotaExceeded"), "QuotaExceeded")
    await cluster.wait_event(waiting[0], "Normal", "QuotaExceeded")
    await asyncio.sleep(QUIET_S)
    assert len(cluster.children()) == 2

    running = min(cluster.children())
    await cluster.set_child_status(
        running, {"conditions": [{"type": "Complete", "status": "True"}]}
    )
    await cluster.wait_children(lambda c: f"{waiting[0]}-run" in c, "third child after GPUs free")


async def test_project_owns_its_jobs_once_it_exists(cluster: Cluster) -> None:
    # The Job arrives first: it waits for its Project and cannot be owned by it yet.
    await cluster.apply_job("early", "motion_correction")
    await cluster.wait_job("early", reason_is("ProjectNotFound"), "ProjectNotFound")
    assert "ownerReferences" not in (await cluster.job("early"))["metadata"]
    await cluster.apply_project()
    await cluster.apply_job("late", "motion_correction")
    uid = (await cluster.project())["metadata"]["uid"]
    expected = [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Project", "name": "apoferritin", "uid": uid}
    ]
    for name in ("early", "late"):
        body = await cluster.wait_job(
            name, lambda b: bool(b["metadata"].get("ownerReferences")), "owned by the Project"
        )
        assert body["metadata"]["ownerReferences"] == expected
    await cluster.wait_children(lambda c: {"early-run", "late-run"} <= set(c), "children")
    await asyncio.sleep(QUIET_S)  # several timer passes add no second reference
    assert (await cluster.job("late"))["metadata"]["ownerReferences"] == expected


async def test_cancel_deletes_the_child(cluster: Cluster) -> None:
    await cluster.apply_project()
    await cluster.apply_job("cls", "classify_2d")
    await cluster.wait_children(lambda c: "cls-run" in c, "child")
    await cluster.patch_job_spec("cls", {"cancel": True})
    await cluster.wait_children(lambda c: "cls-run" not in c, "child deleted")
    body = await cluster.wait_job("cls", phase_is("Cancelled"), "Cancelled")
    failed = next(c for c in body["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "Cancelled"


async def test_restart_mid_flight_creates_no_second_child(k8s_emulator: Any) -> None:
    cluster = Cluster(k8s_emulator)
    try:
        first = RunningOperator(k8s_emulator)
        await first.start()
        await cluster.apply_project()
        await cluster.apply_job("motion", "motion_correction")
        await cluster.wait_children(lambda c: "motion-run" in c, "child")
        await first.stop()

        second = RunningOperator(k8s_emulator)
        await second.start()
        await cluster.set_child_status("motion-run", {"active": 1})
        await cluster.wait_job("motion", phase_is("Pending"), "Pending after restart")
        await asyncio.sleep(QUIET_S)  # resume + timer passes
        await second.stop()
        assert list(cluster.children()) == ["motion-run"]
        assert cluster.creations("motion-run") == 1
    finally:
        cluster.client.close()
