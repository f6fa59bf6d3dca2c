"""Job events: ``_id`` is ``<uid>/<seq>``; a unique ``(job, seq)`` index makes replays no-ops."""

from __future__ import annotations

from typing import Any, ClassVar

from pymongo.errors import DuplicateKeyError

from ..models import Event, EventKind
from .base import Document, Index, Store, from_ms, now_ms

_FIELDS = dict.fromkeys(("job", "seq", "kind", "time_ms", "level", "message", "fraction", "image_name", "content_type", "data_base64"), 1)  # fmt: skip


def _event(doc: Document) -> Event:
    return Event(time=from_ms(doc["time_ms"]), **{k: doc.get(k) for k in _FIELDS if k != "time_ms"})


class EventRepository:
    """The ``events`` collection, ordered per job by the worker's sequence number."""

    collection: ClassVar[str] = "events"
    indexes: ClassVar[tuple[Index, ...]] = (
        Index("job_seq", [("job", 1), ("seq", 1)], unique=True),
        Index("time", [("time_ms", 1)]),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def add(self, *, job: str, seq: int, kind: EventKind, fields: dict[str, Any]) -> bool:
        """Store one event; False when ``(job, seq)`` was already stored (a replay)."""
        doc = {
            "_id": f"{job}/{seq}",
            "job": job,
            "seq": seq,
            "kind": kind.value,
            "time_ms": now_ms(),
            **fields,
        }
        try:
            await self._store.run(lambda: self._col.insert_one(doc))
        except DuplicateKeyError:
            return False
        return True

    async def page(self, *, job: str, after_seq: int, limit: int) -> list[Event]:
        """Events of ``job`` with ``seq > after_seq``, in sequence order."""

        async def page() -> list[Document]:
            cursor = (
                self._col.find({"job": job, "seq": {"$gt": after_seq}}, _FIELDS)
                .sort("seq", 1)
                .limit(limit)
            )
            return await cursor.to_list()

        return [_event(d) for d in await self._store.run(page)]
