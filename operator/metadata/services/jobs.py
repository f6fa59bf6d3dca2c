"""Job rules: registration, the status state machine, and reads scoped to the caller's projects."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidTransition, NotFound
from ..models import (
    TERMINAL,
    Event,
    EventQuery,
    Exposure,
    ExposureQuery,
    Job,
    JobCreate,
    JobQuery,
    JobStatus,
    JobUpdate,
    Output,
    Page,
)
from ..repositories import Repositories
from ..repositories.base import now_ms
from .access import Identity
from .projects import ProjectService

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    # Running -> Queued is a retry after a lost pod; the operator bumps ``attempts`` with it.
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    **{s: frozenset() for s in TERMINAL},
}


async def transition(
    repos: Repositories, job: Job, target: JobStatus, changes: dict[str, Any]
) -> Job:
    """Move ``job`` to ``target`` (stamping ``status_times``) with extra top-level ``changes``.

    Re-sending the current status is a no-op that still applies ``changes`` (idempotent
    replays). The write is conditional on the status read, so two racing writers cannot both win.

    Raises
    ------
    InvalidTransition
        ``target`` is not reachable from the job's status, or the job moved on meanwhile.
    """
    if target is not job.status and target not in ALLOWED[job.status]:
        raise InvalidTransition(f"job {job.uid} cannot go from {job.status} to {target}")
    if target is not job.status:
        times = {k.value: int(v.timestamp() * 1000) for k, v in job.status_times.items()}
        times[target.value] = now_ms()
        changes = {**changes, "status": target.value, "status_times_ms": times}
    if not changes:
        return job
    updated = await repos.jobs.update(job.uid, changes, expect_status=job.status)
    if updated is None:
        raise InvalidTransition(f"job {job.uid} changed while updating; read it again")
    return updated


class JobService:
    """Jobs, their events and outputs, as one caller may see them."""

    def __init__(self, repos: Repositories) -> None:
        self._repos = repos
        self._projects = ProjectService(repos)

    async def register(self, who: Identity, job: JobCreate) -> tuple[Job, bool]:
        """Register ``job`` in a project ``who`` may use; ``False`` for an identical replay."""
        await self._projects.get(who, job.project)
        return await self._repos.jobs.create(job)

    async def get(self, who: Identity, uid: str) -> Job:
        """The job, or :class:`NotFound` when absent or in a project ``who`` may not use."""
        job = await self._repos.jobs.get(uid)
        if job is None:
            raise NotFound(f"job {uid!r} not found")
        try:
            await self._projects.get(who, job.project)
        except NotFound:
            raise NotFound(f"job {uid!r} not found") from None
        return job

    async def page(self, who: Identity, project: str, query: JobQuery) -> Page[Job]:
        """A filtered page of a project's jobs, newest first."""
        await self._projects.get(who, project)
        items, total = await self._repos.jobs.page(
            project=project,
            status=query.status,
            job_type=query.job_type,
            lane=query.lane,
            offset=query.offset,
            limit=query.limit,
        )
        return Page[Job](items=items, total=total, offset=query.offset, limit=query.limit)

    async def update(self, who: Identity, uid: str, update: JobUpdate) -> Job:
        """Apply the operator's scheduling view (admins and the operator only)."""
        job = await self.get(who, uid)
        who.require_admin("updating a job's scheduling state")
        changes = update.model_dump(exclude_none=True, exclude={"status"})
        return await transition(self._repos, job, update.status or job.status, changes)

    async def events(self, who: Identity, uid: str, query: EventQuery) -> list[Event]:
        """Events of a visible job after ``query.after_seq``."""
        await self.get(who, uid)
        return await self._repos.events.page(job=uid, after_seq=query.after_seq, limit=query.limit)

    async def outputs(self, who: Identity, uid: str) -> list[Output]:
        """Outputs of a visible job."""
        await self.get(who, uid)
        return await self._repos.outputs.list_for_job(uid)

    async def exposures(self, who: Identity, project: str, query: ExposureQuery) -> Page[Exposure]:
        """A page of a visible project's exposures."""
        await self._projects.get(who, project)
        items, total = await self._repos.exposures.page(
            project=project, accepted=query.accepted, offset=query.offset, limit=query.limit
        )
        return Page[Exposure](items=items, total=total, offset=query.offset, limit=query.limit)

    async def cancel(self, who: Identity, uid: str) -> Job:
        """Cancel a visible job that has not finished (members of its project may)."""
        job = await self.get(who, uid)
        return await transition(self._repos, job, JobStatus.CANCELLED, {})
