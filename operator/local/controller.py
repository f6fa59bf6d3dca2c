"""The local controller: reconcile stored Jobs into ``cryokube-worker`` processes.

Each pass plans every Job with :func:`cryokube.operator.status.plan_job`, the operator's own
planner, giving it the Job's local processes shaped as a batch/v1 Job and its pods. Shards run
as separate processes with ``JOB_COMPLETION_INDEX``; exit code 2 fails the Job at once (like the
cluster's ``podFailurePolicy``), other failures are retried up to the project's
``backoffLimit``. At most ``slots`` Jobs run at once (one per CPU slot; the workstation's GPUs are
given to the jobs that ask for them, the others run on the CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryokube.operator import reasons
from cryokube.operator.conditions import set_condition
from cryokube.operator.models import (
    InvalidSpecError,
    JobResource,
    ProjectResource,
    parse_job,
    parse_project,
)
from cryokube.operator.registration import MetadataLink, NoMetadata
from cryokube.operator.status import (
    TERMINAL_PHASES,
    Peer,
    invalid_plan,
    peer_of,
    plan_job,
    plan_project,
)
from cryokube.processing.worker.runtime import EXIT_BAD_INPUT
from cryokube.processing.worker.settings import InputRef, WorkerSettings, settings_to_env

from .store import ResourceStore

log = logging.getLogger(__name__)

WORKER = str(Path(sys.executable).with_name("cryokube-worker"))


@dataclass
class LocalChild:
    """The local processes of one Job: its "child batch Job"."""

    job: JobResource
    env: dict[str, str]
    log_dir: Path
    backoff_limit: int
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    succeeded: set[int] = field(default_factory=set)
    failures: int = 0
    failed: tuple[str, str] | None = None

    async def start_shard(self, index: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / f"{self.job.metadata.name}-{index}.log").open("ab")
        try:
            self.procs[index] = await asyncio.create_subprocess_exec(
                WORKER, "run", "--job", self.job.metadata.name, "--type", self.job.spec.type,
                env={**os.environ, **self.env, "JOB_COMPLETION_INDEX": str(index)},
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip
        finally:
            out.close()

    async def start(self) -> None:
        for index in range(self.job.spec.shards):
            await self.start_shard(index)

    async def poll(self) -> None:
        """Collect exits; retry transient failures of a shard up to ``backoff_limit``."""
        for index, proc in list(self.procs.items()):
            if proc.returncode is None:
                continue
            del self.procs[index]
            if proc.returncode == 0:
                self.succeeded.add(index)
            elif proc.returncode == EXIT_BAD_INPUT:
                self.failed = (
                    reasons.POD_FAILURE_POLICY,
                    f"shard {index} exited with code 2 (bad input)",
                )
            else:
                self.failures += 1
                if self.failures > self.backoff_limit:
                    self.failed = (
                        reasons.BACKOFF_LIMIT_EXCEEDED,
                        f"shard {index} failed {self.failures} times (last exit {proc.returncode})",
                    )
                else:
                    log.warning(
                        "job %s shard %d exited %d; retrying",
                        self.job.metadata.name,
                        index,
                        proc.returncode,
                    )
                    await self.start_shard(index)
        if self.failed is not None:
            await self.stop()

    async def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs.clear()

    @property
    def done(self) -> bool:
        return self.failed is not None or len(self.succeeded) == self.job.spec.shards

    def as_batch_job(self) -> dict[str, Any]:
        conditions = []
        if self.failed is not None:
            conditions.append(
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": self.failed[0],
                    "message": self.failed[1],
                }
            )
        elif len(self.succeeded) == self.job.spec.shards:
            conditions.append({"type": "Complete", "status": "True"})
        return {
            "metadata": {"name": self.job.metadata.name},
            "spec": {},
            "status": {
                "active": len(self.procs),
                "succeeded": len(self.succeeded),
                "failed": self.failures,
                "conditions": conditions,
            },
        }

    def pods(self) -> list[dict[str, Any]]:
        return [{"status": {"phase": "Running"}} for _ in self.procs]


def storage_root(project: ProjectResource) -> str:
    """The worker's ``CRYOKUBE_STORAGE_ROOT`` for a project on this workstation."""
    storage = project.spec.storage
    if storage.path is not None:
        return storage.path
    if storage.s3 is not None:
        return f"s3://{storage.s3.bucket}/{storage.s3.prefix.strip('/')}".rstrip("/")
    raise InvalidSpecError(
        f"project {project.metadata.name}: spec.storage.pvc needs a cluster; the local runner "
        "takes spec.storage.path or spec.storage.s3"
    )


def spooled_progress(project: ProjectResource, job: JobResource) -> int | None:
    """Progress (%) from the workers' report spools in the job folder, without a service.

    The mean over shards of each shard's latest progress report.
    """
    if project.spec.storage.path is None:
        return None
    folder = Path(project.spec.storage.path) / job.metadata.name / ".cryokube"
    fractions = []
    for spool in sorted(folder.glob("reports-*/events.jsonl")):
        latest = 0.0
        with contextlib.suppress(OSError), spool.open() as f:
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    if entry["endpoint"] == "progress":
                        latest = float(entry["body"]["fraction"])
        fractions.append(latest)
    if not fractions:
        return None
    return round(100 * sum(fractions) / job.spec.shards)


class LocalController:
    """Runs the Jobs of a :class:`ResourceStore` as local worker processes.

    Parameters
    ----------
    store : ResourceStore
        The resources.
    slots : int
        Jobs that may run at once.
    link : MetadataLink
        The metadata service (registration, tokens, progress); :class:`NoMetadata` for none.
    metadata_url : str or None
        URL the workers report to.
    log_dir : Path
        Where each worker process's stdout/stderr go.
    """

    def __init__(
        self,
        store: ResourceStore,
        *,
        slots: int = 1,
        link: MetadataLink | None = None,
        metadata_url: str | None = None,
        log_dir: Path,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.store = store
        self.slots = slots
        self.link = link or NoMetadata()
        self.metadata_url = metadata_url
        self.log_dir = log_dir
        self.children: dict[tuple[str, str], LocalChild] = {}
        self._registered: set[tuple[str, str, int]] = set()

    def _peers(self, jobs: list[dict[str, Any]]) -> dict[str, dict[str, Peer]]:
        peers: dict[str, dict[str, Peer]] = {}
        for body in jobs:
            peer = peer_of(body)
            if peer is not None:
                peers.setdefault(body["metadata"]["namespace"], {})[peer.name] = peer
        return peers

    async def reconcile_once(self) -> bool:
        """One pass over every resource; True while some Job has not reached a final phase."""
        now = dt.datetime.now(dt.UTC)
        projects: dict[tuple[str, str], ProjectResource] = {}
        for body in self.store.list("Project"):
            project = parse_project(body)
            plan = plan_project(project, cluster=False, now=now)
            if plan.changed:
                self.store.patch_status(
                    "Project", project.metadata.namespace, project.metadata.name, plan.status
                )
            projects[(project.metadata.namespace, project.metadata.name)] = project
            key = (
                project.metadata.namespace,
                project.metadata.name,
                project.metadata.generation or 0,
            )
            if key not in self._registered:
                await self.link.register_project(project)
                self._registered.add(key)
        bodies = sorted(
            self.store.list("Job"),
            key=lambda b: (-b["spec"].get("priority", 0), b["metadata"]["name"]),
        )
        peers = self._peers(bodies)
        active = False
        for body in bodies:
            meta = body["metadata"]
            ns, name = meta["namespace"], meta["name"]
            try:
                job = parse_job(body)
            except InvalidSpecError as exc:
                plan = invalid_plan(
                    dict(body.get("status") or {}), meta.get("generation"), str(exc), now
                )
                if plan.changed:
                    self.store.patch_status("Job", ns, name, plan.status)
                continue
            child = self.children.get((ns, name))
            if child is not None:
                await child.poll()
            job_project = projects.get((ns, job.spec.project))
            progress = None
            if child is not None:
                progress = await self.link.progress_percent(job)
                if progress is None and job_project is not None:
                    progress = spooled_progress(job_project, job)
            plan = plan_job(
                job, project=job_project, child=child.as_batch_job() if child else None,
                pods=child.pods() if child else [], peers=peers.get(ns, {}), now=now,
                progress_percent=progress,
            )  # fmt: skip
            status = plan.status
            if plan.action == "create":
                assert job_project is not None  # plan_job creates only with a project
                running = sum(1 for c in self.children.values() if not c.done)
                try:
                    root = storage_root(job_project)
                except InvalidSpecError as exc:
                    status = invalid_plan(status, meta.get("generation"), str(exc), now).status
                    status["phase"] = "Failed"
                else:
                    if running >= self.slots:
                        status = self._waiting_for_slot(job, status, now)
                    else:
                        await self._start(job, job_project, root)
            elif plan.action == "delete" and child is not None:
                await child.stop()
                await self.link.mark_job(job, "Cancelled")
            if status != body.get("status"):
                self.store.patch_status("Job", ns, name, status)
                updated = peer_of({**body, "status": status})
                if updated is not None:
                    peers.setdefault(ns, {})[name] = updated
            if status.get("phase") not in TERMINAL_PHASES:
                active = True
        return active

    @staticmethod
    def _waiting_for_slot(
        job: JobResource, status: dict[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        conditions = [dict(c) for c in status.get("conditions", [])]
        set_condition(
            conditions,
            reasons.READY,
            "False",
            reasons.PENDING,
            "waiting for a free local worker slot",
            job.metadata.generation,
            now,
        )
        return {**status, "phase": "Pending", "conditions": conditions, "gpus": 0, "child": None}

    async def _start(self, job: JobResource, project: ProjectResource, root: str) -> None:
        token = await self.link.register_job(job)
        settings = WorkerSettings(
            project=job.spec.project, job=job.metadata.name, job_uid=job.metadata.uid,
            job_type=job.spec.type, params=job.spec.params,
            inputs=[InputRef(job=i.job, output=i.output) for i in job.spec.inputs],
            shards=job.spec.shards, storage_root=root, metadata_url=self.metadata_url,
            job_token=token,
        )  # fmt: skip
        child = LocalChild(
            job=job,
            env=settings_to_env(settings),
            log_dir=self.log_dir,
            backoff_limit=project.spec.workers.backoff_limit,
        )
        self.children[(job.metadata.namespace, job.metadata.name)] = child
        await child.start()

    async def run(self, *, interval_s: float = 0.5, until_idle: bool = False) -> None:
        """Reconcile every ``interval_s`` seconds; with ``until_idle``, stop when all ended."""
        try:
            while True:
                active = await self.reconcile_once()
                if until_idle and not active:
                    return
                await asyncio.sleep(interval_s)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop every running worker process (they resume from checkpoints when restarted)."""
        for child in self.children.values():
            await child.stop()
