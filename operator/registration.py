"""The operator's link to the metadata service, behind a small interface.

The metadata service (``cryokube.operator.metadata``) records projects and jobs, issues the
per-job worker tokens and collects progress. The operator talks to it only through
:class:`MetadataLink`, so it keeps working when no service is configured
(:class:`NoMetadata`: random tokens, no records, no progress) and so the HTTP client can change
without touching the handlers.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from .models import JobResource, ProjectResource


class MetadataLink(Protocol):
    """What the operator needs from the metadata service."""

    async def register_project(self, project: ProjectResource) -> None:
        """Create or update the project's record (idempotent)."""

    async def register_job(self, job: JobResource) -> str:
        """Create or update the job's record (idempotent) and return its worker token."""

    async def mark_job(self, job: JobResource, phase: str) -> None:
        """Record a phase the operator decided (``Cancelled``, ``Failed`` on invalid input)."""

    async def progress_percent(self, job: JobResource) -> int | None:
        """Return the progress the workers reported, or ``None`` when unknown."""

    async def close(self) -> None:
        """Release connections."""


class NoMetadata:
    """The link used when no metadata service is configured: records nothing."""

    async def register_project(self, project: ProjectResource) -> None:
        """Do nothing: there is no service to register with."""

    async def register_job(self, job: JobResource) -> str:  # noqa: ARG002 - the protocol's signature
        """Return a random 256-bit token (workers then only write files)."""
        return secrets.token_urlsafe(32)

    async def mark_job(self, job: JobResource, phase: str) -> None:
        """Do nothing: there is no record to mark."""

    async def progress_percent(self, job: JobResource) -> int | None:  # noqa: ARG002 - the protocol's signature
        """Return ``None``: no progress is known without the service."""
        return None

    async def close(self) -> None:
        """Do nothing: no connection is held."""
