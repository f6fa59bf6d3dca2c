"""Project rules: admins create projects; a project is visible only to its members and admins."""

from __future__ import annotations

from ..errors import NotFound
from ..models import Page, PageQuery, Project, ProjectCreate
from ..repositories import Repositories
from .access import Identity


class ProjectService:
    """Create, read and list projects for one caller."""

    def __init__(self, repos: Repositories) -> None:
        self._repos = repos

    async def create(self, who: Identity, project: ProjectCreate) -> tuple[Project, bool]:
        """Create ``project`` (admins only); ``False`` when it was an identical replay."""
        who.require_admin("creating a project")
        return await self._repos.projects.create(project)

    async def get(self, who: Identity, name: str) -> Project:
        """The project, or :class:`NotFound` when absent or not visible to ``who``."""
        project = await self._repos.projects.get(name)
        if project is None or not who.can_use(project):
            raise NotFound(f"project {name!r} not found")
        return project

    async def page(self, who: Identity, query: PageQuery) -> Page[Project]:
        """The projects ``who`` may use, by name."""
        items, total = await self._repos.projects.page(
            user=None if who.is_admin else who.name,
            groups=list(who.groups),
            offset=query.offset,
            limit=query.limit,
        )
        return Page[Project](items=items, total=total, offset=query.offset, limit=query.limit)
