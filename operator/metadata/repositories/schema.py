"""Schema version and forward migrations, applied in order at startup.

The ``schema`` collection holds one document ``{"_id": "schema", "version": N}``. A database
whose version is newer than :data:`SCHEMA_VERSION` was written by a newer service: startup
refuses rather than guess (:class:`SchemaTooNew`). Migrations are idempotent, so a startup that
stops midway re-runs the step safely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from ..errors import SchemaTooNew
from .base import Index, Store


@dataclass(frozen=True)
class Migration:
    """Step from ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Store], Awaitable[None]]


async def _baseline(store: Store) -> None:
    """Version 1 is the first layout: collections and indexes come from the repositories."""


async def _job_counters(store: Store) -> None:
    """Version 2 added ``attempts`` and ``progress_seq`` to jobs; backfill older ones."""
    jobs = store.collection("jobs")
    for field, default in (("attempts", 0), ("progress_seq", -1)):
        await store.run(
            lambda field=field, default=default: jobs.update_many(  # type: ignore[misc]
                {field: {"$exists": False}}, {"$set": {field: default}}
            )
        )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline layout", _baseline),
    Migration(2, "jobs carry attempts and progress_seq", _job_counters),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class SchemaRepository:
    """The ``schema`` collection."""

    collection: ClassVar[str] = "schema"
    indexes: ClassVar[tuple[Index, ...]] = ()

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def version(self) -> int:
        """The stored schema version (0 for an empty database)."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": "schema"}, {"version": 1}))
        return 0 if doc is None else int(doc["version"])

    async def migrate(self, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
        """Apply every migration newer than the stored version; return the final version.

        Raises
        ------
        SchemaTooNew
            The stored version is above the newest migration known here.
        """
        current = await self.version()
        target = migrations[-1].version
        if current > target:
            raise SchemaTooNew(f"database schema {current} is newer than this service ({target})")
        for step in migrations:
            if step.version <= current:
                continue
            await step.apply(self._store)
            await self._store.run(
                lambda step=step: self._col.update_one(  # type: ignore[misc]
                    {"_id": "schema"}, {"$set": {"version": step.version}}, upsert=True
                )
            )
            current = step.version
        return current
