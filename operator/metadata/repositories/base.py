"""The store: one PyMongo ``AsyncMongoClient``, bounded retries, and the storage conventions.

Conventions every repository follows:

- ``_id`` is always a string chosen by the service (a name, a job UID, or ``<uid>/<seq>``), so
  replays upsert or collide on a unique key instead of duplicating.
- Timestamps are stored as integer milliseconds since the Unix epoch (UTC) in fields ending
  ``_ms``, and returned as timezone-aware UTC datetimes. nx-27017 0.8 stores a datetime written by
  ``$set`` as a string, so a numeric encoding is the one that sorts and compares identically on
  nx-27017 and on MongoDB.
- Updates use ``$set``/``$inc``/``$max`` on top-level fields only, and projections name top-level
  fields only (nx-27017 0.8 ignores ``$push``/``$addToSet`` on documents and flattens dotted
  projections).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, OperationFailure

from ..errors import StoreUnavailable

R = TypeVar("R")
Document = dict[str, Any]


def now_ms() -> int:
    """The current time, integer milliseconds since the Unix epoch (UTC)."""
    return int(datetime.now(UTC).timestamp() * 1000)


def from_ms(value: int | None) -> datetime | None:
    """Milliseconds since the epoch -> aware UTC datetime (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def to_ms(value: datetime) -> int:
    """Aware datetime -> milliseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("value must be timezone-aware")
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class Index:
    """One index a repository declares; ensured idempotently at startup."""

    name: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries, sleeping ``backoff_s * 2**k`` between them."""

    attempts: int
    backoff_s: float
    retry_after_s: int


class Store:
    """The database handle shared by all repositories, with retries when MongoDB is away.

    Parameters
    ----------
    uri : str
        MongoDB connection string.
    database : str
        Database name.
    retry : RetryPolicy
        How often and how long to retry an operation on a connection failure.
    server_selection_timeout_ms : int
        How long one attempt waits for a server, milliseconds; bounds every request.
    """

    def __init__(
        self, uri: str, database: str, *, retry: RetryPolicy, server_selection_timeout_ms: int
    ) -> None:
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            connectTimeoutMS=server_selection_timeout_ms,
            socketTimeoutMS=max(10 * server_selection_timeout_ms, 10_000),
            retryWrites=False,
        )
        self.db: AsyncDatabase[Document] = self.client[database]
        self.retry = retry

    def collection(self, name: str) -> AsyncCollection[Document]:
        """The named collection."""
        return self.db[name]

    async def run(self, operation: Callable[[], Awaitable[R]]) -> R:
        """Run ``operation`` with bounded retries; raise :class:`StoreUnavailable` at the end.

        Retrying a write is safe because every write is keyed (unique ``_id`` or upsert), so a
        write that landed before the connection broke is not duplicated.
        """
        for attempt in range(self.retry.attempts - 1):
            try:
                return await operation()
            except ConnectionFailure:
                await asyncio.sleep(self.retry.backoff_s * 2**attempt)
        try:
            return await operation()
        except ConnectionFailure as exc:
            raise StoreUnavailable(
                f"MongoDB is unavailable: {type(exc).__name__}",
                retry_after_s=self.retry.retry_after_s,
            ) from exc

    async def ping(self) -> bool:
        """Whether MongoDB answers one ``ping`` now (no retries: readiness must be quick)."""
        try:
            await self.db.command("ping")
        except (ConnectionFailure, OperationFailure):
            return False
        return True

    async def ensure_indexes(self, name: str, indexes: Sequence[Index]) -> None:
        """Create ``indexes`` on collection ``name``; existing identical ones are kept."""
        col = self.collection(name)
        for index in indexes:
            await self.run(
                lambda index=index: col.create_index(  # type: ignore[misc]
                    list(index.keys), name=index.name, unique=index.unique
                )
            )

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()


def clean(document: Mapping[str, Any]) -> Document:
    """A copy without ``_id``, for models that name their key differently."""
    return {k: v for k, v in document.items() if k != "_id"}
