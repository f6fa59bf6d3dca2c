"""Change feeds of a collection: change streams where the server has them, polling otherwise.

Both implement :class:`ChangeFeed`. A feed yields :class:`Change` records, each with an opaque
resume token; passing the last token to :meth:`ChangeFeed.changes` continues after it. The token
is persisted by :class:`FeedStateRepository` so that a restarted service resumes where it stopped.
MongoDB offers change streams only on replica sets; nx-27017 0.8 offers them on collections (not
on whole databases), which is all this module uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pymongo.errors import OperationFailure

from .base import Document, Index, Store


@dataclass(frozen=True)
class Change:
    """One inserted or updated document and the token that resumes after it."""

    document_id: str
    document: Document
    token: str


class ChangeFeed(Protocol):
    """A stream of inserts and updates of one collection."""

    def changes(self, resume_token: str | None, *, stop: asyncio.Event) -> AsyncIterator[Change]:
        """Changes after ``resume_token`` (from now when None), until ``stop`` is set."""
        ...


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class ChangeStreamFeed:
    """A MongoDB change stream on one collection (``fullDocument: updateLookup``).

    The stream is read with ``try_next`` and a short server-side wait so that the loop checks
    ``stop`` often: a stream stopped by cancelling a pending ``getMore`` can leave the connection
    waiting on nx-27017 forever, so shutdown is cooperative instead.
    """

    def __init__(self, store: Store, collection: str, *, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._store = store
        self._col = store.collection(collection)
        self._interval_s = interval_s

    async def changes(
        self, resume_token: str | None, *, stop: asyncio.Event
    ) -> AsyncIterator[Change]:
        """Changes after ``resume_token``; the token is the stream's own resume token as JSON."""
        resume = None if resume_token is None else json.loads(resume_token)
        pipeline = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}]
        wait_ms = max(1, int(self._interval_s * 1000))

        async def open_stream(after: Any) -> Any:
            return await self._store.run(
                lambda: self._col.watch(
                    pipeline,
                    full_document="updateLookup",
                    resume_after=after,
                    max_await_time_ms=wait_ms,
                )
            )

        try:
            stream = await open_stream(resume)
        except OperationFailure:
            if resume is None:
                raise
            # The token fell out of the server's history (or came from another server): start
            # from now. Subscribers re-read events by ``seq``, so no event is lost, only a wake-up.
            stream = await open_stream(None)
        try:
            while not stop.is_set():
                event = await self._store.run(stream.try_next)
                if event is None:
                    await _pause(stop, self._interval_s)
                    continue
                document = event.get("fullDocument")
                if document is None:
                    continue
                yield Change(
                    document_id=str(event["documentKey"]["_id"]),
                    document=document,
                    token=json.dumps(event["_id"], sort_keys=True),
                )
        finally:
            await stream.close()


class PollingFeed:
    """Polls one collection by a non-decreasing integer field (e.g. ``time_ms``).

    The token is ``"<field value>:<last _id>"``; documents with an equal field value are ordered
    by ``_id``, so none is skipped or repeated while the field is written in increasing order.
    """

    def __init__(
        self,
        store: Store,
        collection: str,
        *,
        order_field: str,
        interval_s: float,
        batch: int = 500,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._store = store
        self._col = store.collection(collection)
        self._field = order_field
        self._interval_s = interval_s
        self._batch = batch

    async def _latest(self) -> tuple[int, str]:
        async def last() -> Document | None:
            sort = [(self._field, -1), ("_id", -1)]
            return await self._col.find_one({}, {self._field: 1}, sort=sort)

        doc = await self._store.run(last)
        return (-1, "") if doc is None else (int(doc[self._field]), str(doc["_id"]))

    async def changes(
        self, resume_token: str | None, *, stop: asyncio.Event
    ) -> AsyncIterator[Change]:
        """Documents after ``resume_token`` (from now when None), polled every interval."""
        if resume_token is None:
            value, last_id = await self._latest()
        else:
            raw_value, _, last_id = resume_token.partition(":")
            value = int(raw_value)
        while not stop.is_set():
            query: dict[str, Any] = {
                "$or": [
                    {self._field: {"$gt": value}},
                    {self._field: value, "_id": {"$gt": last_id}},
                ]
            }

            async def batch(query: dict[str, Any] = query) -> list[Document]:
                cursor = self._col.find(query).sort([(self._field, 1), ("_id", 1)])
                return await cursor.limit(self._batch).to_list()

            docs = await self._store.run(batch)
            for doc in docs:
                value, last_id = int(doc[self._field]), str(doc["_id"])
                yield Change(document_id=last_id, document=doc, token=f"{value}:{last_id}")
            if len(docs) < self._batch:
                await _pause(stop, self._interval_s)


async def open_change_feed(
    store: Store, collection: str, *, order_field: str, poll_interval_s: float
) -> ChangeFeed:
    """A change-stream feed when the server supports one, else a :class:`PollingFeed`."""
    try:
        stream = await store.run(lambda: store.collection(collection).watch())
    except OperationFailure:
        return PollingFeed(store, collection, order_field=order_field, interval_s=poll_interval_s)
    await stream.close()
    return ChangeStreamFeed(store, collection, interval_s=poll_interval_s)


class FeedStateRepository:
    """The ``feed_state`` collection: the last resume token of each named feed."""

    collection: ClassVar[str] = "feed_state"
    indexes: ClassVar[tuple[Index, ...]] = ()

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def load(self, feed: str) -> str | None:
        """The persisted token of ``feed``, or None."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": feed}, {"token": 1}))
        return None if doc is None else str(doc["token"])

    async def save(self, feed: str, token: str) -> None:
        """Persist ``token`` as the resume point of ``feed``."""
        await self._store.run(
            lambda: self._col.update_one({"_id": feed}, {"$set": {"token": token}}, upsert=True)
        )
