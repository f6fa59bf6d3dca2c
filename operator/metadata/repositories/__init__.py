"""Repositories: one class per MongoDB collection; the only code that imports ``pymongo``.

:class:`Repositories` builds them all on one :class:`~.base.Store` and ensures every declared
index at startup.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Store
from .changefeed import FeedStateRepository
from .events import EventRepository
from .exposures import ExposureRepository
from .jobs import JobRepository
from .outputs import OutputRepository
from .projects import ProjectRepository
from .schema import SchemaRepository
from .users import ApiTokenRepository, UserRepository


@dataclass(frozen=True)
class Repositories:
    """Every repository of the service, sharing one store."""

    store: Store
    projects: ProjectRepository
    jobs: JobRepository
    events: EventRepository
    outputs: OutputRepository
    exposures: ExposureRepository
    users: UserRepository
    api_tokens: ApiTokenRepository
    schema: SchemaRepository
    feed_state: FeedStateRepository

    @classmethod
    def on(cls, store: Store) -> Repositories:
        """Build every repository on ``store``."""
        return cls(
            store=store,
            projects=ProjectRepository(store),
            jobs=JobRepository(store),
            events=EventRepository(store),
            outputs=OutputRepository(store),
            exposures=ExposureRepository(store),
            users=UserRepository(store),
            api_tokens=ApiTokenRepository(store),
            schema=SchemaRepository(store),
            feed_state=FeedStateRepository(store),
        )

    async def prepare(self) -> int:
        """Migrate the schema forward, then ensure every declared index; return the version."""
        version = await self.schema.migrate()
        for repo in (
            self.projects,
            self.jobs,
            self.events,
            self.outputs,
            self.exposures,
            self.users,
            self.api_tokens,
        ):
            await self.store.ensure_indexes(repo.collection, repo.indexes)
        return version
