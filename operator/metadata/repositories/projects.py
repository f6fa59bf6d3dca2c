"""Projects: ``_id`` is the project name; members are user names, groups are proxy groups."""

from __future__ import annotations

from typing import Any, ClassVar

from pymongo.errors import DuplicateKeyError

from ..errors import Conflict
from ..models import Project, ProjectCreate
from .base import Document, Index, Store, from_ms, now_ms

_FIELDS = {
    "_id": 1,
    "display_name": 1,
    "members": 1,
    "groups": 1,
    "created_at_ms": 1,
    "storage_root": 1,
    "namespace": 1,
}

_LATER = ("storage_root", "namespace")
"""Fields that earlier registrations left unset (S3 roots, namespaces): a replay that names them
records them instead of conflicting, so projects registered before keep working."""


def _project(doc: Document) -> Project:
    return Project(
        name=doc["_id"],
        display_name=doc["display_name"],
        members=list(doc["members"]),
        groups=list(doc["groups"]),
        created_at=from_ms(doc["created_at_ms"]),
        storage_root=doc.get("storage_root"),
        namespace=doc.get("namespace"),
    )


class ProjectRepository:
    """The ``projects`` collection."""

    collection: ClassVar[str] = "projects"
    indexes: ClassVar[tuple[Index, ...]] = (
        Index("members", [("members", 1)]),
        Index("groups", [("groups", 1)]),
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def create(self, project: ProjectCreate) -> tuple[Project, bool]:
        """Insert ``project``; an identical replay returns the stored one with ``False``.

        Raises
        ------
        Conflict
            A different project with that name exists.
        """
        doc = {
            "_id": project.name,
            "display_name": project.display_name,
            "members": sorted(set(project.members)),
            "groups": sorted(set(project.groups)),
            "storage_root": project.storage_root,
            "namespace": project.namespace,
            "created_at_ms": now_ms(),
        }
        try:
            await self._store.run(lambda: self._col.insert_one(doc))
        except DuplicateKeyError:
            existing = await self._backfill(doc)
            if existing is None or any(
                getattr(existing, k) != doc[k]
                for k in ("display_name", "members", "groups", *_LATER)
            ):
                raise Conflict(f"project {project.name!r} exists with other settings") from None
            return existing, False
        return _project(doc), True

    async def _backfill(self, doc: Document) -> Project | None:
        """The stored project, with the :data:`_LATER` fields it lacks taken from ``doc``."""
        existing = await self.get(doc["_id"])
        if existing is None:
            return None
        fill = {k: doc[k] for k in _LATER if getattr(existing, k) is None and doc[k] is not None}
        if not fill:
            return existing
        unset = {"_id": doc["_id"], **dict.fromkeys(fill)}
        await self._store.run(lambda: self._col.update_one(unset, {"$set": fill}))
        return await self.get(doc["_id"])

    async def get(self, name: str) -> Project | None:
        """The project called ``name``, or None."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": name}, _FIELDS))
        return None if doc is None else _project(doc)

    async def page(
        self, *, user: str | None, groups: list[str], offset: int, limit: int
    ) -> tuple[list[Project], int]:
        """Projects visible to ``user`` (all of them when ``user`` is None), by name.

        Returns
        -------
        (projects, total)
            One page and the number of matching projects.
        """
        query: dict[str, Any] = {}
        if user is not None:
            # ``$in`` on the array fields: see OutputRepository.children for why not equality.
            query = {"$or": [{"members": {"$in": [user]}}, {"groups": {"$in": groups}}]}

        async def page() -> list[Document]:
            cursor = self._col.find(query, _FIELDS).sort("_id", 1).skip(offset).limit(limit)
            return await cursor.to_list()

        docs = await self._store.run(page)
        total = await self._store.run(lambda: self._col.count_documents(query))
        return [_project(d) for d in docs], total
