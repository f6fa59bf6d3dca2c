"""Exposures: per-movie motion and CTF results, ``_id`` ``<project>/<name>``, merged per field."""

from __future__ import annotations

from typing import Any, ClassVar

from ..models import Exposure, ExposureIn
from .base import Document, Index, Store, from_ms, now_ms

_RESULT_FIELDS = tuple(ExposureIn.model_fields)
_FIELDS = dict.fromkeys(("project", "job", "updated_at_ms", *_RESULT_FIELDS), 1)


def _exposure(doc: Document) -> Exposure:
    return Exposure(
        project=doc["project"],
        job=doc["job"],
        updated_at=from_ms(doc["updated_at_ms"]),
        **{k: doc.get(k) for k in _RESULT_FIELDS},
    )


class ExposureRepository:
    """The ``exposures`` collection."""

    collection: ClassVar[str] = "exposures"
    indexes: ClassVar[tuple[Index, ...]] = (
        Index("project_name", [("project", 1), ("name", 1)]),
        Index("project_accepted", [("project", 1), ("accepted", 1)]),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def upsert(self, *, project: str, job: str, exposure: ExposureIn) -> None:
        """Merge the fields sent in ``exposure`` into the stored record of that exposure.

        Motion correction and CTF estimation report the same exposure separately; fields a report
        leaves out keep their stored values.
        """
        changes = {
            "project": project,
            "job": job,
            "updated_at_ms": now_ms(),
            **exposure.model_dump(exclude_unset=True),
        }
        await self._store.run(
            lambda: self._col.update_one(
                {"_id": f"{project}/{exposure.name}"}, {"$set": changes}, upsert=True
            )
        )

    async def page(
        self, *, project: str, accepted: bool | None, offset: int, limit: int
    ) -> tuple[list[Exposure], int]:
        """A page of a project's exposures by name, and how many match."""
        query: dict[str, Any] = {"project": project}
        if accepted is not None:
            query["accepted"] = accepted

        async def page() -> list[Document]:
            cursor = self._col.find(query, _FIELDS).sort("name", 1).skip(offset).limit(limit)
            return await cursor.to_list()

        docs = await self._store.run(page)
        total = await self._store.run(lambda: self._col.count_documents(query))
        return [_exposure(d) for d in docs], total
