"""The operator against a real control plane, with only the chart's ServiceAccount rights.

The Job controller, the scheduler and the garbage collector are Kubernetes' own; kwok plays the
kubelet (pods run for 2 s, then succeed or fail as their labels say, see
``scripts/cluster/kwok-stages.yaml``). Each test keeps to its own namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.cluster import (
    GPU_NODES,
    GPU_RESOURCE,
    REPO_ROOT,
    Cluster,
    Operator,
    chart_operator_kubeconfig,
    fake_node,
    project_volume,
    wait_until,
)

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

API = "cryokube.io/v1alpha1"
HOLD = "cryokube.test/hold"
# Deadlines only matter when a test fails: on 2 loaded cores a step can take tens of seconds.
PIPELINE_TIMEOUT_S = 240.0
STEP_TIMEOUT_S = 60.0
START_TIMEOUT_S = 180.0
"""A first step after an operator (re)start: importing and starting kopf alone took 48 s on 2 cores
at load 14 (the in-process kopf tier)."""
NODE_LOSS_TIMEOUT_S = 240.0
"""A pod on a deleted node is failed by the pod garbage collector only after the node has been
gone 40 s, checked every 20 s (kube-controller-manager's defaults); then the Job controller and
the scheduler replace it."""


@pytest.fixture
def namespace(
    cluster: Cluster, operator: Operator, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its pods free their GPUs)."""
    del operator  # the namespace is only useful with the operator running
    name = "e2e-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    cluster.namespace(name)
    cluster.apply(project_volume(name))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    cluster.kubectl("delete", "persistentvolume", f"{name}-cryo-data", "--wait=false")
    wait_until(
        lambda: not cluster.get("pods", namespace=name),
        timeout_s=STEP_TIMEOUT_S,
        what=f"pods of {name} gone",
    )


def project(namespace: str, *, gpu_quota: int | None) -> dict[str, Any]:
    """A cluster-mode Project (PVC storage) tolerating the GPU nodes' taint."""
    return {
        "apiVersion": API,
        "kind": "Project",
        "metadata": {"name": "apoferritin", "namespace": namespace},
        "spec": {
            "storage": {"pvc": {"claimName": "cryo-data", "subPath": namespace}},
            "gpuQuota": gpu_quota,
            "workers": {
                "image": "ghcr.io/cryokube/worker:0.1.0",
                "tolerations": [
                    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        },
    }


def job(
    namespace: str,
    name: str,
    *,
    gpus: int = 1,
    inputs: tuple[tuple[str, str], ...] = (),
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A CTF estimation Job (a GPU type); ``inputs`` are (job, output) pairs."""
    return {
        "apiVersion": API,
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "project": "apoferritin",
            "type": "ctf_estimation",
            "params": {"amp_contrast": 0.1, "res_max_align": 4},
            "inputs": [{"job": j, "output": o} for j, o in inputs],
            "resources": {"gpus": gpus},
        },
    }


def phase_of(cluster: Cluster, namespace: str, name: str) -> str | None:
    obj = cluster.get_one("jobs.cryokube.io", name, namespace=namespace)
    return None if obj is None else obj.get("status", {}).get("phase")


def phases(cluster: Cluster, namespace: str) -> dict[str, str | None]:
    """Phase of every CryoKube Job in ``namespace``, in one API call."""
    return {
        j["metadata"]["name"]: j.get("status", {}).get("phase")
        for j in cluster.get("jobs.cryokube.io", namespace=namespace)
    }


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str, timeout_s: float) -> None:
    wait_until(
        lambda: phase_of(cluster, namespace, name) == phase,
        timeout_s=timeout_s,
        what=f"Job {namespace}/{name} phase {phase}",
    )


def children(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """batch/v1 Jobs the operator created for CryoKube Job ``name``."""
    return cluster.get("jobs.batch", namespace=namespace, selector=f"cryokube.io/job={name}")


def running_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.get("pods", namespace=namespace)
        if p["status"].get("phase") in {"Pending", "Running"}
        and "deletionTimestamp" not in p["metadata"]
    ]


def pod_gpus(pod: dict[str, Any]) -> int:
    return sum(
        int(c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))
        for c in pod["spec"]["containers"]
    )


def wait_event(cluster: Cluster, namespace: str, name: str, kind: str, reason: str) -> None:
    """Wait for a ``kind`` Event with ``reason`` about CryoKube Job ``name`` (kubectl get)."""

    def posted() -> bool:
        return any(
            e["involvedObject"].get("apiVersion") == API
            and e["involvedObject"]["kind"] == "Job"
            and e["involvedObject"]["name"] == name
            and (e["type"], e["reason"]) == (kind, reason)
            for e in cluster.get("events", namespace=namespace)
        )

    wait_until(posted, timeout_s=STEP_TIMEOUT_S, what=f"{kind} {reason} Event about {name}")


def refusals(operator: Operator) -> list[str]:
    """Lines of the operator's log that show the API server refusing it (RBAC)."""
    return [
        line
        for line in operator.log().splitlines()
        if "Forbidden" in line or " 403" in line or "Not enough permissions" in line
    ]


def release(cluster: Cluster, namespace: str, selector: str = HOLD) -> None:
    """Remove the hold label from pods so kwok completes them."""
    cluster.kubectl("label", "pods", "-n", namespace, "-l", selector, f"{HOLD}-", "--overwrite")


def test_example_pipeline_runs_on_gpu_nodes(cluster: Cluster, namespace: str) -> None:
    # No quota: the quota gate deadlocks this pipeline (test_quota_does_not_deadlock_a_pipeline).
    cluster.apply([project(namespace, gpu_quota=None)])
    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "examples/pipeline.yaml").read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    cluster.apply(docs)
    names = [d["metadata"]["name"] for d in docs]

    peak_gpus = 0

    def all_done() -> bool:
        # Two API calls a poll: pods run for 2 s, and a slower poll could miss every one of them.
        nonlocal peak_gpus
        peak_gpus = max(peak_gpus, sum(pod_gpus(p) for p in running_pods(cluster, namespace)))
        now = phases(cluster, namespace)
        assert "Failed" not in now.values(), now
        return all(now.get(n) == "Succeeded" for n in names)

    wait_until(all_done, timeout_s=PIPELINE_TIMEOUT_S, what="pipeline Succeeded", interval_s=0.3)
    assert 0 < peak_gpus <= sum(GPU_NODES.values())
    # Every GPU pod, finished ones included (the Job controller keeps them), ran on a GPU node.
    placements = {
        p["metadata"]["name"]: p["spec"].get("nodeName")
        for p in cluster.get("pods", namespace=namespace)
        if pod_gpus(p)
    }
    assert placements
    assert set(placements.values()) <= set(GPU_NODES), placements
    # Gating: every child started after each of its inputs' children completed.
    child_of = {n: children(cluster, namespace, n) for n in names}
    assert all(len(c) == 1 for c in child_of.values()), {n: len(c) for n, c in child_of.items()}
    for doc in docs:
        started = child_of[doc["metadata"]["name"]][0]["metadata"]["creationTimestamp"]
        for upstream in doc["spec"].get("inputs", []):
            finished = child_of[upstream["job"]][0]["status"]["completionTime"]
            assert started >= finished, (doc["metadata"]["name"], upstream["job"])


def test_quota_and_free_gpus_gate_pods(cluster: Cluster, namespace: str) -> None:
    # Quota 4 GPUs of 2-GPU Jobs: two run, the third waits on the quota.
    cluster.apply([project(namespace, gpu_quota=4)])
    held = {HOLD: "true"}
    cluster.apply([job(namespace, f"j{i}", gpus=2, labels=held) for i in range(3)])
    wait_until(
        lambda: len(running_pods(cluster, namespace)) == 2 or None,
        timeout_s=STEP_TIMEOUT_S,
        what="two pods",
    )
    nodes = wait_until(
        lambda: (
            [p["spec"].get("nodeName") for p in running_pods(cluster, namespace)]
            if all(p["spec"].get("nodeName") for p in running_pods(cluster, namespace))
            else None
        ),
        timeout_s=STEP_TIMEOUT_S,
        what="pods bound",
    )
    # Two GPUs per node: each 2-GPU pod has a GPU node to itself.
    assert len(set(nodes)) == 2
    assert set(nodes) <= set(GPU_NODES)
    waiting = [n for n in ("j0", "j1", "j2") if not children(cluster, namespace, n)]
    assert len(waiting) == 1

    def quota_reason() -> bool:
        body = cluster.get_one("jobs.cryokube.io", waiting[0], namespace=namespace) or {}
        return "QuotaExceeded" in [
            c.get("reason") for c in body.get("status", {}).get("conditions", [])
        ]

    wait_until(quota_reason, timeout_s=STEP_TIMEOUT_S, what=f"{waiting[0]} QuotaExceeded")
    wait_event(cluster, namespace, waiting[0], "Normal", "QuotaExceeded")
    for started in {"j0", "j1", "j2"} - {waiting[0]}:
        wait_event(cluster, namespace, started, "Normal", "Created")
    release(cluster, namespace)
    for n in {"j0", "j1", "j2"} - {waiting[0]}:
        wait_phase(cluster, namespace, n, "Succeeded", STEP_TIMEOUT_S)
    wait_until(
        lambda: running_pods(cluster, namespace) or None, timeout_s=STEP_TIMEOUT_S, what="third pod"
    )
    release(cluster, namespace)
    wait_phase(cluster, namespace, waiting[0], "Succeeded", STEP_TIMEOUT_S)


def test_pods_wait_for_free_gpus(cluster: Cluster, namespace: str) -> None:
    # Quota above the cluster's 6 GPUs: the scheduler, not the quota, holds the fourth pod.
    cluster.apply([project(namespace, gpu_quota=16)])
    cluster.apply([job(namespace, f"g{i}", gpus=2, labels={HOLD: "true"}) for i in range(4)])

    def three_bound_one_pending() -> list[dict[str, Any]] | None:
        pods = running_pods(cluster, namespace)
        bound = [p for p in pods if p["spec"].get("nodeName")]
        return pods if len(pods) == 4 and len(bound) == 3 else None

    pods = wait_until(three_bound_one_pending, timeout_s=STEP_TIMEOUT_S, what="3 pods bound of 4")
    bound = sorted(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))
    assert bound == sorted(GPU_NODES)
    (pending,) = [p["metadata"]["name"] for p in pods if not p["spec"].get("nodeName")]

    def scheduler_message() -> str | None:
        events = cluster.get("events", namespace=namespace)
        return next(
            (
                e["message"]
                for e in events
                if e["involvedObject"]["name"] == pending and e["reason"] == "FailedScheduling"
            ),
            None,
        )

    message = wait_until(scheduler_message, timeout_s=STEP_TIMEOUT_S, what="FailedScheduling")
    assert f"Insufficient {GPU_RESOURCE}" in message
    release(cluster, namespace)
    wait_until(
        lambda: (
            (cluster.get_one("pods", pending, namespace=namespace) or {})
            .get("spec", {})
            .get("nodeName")
        ),
        timeout_s=STEP_TIMEOUT_S,
        what="fourth pod bound once GPUs were freed",
    )
    release(cluster, namespace)
    for i in range(4):
        wait_phase(cluster, namespace, f"g{i}", "Succeeded", STEP_TIMEOUT_S)


def test_failing_pod_fails_the_job(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=2)])
    # Exit code 2 is the worker's "bad input" code: the pod failure policy fails at once.
    cluster.apply([job(namespace, "bad", labels={"cryokube.test/exit-code": "2"})])
    wait_phase(cluster, namespace, "bad", "Failed", STEP_TIMEOUT_S)
    status = cluster.get_one("jobs.cryokube.io", "bad", namespace=namespace)
    assert status is not None
    reasons = [c.get("reason") for c in status["status"].get("conditions", [])]
    assert "PodFailurePolicy" in reasons
    (child,) = children(cluster, namespace, "bad")
    assert child["status"].get("failed") == 1
    wait_event(cluster, namespace, "bad", "Warning", "PodFailurePolicy")


def test_deleting_a_job_collects_its_children(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=2)])
    cluster.apply([job(namespace, "doomed", labels={HOLD: "true"})])
    wait_until(
        lambda: running_pods(cluster, namespace) or None, timeout_s=STEP_TIMEOUT_S, what="pod"
    )
    (child,) = children(cluster, namespace, "doomed")
    owners = child["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"]) for o in owners] == [("Job", "doomed")]
    cluster.kubectl("delete", "cjob", "doomed", "-n", namespace, "--timeout=60s")
    wait_until(
        lambda: (
            not children(cluster, namespace, "doomed")
            and not cluster.get("pods", namespace=namespace)
            and not [
                s
                for s in cluster.get("secrets", namespace=namespace)
                if s["metadata"]["name"].startswith("doomed")
            ]
        ),
        timeout_s=STEP_TIMEOUT_S,
        what="children, pods and token Secret collected",
    )


def test_deleting_a_project_collects_its_jobs(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=4)])
    cluster.apply([job(namespace, name, labels={HOLD: "true"}) for name in ("one", "two")])
    wait_until(
        lambda: len(running_pods(cluster, namespace)) == 2 or None,
        timeout_s=STEP_TIMEOUT_S,
        what="two pods",
    )
    owner = cluster.get_one("projects.cryokube.io", "apoferritin", namespace=namespace)
    assert owner is not None
    for name in ("one", "two"):
        body = cluster.get_one("jobs.cryokube.io", name, namespace=namespace)
        assert body is not None
        (reference,) = body["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["uid"]) == ("Project", owner["metadata"]["uid"])
    cluster.kubectl("delete", "cproj", "apoferritin", "-n", namespace, "--timeout=60s")
    wait_until(
        lambda: (
            not cluster.get("jobs.cryokube.io", namespace=namespace)
            and not cluster.get("jobs.batch", namespace=namespace)
            and not cluster.get("pods", namespace=namespace)
            and not [
                s
                for s in cluster.get("secrets", namespace=namespace)
                if s["metadata"]["name"].endswith("-token")
            ]
        ),
        timeout_s=STEP_TIMEOUT_S,
        what="Jobs, batch Jobs, pods and token Secrets collected with the Project",
    )


def test_restarted_operator_creates_no_duplicates(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.apply([project(namespace, gpu_quota=2)])
    cluster.apply(
        [
            job(namespace, "first", labels={HOLD: "true"}),
            job(namespace, "second", inputs=(("first", "micrographs"),)),
        ]
    )
    wait_until(
        lambda: running_pods(cluster, namespace) or None, timeout_s=STEP_TIMEOUT_S, what="pod"
    )
    (before,) = children(cluster, namespace, "first")
    operator.stop()
    release(cluster, namespace)
    wait_until(
        lambda: children(cluster, namespace, "first")[0]["status"].get("succeeded") == 1,
        timeout_s=STEP_TIMEOUT_S,
        what="first child completes while the operator is down",
    )
    operator.start()
    wait_phase(cluster, namespace, "second", "Succeeded", START_TIMEOUT_S)
    (after,) = children(cluster, namespace, "first")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert len(children(cluster, namespace, "second")) == 1
    assert phase_of(cluster, namespace, "first") == "Succeeded"


def test_node_going_away_retries_the_pod(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=2)])
    cluster.apply([job(namespace, "survivor", labels={HOLD: "true"})])
    first = wait_until(
        lambda: next(
            (p for p in running_pods(cluster, namespace) if p["spec"].get("nodeName")), None
        ),
        timeout_s=STEP_TIMEOUT_S,
        what="pod bound",
    )
    lost = first["spec"]["nodeName"]
    node = cluster.get_one("nodes", lost, namespace="default")
    assert node is not None
    cluster.kubectl("delete", "node", lost)
    try:
        # The pod garbage collector fails orphaned pods (DisruptionTarget), which the child's pod
        # failure policy ignores: the Job controller makes a new pod, on another node.
        second = wait_until(
            lambda: next(
                (
                    p
                    for p in running_pods(cluster, namespace)
                    if p["metadata"]["uid"] != first["metadata"]["uid"]
                    and p["spec"].get("nodeName")
                ),
                None,
            ),
            timeout_s=NODE_LOSS_TIMEOUT_S,
            what="replacement pod bound",
            interval_s=1.0,
        )
        assert second["spec"]["nodeName"] != lost
        release(cluster, namespace)
        wait_phase(cluster, namespace, "survivor", "Succeeded", STEP_TIMEOUT_S)
        (child,) = children(cluster, namespace, "survivor")
        assert child["status"].get("failed", 0) == 0
    finally:
        gpus = int(node["status"]["capacity"][GPU_RESOURCE])
        cluster.kubectl("create", "-f", "-", stdin=json.dumps(fake_node(lost, gpus=gpus)))
        cluster.kubectl("wait", "--for=condition=Ready", "node", lost, "--timeout=60s")


def test_quota_does_not_deadlock_a_pipeline(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=1)])
    # The downstream Job (first by name) is waiting for its input when the upstream one arrives.
    cluster.apply([job(namespace, "a-down", inputs=(("z-up", "micrographs"),))])
    wait_phase(cluster, namespace, "a-down", "Waiting", STEP_TIMEOUT_S)
    wait_event(cluster, namespace, "a-down", "Normal", "WaitingForInputs")
    cluster.apply([job(namespace, "z-up")])
    wait_phase(cluster, namespace, "a-down", "Succeeded", PIPELINE_TIMEOUT_S)  # never, if locked


def test_gpu_toleration_matches_valued_taints(cluster: Cluster, namespace: str) -> None:
    cluster.apply([project(namespace, gpu_quota=2)])
    cluster.apply([job(namespace, "tolerant")])
    wait_phase(cluster, namespace, "tolerant", "Succeeded", STEP_TIMEOUT_S)
    (child,) = children(cluster, namespace, "tolerant")
    tolerations = child["spec"]["template"]["spec"]["tolerations"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_workers_get_the_chart_defaults(cluster: Cluster, namespace: str) -> None:
    # The session operator reads the chart's rendered worker defaults; the Project sets only an
    # image and tolerations, and the Job only its GPUs.
    values = yaml.safe_load((REPO_ROOT / "charts/cryokube/values.yaml").read_text())["workers"]
    cluster.apply([project(namespace, gpu_quota=2)])
    cluster.apply([job(namespace, "defaulted")])
    wait_phase(cluster, namespace, "defaulted", "Succeeded", STEP_TIMEOUT_S)
    (child,) = children(cluster, namespace, "defaulted")
    template = child["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"] == "ghcr.io/cryokube/worker:0.1.0"  # the Project's own
    requests = values["resources"]["requests"]
    assert container["resources"]["requests"]["cpu"] == requests["cpu"]
    assert container["resources"]["requests"]["memory"] == requests["memory"]
    assert values["podLabels"].items() <= template["metadata"]["labels"].items()
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {values["ssdCache"]["mountPath"]}


def test_namespaced_mode_needs_only_its_rbac(
    cluster: Cluster, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    # The chart with operator.watchNamespaces: Roles in `namespace` only, plus the ClusterRole of
    # kopf's observation. The session's cluster-wide operator stops so that only this one acts.
    kubeconfig = chart_operator_kubeconfig(
        cluster,
        release="e2e-namespaced",
        namespace="cryokube-e2e-namespaced",
        path=tmp_path / "kubeconfig",
        values=[f"operator.watchNamespaces={{{namespace}}}"],
    )
    elsewhere = cluster.namespace(f"{namespace}-x")
    namespaced = Operator(
        kubeconfig=kubeconfig,
        log_path=tmp_path / "operator.log",
        env={"CRYOKUBE_RECHECK_INTERVAL_S": "2", "CRYOKUBE_WATCH_NAMESPACES": namespace},
    )
    operator.stop()
    try:
        namespaced.start()
        cluster.apply([project(namespace, gpu_quota=2), project(elsewhere, gpu_quota=2)])
        cluster.apply([job(namespace, "served"), job(elsewhere, "ignored")])
        wait_phase(cluster, namespace, "served", "Succeeded", START_TIMEOUT_S)
        wait_event(cluster, namespace, "served", "Normal", "Created")
        assert phase_of(cluster, elsewhere, "ignored") is None  # not this operator's namespace
        assert not children(cluster, elsewhere, "ignored")
    finally:
        namespaced.stop()
        # Gone before the cluster-wide operator returns, or it would reconcile "ignored" and
        # post Events into a terminating namespace (403 NamespaceTerminating).
        cluster.kubectl("delete", "namespace", elsewhere, "--timeout=60s")
        operator.start()
    assert not refusals(namespaced), "\n".join(refusals(namespaced)[:5])


def test_chart_rbac_was_enough(operator: Operator) -> None:
    # Runs last in this module: every call above was made with the chart's ServiceAccount.
    assert not refusals(operator), "\n".join(refusals(operator)[:5])
