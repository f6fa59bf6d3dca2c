"""Observed state in, conditions and one decision out: the pure core of Job reconciliation.

:func:`plan_job` is called on every reconcile pass (create, update, resume, timer, child and pod
events). It looks at the Job resource, its Project, the child batch Job and its pods, the
upstream Jobs and the project's GPU use, and returns a :class:`Plan`: the ``status`` to write
and at most one kind of write to the cluster (create the child, or delete it). Handlers only
apply plans, so the whole state machine is tested here without a cluster (API conventions:
level-based, "phase" is derived, never a control-flow chain).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from cryokube.processing import jobs as catalog

from . import reasons
from .conditions import get_condition, set_condition
from .manifests import child_name
from .models import JobResource, ProjectResource

Action = Literal["none", "create", "delete"]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})

# Waiting reasons of a container that mean its image cannot be pulled.
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


@dataclass(frozen=True)
class Peer:
    """What the operator knows of another Job of the same namespace (from the kopf index).

    Attributes
    ----------
    name : str
        Job name.
    project : str
        Its ``spec.project``.
    job_type : str
        Its ``spec.type``.
    phase : str or None
        Its derived ``status.phase``.
    gpus : int
        GPUs it holds while its child runs (``gpus_per_pod * shards``).
    priority : int
        Its ``spec.priority``.
    holds_gpus : bool
        Whether its child exists and has not ended (it counts against the quota).
    inputs : tuple of str
        Names of the Jobs it takes inputs from (``spec.inputs[*].job``).
    """

    name: str
    project: str
    job_type: str
    phase: str | None
    gpus: int
    priority: int
    holds_gpus: bool
    inputs: tuple[str, ...] = ()


def peer_of(body: Any) -> Peer | None:
    """What other Jobs need to know of this one; ``None`` for a Job whose spec is invalid."""
    try:
        job = JobResource.model_validate(body)
    except ValueError:
        return None
    status = job.status
    return Peer(
        name=job.metadata.name,
        project=job.spec.project,
        job_type=job.spec.type,
        phase=status.phase,
        gpus=job.gpus_total(),
        priority=job.spec.priority,
        holds_gpus=bool(status.gpus) and status.phase not in TERMINAL_PHASES,
        inputs=tuple(ref.job for ref in job.spec.inputs),
    )


@dataclass
class Plan:
    """The outcome of one reconcile pass.

    Attributes
    ----------
    action : {"none", "create", "delete"}
        The one write to make to the cluster.
    status : dict
        The complete ``status`` to patch (camelCase keys).
    changed : bool
        Whether ``status`` differs from the observed one (no write when false).
    event : tuple of (str, str, str) or None
        ``(type, reason, message)`` of a Kubernetes Event to post when the Ready reason changed.
    """

    action: Action
    status: dict[str, Any]
    changed: bool
    event: tuple[str, str, str] | None = None


def _child_finished(child: dict[str, Any]) -> tuple[str, str, str] | None:
    """``(condition type, reason, message)`` when the child batch Job ended, else ``None``."""
    for cond in child.get("status", {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return reasons.SUCCEEDED, reasons.COMPLETED, "all shards completed"
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or reasons.JOB_FAILED
            known = {
                reasons.BACKOFF_LIMIT_EXCEEDED,
                reasons.POD_FAILURE_POLICY,
                reasons.DEADLINE_EXCEEDED,
            }
            return (
                reasons.FAILED,
                reason if reason in known else reasons.JOB_FAILED,
                cond.get("message") or "the child Job failed",
            )
    return None


def _pods_state(pods: list[dict[str, Any]]) -> tuple[str, str, str]:
    """``(Ready status, reason, message)`` from the child's pods while it is active."""
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if running:
        return "True", reasons.RUNNING, f"{len(running)} pod(s) running"
    for pod in pods:
        status = pod.get("status", {})
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_PULL_REASONS:
                return (
                    "False",
                    reasons.IMAGE_PULL_FAILED,
                    waiting.get("message") or waiting["reason"],
                )
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == reasons.UNSCHEDULABLE
            ):
                return "False", reasons.UNSCHEDULABLE, cond.get("message") or "no node fits"
    return "False", reasons.PENDING, "waiting for pods to start"


def _input_gate(job: JobResource, peers: dict[str, Peer]) -> tuple[str, str] | None:
    """``(reason, message)`` when an input blocks the Job, else ``None``.

    Returns ``InvalidSpec`` for a reference to an output the upstream type does not have or that
    no input slot accepts, ``InputFailed`` when an upstream Job failed or was cancelled, and
    ``WaitingForInputs`` while one is missing or has not succeeded.
    """
    job_type = catalog.get(job.spec.type)
    waiting = []
    for index, ref in enumerate(job.spec.inputs):
        upstream = peers.get(ref.job)
        if upstream is None:
            waiting.append(f"{ref.job} (not found)")
            continue
        if upstream.project != job.spec.project:
            return reasons.INVALID_SPEC, (
                f"spec.inputs[{index}].job: {ref.job} belongs to project {upstream.project}"
            )
        try:
            group = catalog.get(upstream.job_type).output_group(ref.output)
        except ValueError as exc:
            return reasons.INVALID_SPEC, f"spec.inputs[{index}].output: {exc}"
        if not any(slot.kind == group.kind for slot in job_type.inputs):
            return reasons.INVALID_SPEC, (
                f"spec.inputs[{index}].output: {job_type.name} takes no {group.kind} input"
            )
        if upstream.phase in {"Failed", "Cancelled"}:
            return reasons.INPUT_FAILED, f"input job {ref.job} {upstream.phase.lower()}"
        if upstream.phase != "Succeeded":
            waiting.append(f"{ref.job} ({upstream.phase or 'not started'})")
    if waiting:
        return reasons.WAITING_FOR_INPUTS, "waiting for " + ", ".join(waiting)
    return None


def _inputs_done(peer: Peer, peers: dict[str, Peer]) -> bool:
    """Whether every Job ``peer`` takes inputs from has succeeded (it could start now)."""
    return all(
        (upstream := peers.get(name)) is not None and upstream.phase == "Succeeded"
        for name in peer.inputs
    )


def _quota_gate(
    job: JobResource, project: ProjectResource, peers: dict[str, Peer]
) -> tuple[str, str] | None:
    """``(QuotaExceeded, message)`` when starting the Job would exceed the project's GPU quota.

    Jobs waiting with a higher ``spec.priority`` (ties: the smaller name) are served first:
    their GPUs are counted as if they held them, but only once every input they wait for has
    succeeded (a downstream Job must never hold back the upstream Job it waits for).
    """
    quota = project.spec.gpu_quota
    wanted = job.gpus_total()
    if quota is None or wanted == 0:
        return None
    mine = job.spec.project, job.metadata.name
    others = [p for p in peers.values() if p.project == mine[0] and p.name != mine[1]]
    in_use = sum(p.gpus for p in others if p.holds_gpus)
    ahead = sum(
        p.gpus
        for p in others
        if not p.holds_gpus
        and p.phase not in TERMINAL_PHASES
        and (-p.priority, p.name) < (-job.spec.priority, job.metadata.name)
        and in_use + p.gpus <= quota
        and _inputs_done(p, peers)
    )
    if in_use + ahead + wanted <= quota:
        return None
    return reasons.QUOTA_EXCEEDED, (
        f"needs {wanted} GPU(s); project {project.metadata.name} uses {in_use} of {quota}"
        + (f" and {ahead} are reserved for higher-priority jobs" if ahead else "")
    )


def plan_job(
    job: JobResource,
    *,
    project: ProjectResource | None,
    child: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    peers: dict[str, Peer],
    now: dt.datetime,
    progress_percent: int | None = None,
) -> Plan:
    """Decide the status of ``job`` and the one write that moves it forward.

    Parameters
    ----------
    job : JobResource
        The Job, already validated (invalid specs never reach here: see :func:`invalid_plan`).
    project : ProjectResource or None
        Its Project, ``None`` when it does not exist (yet).
    child : dict or None
        The observed child batch Job.
    pods : list of dict
        The observed pods of the child.
    peers : dict of str to Peer
        Other Jobs of the namespace by name (inputs and quota).
    now : datetime.datetime
        Aware current time, for ``lastTransitionTime``.
    progress_percent : int, optional
        Progress mirrored from the metadata service.

    Returns
    -------
    Plan
    """
    old_status = job.status.model_dump(by_alias=True, exclude_none=True)
    conditions = [dict(c) for c in old_status.get("conditions", [])]
    generation = job.metadata.generation
    terminal = next(
        (
            t
            for t in (reasons.SUCCEEDED, reasons.FAILED)
            if (get_condition(conditions, t) or {}).get("status") == "True"
        ),
        None,
    )
    action: Action = "none"
    gpus = 0
    finished = _child_finished(child) if child is not None else None

    if terminal is not None and finished is None and not (job.spec.cancel and child):
        # Ended before (child gone or already recorded): nothing may restart it.
        phase = old_status.get("phase", terminal)
        ready = None
    elif job.spec.cancel:
        action = "delete" if child is not None and finished is None else "none"
        phase, ready = "Cancelled", ("False", reasons.CANCELLED, "cancelled by spec.cancel")
        set_condition(
            conditions, reasons.FAILED, "True", reasons.CANCELLED, ready[2], generation, now
        )
    elif finished is not None:
        cond_type, reason, message = finished
        phase = "Succeeded" if cond_type == reasons.SUCCEEDED else "Failed"
        ready = ("False", reason, message)
        set_condition(conditions, cond_type, "True", reason, message, generation, now)
    elif child is not None:
        gpus = job.gpus_total()
        if child.get("spec", {}).get("suspend"):
            phase, ready = "Queued", ("False", reasons.QUEUED, f"queued in {job.spec.queue}")
        else:
            ready = _pods_state(pods)
            phase = "Running" if ready[0] == "True" else "Pending"
    elif project is None:
        phase = "Waiting"
        ready = ("False", reasons.PROJECT_NOT_FOUND, f"project {job.spec.project} not found")
    else:
        gate = _input_gate(job, peers) or _quota_gate(job, project, peers)
        if gate is None:
            action, gpus = "create", job.gpus_total()
            phase, ready = "Pending", ("False", reasons.CREATED, "creating the worker Job")
        elif gate[0] in {reasons.INPUT_FAILED, reasons.INVALID_SPEC}:
            phase, ready = "Failed", ("False", *gate)
            set_condition(conditions, reasons.FAILED, "True", *gate, generation, now)
        else:
            phase, ready = "Waiting", ("False", *gate)

    old_ready = get_condition(conditions, reasons.READY)
    if ready is not None:
        set_condition(conditions, reasons.READY, *ready, generation, now)
    status: dict[str, Any] = {
        **old_status,
        "observedGeneration": generation,
        "phase": phase,
        "conditions": conditions,
        "gpus": gpus if terminal is None or job.spec.cancel else 0,
    }
    if child is not None or action == "create":
        status["child"] = child_name(job.metadata.name)
    if progress_percent is not None:
        status["progressPercent"] = progress_percent
    elif phase == "Succeeded":
        status["progressPercent"] = 100
    event = None
    if ready is not None and (old_ready or {}).get("reason") != ready[1]:
        warn = ready[1] in _WARNING_REASONS
        event = ("Warning" if warn else "Normal", ready[1], ready[2])
    return Plan(action=action, status=status, changed=status != old_status, event=event)


_WARNING_REASONS = frozenset(
    {
        reasons.INVALID_SPEC,
        reasons.INPUT_FAILED,
        reasons.UNSCHEDULABLE,
        reasons.IMAGE_PULL_FAILED,
        reasons.BACKOFF_LIMIT_EXCEEDED,
        reasons.POD_FAILURE_POLICY,
        reasons.DEADLINE_EXCEEDED,
        reasons.JOB_FAILED,
        reasons.PROJECT_NOT_FOUND,
    }
)


def invalid_plan(
    body_status: dict[str, Any], generation: int | None, message: str, now: dt.datetime
) -> Plan:
    """The plan for a Job whose spec does not validate: ``Ready=False, InvalidSpec``, no child.

    Parameters
    ----------
    body_status : dict
        The raw observed ``status`` (the spec could not be parsed, the status still can be read).
    generation : int or None
        ``metadata.generation``.
    message : str
        The validation message naming the field (``spec.params.res_max_align: ...``).
    now : datetime.datetime
        Aware current time.
    """
    conditions = [dict(c) for c in body_status.get("conditions") or []]
    old_ready = get_condition(conditions, reasons.READY)
    set_condition(
        conditions, reasons.READY, "False", reasons.INVALID_SPEC, message, generation, now
    )
    status = {
        **body_status,
        "observedGeneration": generation,
        "phase": "Invalid",
        "conditions": conditions,
    }
    event = None
    if (old_ready or {}).get("reason") != reasons.INVALID_SPEC:
        event = ("Warning", reasons.INVALID_SPEC, message)
    return Plan(action="none", status=status, changed=status != body_status, event=event)


def plan_project(project: ProjectResource, *, cluster: bool, now: dt.datetime) -> Plan:
    """Decide a Project's status: ``Ready=True`` unless its storage cannot work here.

    Parameters
    ----------
    project : ProjectResource
        The validated Project.
    cluster : bool
        Whether the operator runs in a cluster, where ``spec.storage.path`` is meaningless.
    now : datetime.datetime
        Aware current time.
    """
    old_status = project.status.model_dump(by_alias=True, exclude_none=True)
    conditions = [dict(c) for c in old_status.get("conditions", [])]
    old_ready = get_condition(conditions, reasons.READY)
    if cluster and project.spec.storage.path is not None:
        ready = (
            "False",
            reasons.INVALID_SPEC,
            (
                "spec.storage.path: a local path is for the workstation runner only; "
                "use spec.storage.pvc or spec.storage.s3 in a cluster"
            ),
        )
    else:
        ready = ("True", reasons.PROJECT_READY, "storage configured")
    set_condition(conditions, reasons.READY, *ready, project.metadata.generation, now)
    status = {
        **old_status,
        "observedGeneration": project.metadata.generation,
        "phase": "Ready" if ready[0] == "True" else "Invalid",
        "conditions": conditions,
    }
    event = None
    if (old_ready or {}).get("reason") != ready[1]:
        event = ("Normal" if ready[0] == "True" else "Warning", ready[1], ready[2])
    return Plan(action="none", status=status, changed=status != old_status, event=event)
