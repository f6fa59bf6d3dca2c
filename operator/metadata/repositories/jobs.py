"""Jobs: ``_id`` is the job's UID; status history is one timestamp per state reached."""

from __future__ import annotations

from typing import Any, ClassVar

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..errors import Conflict
from ..models import Job, JobCreate, JobStatus
from .base import Document, Index, Store, from_ms, now_ms

_FIELDS = dict.fromkeys(("_id", "name", "project", "job_type", "lane", "resources", "parameters", "inputs", "status", "status_times_ms", "queue_reason", "node", "attempts", "message", "heartbeat_at_ms", "progress", "progress_message", "progress_seq", "created_at_ms", "updated_at_ms"), 1)  # fmt: skip


def _job(doc: Document) -> Job:
    return Job(
        uid=doc["_id"],
        name=doc["name"],
        project=doc["project"],
        job_type=doc["job_type"],
        lane=doc["lane"],
        resources=doc["resources"],
        parameters=doc["parameters"],
        inputs=doc.get("inputs", []),
        status=doc["status"],
        status_times={k: from_ms(v) for k, v in doc["status_times_ms"].items()},
        queue_reason=doc.get("queue_reason"),
        node=doc.get("node"),
        attempts=doc.get("attempts", 0),
        message=doc.get("message"),
        heartbeat_at=from_ms(doc.get("heartbeat_at_ms")),
        progress=doc.get("progress", 0.0),
        progress_message=doc.get("progress_message", ""),
        created_at=from_ms(doc["created_at_ms"]),
        updated_at=from_ms(doc["updated_at_ms"]),
    )


class JobRepository:
    """The ``jobs`` collection."""

    collection: ClassVar[str] = "jobs"
    indexes: ClassVar[tuple[Index, ...]] = (
        Index("project_created", [("project", 1), ("created_at_ms", -1)]),
        Index("project_status", [("project", 1), ("status", 1)]),
        Index("project_name", [("project", 1), ("name", 1)]),
        Index("status_heartbeat", [("status", 1), ("heartbeat_at_ms", 1)]),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def create(self, job: JobCreate) -> tuple[Job, bool]:
        """Insert a Queued job; a replay of the same UID returns the stored job with ``False``.

        Raises
        ------
        Conflict
            The UID is registered for another project or name.
        """
        stamp = now_ms()
        doc = {
            "_id": job.uid,
            "name": job.name,
            "project": job.project,
            "job_type": job.job_type,
            "lane": job.lane,
            "resources": job.resources.model_dump(),
            "parameters": job.parameters,
            "inputs": [i.model_dump() for i in job.inputs],
            "status": JobStatus.QUEUED.value,
            "status_times_ms": {JobStatus.QUEUED.value: stamp},
            "queue_reason": None,
            "node": None,
            "attempts": 0,
            "message": None,
            "heartbeat_at_ms": None,
            "progress": 0.0,
            "progress_message": "",
            "progress_seq": -1,
            "created_at_ms": stamp,
            "updated_at_ms": stamp,
        }
        try:
            await self._store.run(lambda: self._col.insert_one(doc))
        except DuplicateKeyError:
            existing = await self.get(job.uid)
            if existing is None or (existing.project, existing.name) != (job.project, job.name):
                raise Conflict(f"job uid {job.uid!r} is registered to another job") from None
            return existing, False
        return _job(doc), True

    async def get(self, uid: str) -> Job | None:
        """The job with ``uid``, or None."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": uid}, _FIELDS))
        return None if doc is None else _job(doc)

    async def page(
        self,
        *,
        project: str,
        status: JobStatus | None,
        job_type: str | None,
        lane: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[Job], int]:
        """A page of a project's jobs, newest first, and how many match."""
        query: dict[str, Any] = {"project": project}
        for key, value in (("status", status), ("job_type", job_type), ("lane", lane)):
            if value is not None:
                query[key] = str(value)

        async def page() -> list[Document]:
            cursor = (
                self._col.find(query, _FIELDS)
                .sort([("created_at_ms", -1), ("_id", -1)])
                .skip(offset)
                .limit(limit)
            )
            return await cursor.to_list()

        docs = await self._store.run(page)
        total = await self._store.run(lambda: self._col.count_documents(query))
        return [_job(d) for d in docs], total

    async def update(
        self, uid: str, changes: dict[str, Any], *, expect_status: JobStatus | None = None
    ) -> Job | None:
        """Set top-level ``changes`` (and ``updated_at``) on the job.

        With ``expect_status``, the write happens only while the job still has that status
        (optimistic concurrency for status transitions); None means the job is gone or moved on.
        """
        query: dict[str, Any] = {"_id": uid}
        if expect_status is not None:
            query["status"] = expect_status.value
        update = {"$set": {**changes, "updated_at_ms": now_ms()}}
        doc = await self._store.run(
            lambda: self._col.find_one_and_update(
                query, update, projection=_FIELDS, return_document=ReturnDocument.AFTER
            )
        )
        return None if doc is None else _job(doc)

    async def heartbeat(self, uid: str, *, node: str | None) -> bool:
        """Stamp the worker's heartbeat (and its node); False when the job does not exist."""
        stamp = now_ms()
        changes: dict[str, Any] = {"heartbeat_at_ms": stamp, "updated_at_ms": stamp}
        if node is not None:
            changes["node"] = node
        result = await self._store.run(
            lambda: self._col.update_one({"_id": uid}, {"$set": changes})
        )
        return result.matched_count == 1

    async def set_progress(self, uid: str, *, seq: int, fraction: float, message: str) -> None:
        """Record progress unless a report with a higher ``seq`` already landed."""
        await self._store.run(
            lambda: self._col.update_one(
                {"_id": uid, "progress_seq": {"$lt": seq}},
                {
                    "$set": {
                        "progress": fraction,
                        "progress_message": message,
                        "progress_seq": seq,
                        "updated_at_ms": now_ms(),
                    }
                },
            )
        )
