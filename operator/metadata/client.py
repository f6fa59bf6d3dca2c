"""Async HTTP clients of the metadata service, for the operator and for worker RPC callers.

:class:`MetadataClient` authenticates as the operator's service identity (admin) and registers
projects and jobs and mirrors their scheduling state; :class:`JobRpcClient` speaks the worker RPC
with one job's token. Both return the service's pydantic models and raise
:class:`MetadataUnavailable` (with ``retry_after_s``) on 503 so the operator can turn it into
``kopf.TemporaryError(delay=...)``, and :class:`MetadataRequestError` on any other error status.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from pydantic import BaseModel

from .models import (
    Completion,
    EventIn,
    Heartbeat,
    Ingested,
    Job,
    JobCreate,
    JobUpdate,
    OutputIn,
    ProgressReport,
    Project,
    ProjectCreate,
)

M = TypeVar("M", bound=BaseModel)


class MetadataRequestError(Exception):
    """The service answered with an error status (``reason`` is its CamelCase error)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class MetadataUnavailable(MetadataRequestError):
    """503: MongoDB (or the service) is down; retry after ``retry_after_s`` seconds."""

    def __init__(self, reason: str, message: str, *, retry_after_s: int) -> None:
        super().__init__(503, reason, message)
        self.retry_after_s = retry_after_s


class _Base:
    def __init__(self, base_url: str, *, token: str, timeout_s: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def _call(
        self, method: str, path: str, model: type[M], body: BaseModel | None = None
    ) -> M:
        data = None if body is None else body.model_dump_json(exclude_unset=False)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self._session.request(
            method, self._base + path, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise _error(resp.status, resp.headers.get("Retry-After"), text)
            return model.model_validate_json(text)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _error(status: int, retry_after: str | None, text: str) -> MetadataRequestError:
    try:
        payload: dict[str, Any] = json.loads(text)
        reason, message = str(payload["error"]), str(payload["message"])
    except (ValueError, KeyError, TypeError):
        reason, message = "HttpError", text[:200]
    if status == 503:
        delay = int(retry_after) if retry_after and retry_after.isdigit() else 5
        return MetadataUnavailable(reason, message, retry_after_s=delay)
    return MetadataRequestError(status, reason, message)


class MetadataClient(_Base):
    """The operator's client (service token, admin).

    Parameters
    ----------
    base_url : str
        Service root, e.g. ``http://cryokube-metadata:8080``.
    service_token : str
        The service's ``CRYOKUBE_SERVICE_TOKEN``.
    timeout_s : float, optional
        Total time per request, seconds.
    """

    def __init__(self, base_url: str, *, service_token: str, timeout_s: float = 10.0) -> None:
        super().__init__(base_url, token=service_token, timeout_s=timeout_s)

    async def register_project(self, project: ProjectCreate) -> Project:
        """Create the project, or return it when an identical one exists (409 otherwise)."""
        return await self._call("POST", "/api/v1/projects", Project, project)

    async def register_job(self, job: JobCreate) -> Job:
        """Register the job by UID; replays return the stored job."""
        return await self._call("POST", "/api/v1/jobs", Job, job)

    async def update_job(self, uid: str, update: JobUpdate) -> Job:
        """Mirror scheduling state (status, queue reason, node, attempts)."""
        return await self._call("PATCH", f"/api/v1/jobs/{uid}", Job, update)

    async def get_job(self, uid: str) -> Job:
        """The job with its status history and latest progress."""
        return await self._call("GET", f"/api/v1/jobs/{uid}", Job)

    async def cancel_job(self, uid: str) -> Job:
        """Mark the job Cancelled (the operator's finalizer, when a Job resource is deleted)."""
        return await self._call("POST", f"/api/v1/jobs/{uid}/cancel", Job)


class JobRpcClient(_Base):
    """Worker RPC for one job, authenticated by that job's token.

    Parameters
    ----------
    base_url : str
        Service root.
    uid : str
        The job's UID.
    token : str
        The job token (from :func:`~.tokens.mint_job_token`).
    timeout_s : float, optional
        Total time per request, seconds.
    """

    def __init__(self, base_url: str, *, uid: str, token: str, timeout_s: float = 10.0) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s)
        self._rpc = f"/rpc/v1/jobs/{uid}"

    async def heartbeat(self, *, node: str | None = None) -> Job:
        """Report liveness (the first heartbeat moves the job to Running)."""
        return await self._call("POST", f"{self._rpc}/heartbeat", Job, Heartbeat(node=node))

    async def progress(self, report: ProgressReport) -> Ingested:
        """Report progress; ``created`` is False for a replayed ``seq``."""
        return await self._call("POST", f"{self._rpc}/progress", Ingested, report)

    async def event(self, event: EventIn) -> Ingested:
        """Append a log event; ``created`` is False for a replayed ``seq``."""
        return await self._call("POST", f"{self._rpc}/events", Ingested, event)

    async def output(self, output: OutputIn) -> Ingested:
        """Register an output manifest."""
        return await self._call("POST", f"{self._rpc}/outputs", Ingested, output)

    async def complete(self, completion: Completion) -> Job:
        """Finish the job."""
        return await self._call("POST", f"{self._rpc}/complete", Job, completion)
