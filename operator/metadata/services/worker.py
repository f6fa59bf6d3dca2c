"""Worker RPC rules: every write is scoped by a verified job token and idempotent on replay.

Events, progress and images carry the worker's sequence number ``seq``: a replayed ``seq`` is
acknowledged with ``created=False`` and changes nothing. Output registration is keyed by name,
completion by the terminal status, heartbeats are last-write-wins.
"""

from __future__ import annotations

from collections import OrderedDict

from ..errors import NotFound, Unauthenticated
from ..models import (
    Completion,
    EventIn,
    EventKind,
    ExposureIn,
    Heartbeat,
    ImageIn,
    Job,
    JobStatus,
    OutputIn,
    ProgressReport,
)
from ..repositories import Repositories
from ..tokens import JobClaims
from .jobs import transition

KNOWN_JOBS_MAX = 10_000
"""How many (job UID -> project) pairs :class:`WorkerService` remembers."""


class WorkerService:
    """The writes a worker may make to its own job."""

    def __init__(self, repos: Repositories) -> None:
        self._repos = repos
        # A job's UID and project never change once registered, so appends (events, progress,
        # images, outputs) check them once per job instead of reading the job on every write;
        # this halves the store round trips of event ingestion.
        self._known: OrderedDict[str, str] = OrderedDict()

    async def _job(self, claims: JobClaims) -> Job:
        job = await self._repos.jobs.get(claims.job)
        if job is None:
            raise NotFound(f"job {claims.job!r} not found")
        if job.project != claims.project:
            raise Unauthenticated("job token names another project")
        self._remember(job.uid, job.project)
        return job

    def _remember(self, uid: str, project: str) -> None:
        self._known[uid] = project
        self._known.move_to_end(uid)
        while len(self._known) > KNOWN_JOBS_MAX:
            self._known.popitem(last=False)

    async def _project_of(self, claims: JobClaims) -> str:
        """The project of the claimed job, checked against the store once per job."""
        project = self._known.get(claims.job)
        if project is None:
            return (await self._job(claims)).project
        if project != claims.project:
            raise Unauthenticated("job token names another project")
        return project

    async def heartbeat(self, claims: JobClaims, beat: Heartbeat) -> Job:
        """Stamp the heartbeat; the first one moves a Queued job to Running."""
        job = await self._job(claims)
        if job.status is JobStatus.QUEUED:
            changes = {} if beat.node is None else {"node": beat.node}
            job = await transition(self._repos, job, JobStatus.RUNNING, changes)
        await self._repos.jobs.heartbeat(job.uid, node=beat.node)
        return job

    async def progress(self, claims: JobClaims, report: ProgressReport) -> bool:
        """Record a progress event and the job's latest fraction; False on a replay."""
        await self._project_of(claims)
        created = await self._repos.events.add(
            job=claims.job,
            seq=report.seq,
            kind=EventKind.PROGRESS,
            fields={"fraction": report.fraction, "message": report.message},
        )
        await self._repos.jobs.set_progress(
            claims.job, seq=report.seq, fraction=report.fraction, message=report.message
        )
        return created

    async def event(self, claims: JobClaims, event: EventIn) -> bool:
        """Record a log event; False on a replay."""
        await self._project_of(claims)
        return await self._repos.events.add(
            job=claims.job,
            seq=event.seq,
            kind=EventKind.LOG,
            fields={"level": event.level, "message": event.message},
        )

    async def image(self, claims: JobClaims, image: ImageIn) -> bool:
        """Record a preview image as an event; False on a replay."""
        await self._project_of(claims)
        return await self._repos.events.add(
            job=claims.job,
            seq=image.seq,
            kind=EventKind.IMAGE,
            fields={
                "image_name": image.name,
                "content_type": image.content_type,
                "data_base64": image.data_base64,
            },
        )

    async def output(self, claims: JobClaims, output: OutputIn) -> bool:
        """Register an output whose parents are outputs of the same project; False on a replay."""
        project = await self._project_of(claims)
        missing = await self._repos.outputs.missing(output.parents, project=project)
        if missing:
            raise NotFound(f"parents: unknown outputs {missing}")
        _, created = await self._repos.outputs.register(
            job=claims.job, project=project, output=output
        )
        return created

    async def exposure(self, claims: JobClaims, exposure: ExposureIn) -> None:
        """Store one exposure's latest results in the job's project."""
        project = await self._project_of(claims)
        await self._repos.exposures.upsert(project=project, job=claims.job, exposure=exposure)

    async def complete(self, claims: JobClaims, completion: Completion) -> Job:
        """Finish the job as Succeeded or Failed; replaying the same outcome is a no-op."""
        job = await self._job(claims)
        target = JobStatus.SUCCEEDED if completion.succeeded else JobStatus.FAILED
        changes = {"message": completion.message}
        if job.status is JobStatus.QUEUED and target is JobStatus.SUCCEEDED:
            job = await transition(self._repos, job, JobStatus.RUNNING, {})
        return await transition(self._repos, job, target, changes)
