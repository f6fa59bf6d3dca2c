"""kopf handlers of cryokube.io Jobs: index the world, then apply :func:`status.plan_job`.

One coroutine, :func:`reconcile_job`, runs on every trigger (create, update, resume, a timer,
and events of the child batch Job and its pods) and is level-based: it reads the current state
from kopf indexes, asks the pure planner what to do, and applies at most one kind of write.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import os
from typing import Any

import kopf

from .. import metrics, reasons
from ..conditions import get_condition
from ..manifests import (
    JOB_LABEL,
    build_child_job,
    build_token_secret,
    child_name,
    with_project_owner,
)
from ..metadata.client import MetadataUnavailable
from ..models import GROUP, VERSION, InvalidSpecError, JobResource, ProjectResource, parse_job
from ..status import TERMINAL_PHASES, Peer, Plan, invalid_plan, peer_of, plan_job
from . import kube

JOBS = (GROUP, VERSION, "jobs")
CHILD_SELECTOR = {JOB_LABEL: kopf.PRESENT}

RECHECK_INTERVAL_S = float(os.environ.get("CRYOKUBE_RECHECK_INTERVAL_S", "10"))
"""How often a non-terminal Job is re-checked: inputs that succeeded and freed quota are seen
by this timer (the child's own events arrive at once)."""


@kopf.index(*JOBS)
def job_peers(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Peer] | None:
    """Index every Job by namespace, for input gating and the GPU quota."""
    peer = peer_of(body)
    return None if peer is None else {str(namespace): peer}


@kopf.index("batch", "v1", "jobs", labels=CHILD_SELECTOR)
def child_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """Index our child batch Jobs by ``(namespace, parent name)``.

    Only what :func:`~cryokube.operator.status.plan_job` reads is kept (``spec.suspend`` and the
    status): the pod template of every child would otherwise stay in memory (a 1,000-Job run
    held about 1 GB).
    """
    spec = {"suspend": body.spec["suspend"]} if "suspend" in body.spec else {}
    return {
        (namespace, labels[JOB_LABEL]): {"spec": spec, "status": copy.deepcopy(dict(body.status))}
    }


@kopf.index("", "v1", "pods", labels=CHILD_SELECTOR)
def child_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """Index the pods of our children by ``(namespace, parent name)``."""
    return {(namespace, labels[JOB_LABEL]): {"status": copy.deepcopy(dict(body.status))}}


def _project(
    indexes: dict[str, kopf.Index[Any, Any]], namespace: str, name: str
) -> ProjectResource | None:
    """The Project named ``name`` in ``namespace``, from the index; ``None`` if not (yet) seen."""
    bodies = list(indexes["projects"].get((namespace, name), []))
    return ProjectResource.model_validate(bodies[0]) if bodies else None


async def reconcile_job(
    body: Any,
    *,
    memo: kopf.Memo,
    indexes: dict[str, kopf.Index[Any, Any]],
    patch: kopf.Patch | None = None,
) -> Plan:
    """Plan from the indexes and apply the plan's write; return the plan (status not written).

    With ``patch`` (the Job's own handlers), the Job's Project also becomes one of its owners,
    in the same PATCH as the status.
    """
    now = dt.datetime.now(dt.UTC)
    try:
        job = parse_job(body)
    except InvalidSpecError as exc:
        meta, status = body.get("metadata", {}), dict(body.get("status") or {})
        return invalid_plan(status, meta.get("generation"), str(exc), now)
    ns, name = job.metadata.namespace, job.metadata.name
    key = (ns, name)
    peers = {p.name: p for p in indexes["job_peers"].get(ns, [])}
    for other_key, gpus in list(memo.reserved.items()):  # creates the index has not seen yet
        other_ns, other = other_key
        if other_ns != ns or other not in peers:
            continue
        if peers[other].holds_gpus:
            del memo.reserved[other_key]  # the index has caught up: keep the overlay small
        elif other != name and gpus > 0:
            peers[other] = dataclasses.replace(peers[other], holds_gpus=True)
    project = _project(indexes, ns, job.spec.project)
    if patch is not None and project is not None:
        owners = with_project_owner(
            list(body.get("metadata", {}).get("ownerReferences", [])), project
        )
        if owners is not None:
            patch.metadata["ownerReferences"] = owners
    children = list(indexes["child_jobs"].get(key, []))
    pods = list(indexes["child_pods"].get(key, []))
    progress = await memo.metadata.progress_percent(job) if children else None
    plan = plan_job(
        job,
        project=project,
        child=children[0] if children else None,
        pods=pods,
        peers=peers,
        now=now,
        progress_percent=progress,
    )
    if plan.action == "create" and project is not None and key not in memo.created:
        # Claimed before the first await: the timer and the event handlers of one Job run in
        # different tasks, and until the child index shows the child they would POST it again.
        memo.created.add(key)
        memo.reserved[key] = job.gpus_total()
        try:
            child = build_child_job(job, project, config=memo.worker_config)
            pod = child["spec"]["template"]["spec"]
            token = await memo.metadata.register_job(
                job, requests=pod["containers"][0]["resources"]["requests"]
            )
            secret = build_token_secret(job, token)
            kopf.adopt([secret, child], owner=body)
            await kube.create(memo.api, secret)
            await kube.create(memo.api, child)
        except BaseException:
            memo.created.discard(key)
            raise
    elif plan.action == "delete":
        await kube.delete_child(memo.api, ns, child_name(name))
        memo.created.discard(key)
        await memo.metadata.mark_job(job, plan.status["phase"])
    if children:
        memo.created.discard(key)  # the index has caught up
    if not plan.status.get("gpus"):
        memo.reserved.pop(key, None)
    _observe(job, plan, peers)
    return plan


def _observe(job: JobResource, plan: Plan, peers: dict[str, Peer]) -> None:
    """Update the Prometheus metrics after a pass."""
    metrics.RECONCILES.labels(plan.action, plan.status["phase"]).inc()
    ns, project = job.metadata.namespace, job.spec.project
    others = (p for p in peers.values() if p.project == project and p.name != job.metadata.name)
    in_use = sum(p.gpus for p in others if p.holds_gpus) + int(plan.status.get("gpus") or 0)
    metrics.GPUS_IN_USE.labels(ns, project).set(in_use)
    metrics.JOBS_WAITING.labels(ns).set(sum(p.phase == "Waiting" for p in peers.values()))


def _post_event(body: Any, plan: Plan, memo: kopf.Memo) -> None:
    """Post the plan's Event once per reason: a pass on a body older than our last status write
    sees the previous reason again and would repeat the Event."""
    if plan.event is None:
        return
    kind, reason, message = plan.event
    meta = body.get("metadata", {})
    key = (meta.get("namespace"), meta.get("name"))
    if memo.posted.get(key) != reason:
        memo.posted[key] = reason
        kopf.event(body, type=kind, reason=reason, message=message)


@kopf.on.resume(*JOBS)
@kopf.on.create(*JOBS)
@kopf.on.update(*JOBS)
@kopf.timer(
    *JOBS,
    interval=RECHECK_INTERVAL_S,
    initial_delay=RECHECK_INTERVAL_S,  # the create/resume handler makes the first pass
    # Ended and invalid Jobs change only through their spec (on.update), never by waiting.
    when=lambda status, **_: status.get("phase") not in {*TERMINAL_PHASES, "Invalid"},
)
async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    """Reconcile a Job; write its status; an invalid spec is a permanent error."""
    try:
        plan = await reconcile_job(body, memo=memo, indexes=kwargs, patch=patch)
    except MetadataUnavailable as exc:  # the service is down: not an error of the Job
        raise kopf.TemporaryError(str(exc), delay=exc.retry_after_s) from exc
    if plan.changed:
        patch.status.update(plan.status)
    _post_event(body, plan, memo)
    if plan.status["phase"] == "Invalid":
        invalid = get_condition(plan.status["conditions"], reasons.READY) or {}
        raise kopf.PermanentError(invalid.get("message", "invalid spec"))


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)
@kopf.on.event("", "v1", "pods", labels=CHILD_SELECTOR)
async def child_changed(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Re-reconcile the parent Job when its child or one of the child's pods changes."""
    parent = await kube.get_job(memo.api, str(namespace), labels[JOB_LABEL])
    if parent is None:
        return
    plan = await reconcile_job(parent, memo=memo, indexes=kwargs)
    if plan.changed:
        await kube.patch_job_status(memo.api, str(namespace), labels[JOB_LABEL], plan.status)
    _post_event(parent, plan, memo)


@kopf.on.delete(*JOBS, optional=True)
async def deleted(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Best effort: delete the child (and its pods) when a Job is deleted; never blocks it."""
    for table in (memo.reserved, memo.posted):
        table.pop((namespace, name), None)
    memo.created.discard((namespace, name))
    await kube.delete_child(memo.api, str(namespace), child_name(name))
