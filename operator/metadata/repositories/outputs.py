"""Outputs: dataset manifests with per-file SHA-256 and parent outputs (lineage).

``_id`` is ``<job uid>/<name>``; registering the same manifest twice is a no-op.
"""

from __future__ import annotations

from typing import ClassVar

from pymongo.errors import DuplicateKeyError

from ..errors import Conflict
from ..models import Output, OutputIn
from .base import Document, Index, Store, from_ms, now_ms

_FIELDS = dict.fromkeys(
    ("_id", "job", "project", "name", "kind", "files", "parents", "created_at_ms"), 1
)


def _output(doc: Document) -> Output:
    return Output(
        id=doc["_id"],
        job=doc["job"],
        project=doc["project"],
        name=doc["name"],
        kind=doc["kind"],
        files=doc["files"],
        parents=list(doc["parents"]),
        created_at=from_ms(doc["created_at_ms"]),
    )


class OutputRepository:
    """The ``outputs`` collection."""

    collection: ClassVar[str] = "outputs"
    indexes: ClassVar[tuple[Index, ...]] = (
        Index("job", [("job", 1), ("name", 1)]),
        Index("project_created", [("project", 1), ("created_at_ms", -1)]),
        Index("parents", [("parents", 1)]),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def register(self, *, job: str, project: str, output: OutputIn) -> tuple[Output, bool]:
        """Store ``output``; an identical replay returns the stored one with ``False``.

        Raises
        ------
        Conflict
            Another manifest was registered under the same job and name.
        """
        output_id = f"{job}/{output.name}"
        doc = {
            "_id": output_id,
            "job": job,
            "project": project,
            "name": output.name,
            "kind": output.kind,
            "files": [f.model_dump() for f in output.files],
            "parents": list(output.parents),
            "created_at_ms": now_ms(),
        }
        try:
            await self._store.run(lambda: self._col.insert_one(doc))
        except DuplicateKeyError:
            existing = await self.get(output_id)
            if existing is None or (existing.kind, existing.files, existing.parents) != (
                output.kind,
                output.files,
                output.parents,
            ):
                raise Conflict(f"output {output_id!r} exists with other content") from None
            return existing, False
        return _output(doc), True

    async def get(self, output_id: str) -> Output | None:
        """The output ``<job uid>/<name>``, or None."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": output_id}, _FIELDS))
        return None if doc is None else _output(doc)

    async def missing(self, output_ids: list[str], *, project: str) -> list[str]:
        """Which of ``output_ids`` are not outputs of ``project`` (lineage must resolve)."""
        if not output_ids:
            return []

        async def found() -> list[Document]:
            query = {"_id": {"$in": output_ids}, "project": project}
            return await self._col.find(query, {"_id": 1}).to_list()

        present = {d["_id"] for d in await self._store.run(found)}
        return [i for i in output_ids if i not in present]

    async def list_for_job(self, job: str) -> list[Output]:
        """Every output of ``job``, by name."""

        async def all_docs() -> list[Document]:
            return await self._col.find({"job": job}, _FIELDS).sort("name", 1).to_list()

        return [_output(d) for d in await self._store.run(all_docs)]

    async def children(self, output_id: str) -> list[Output]:
        """Outputs made from ``output_id`` (one step down the lineage)."""

        async def docs() -> list[Document]:
            # ``$in`` rather than equality: nx-27017 0.8 indexes arrays as whole values, so an
            # equality match on an indexed array field misses its elements.
            query = {"parents": {"$in": [output_id]}}
            return await self._col.find(query, _FIELDS).sort("_id", 1).to_list()

        return [_output(d) for d in await self._store.run(docs)]
