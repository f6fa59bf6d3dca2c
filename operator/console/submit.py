"""Where the create-job form sends a job: to whatever runs jobs, as a Job resource.

Jobs run when the operator (or the local runner) sees a Job resource; it then registers the job
in the metadata service under the resource's UID. The console therefore submits the resource
through a :class:`JobSubmitter` set on the app with :func:`set_job_submitter`, and does not
register the job itself. Without a submitter (a service with nothing that runs jobs), the form
registers the job directly so that it is at least recorded, Queued.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from ..local.store import ResourceStore
from ..models import API_VERSION


class JobSubmitter(Protocol):
    """Creates Job resources (``apiVersion``/``kind``/``metadata``/``spec`` dicts)."""

    async def submit(self, resource: dict[str, Any]) -> None:
        """Create ``resource``; raise ``ValueError`` naming the field when it is invalid."""
        ...


SUBMITTER = web.AppKey("console_submitter", JobSubmitter)


def set_job_submitter(app: web.Application, submitter: JobSubmitter) -> None:
    """Make the console's form submit Job resources through ``submitter``."""
    app[SUBMITTER] = submitter


def job_resource(
    *,
    project: str,
    name: str,
    job_type: str,
    params: dict[str, Any],
    inputs: list[dict[str, str]],
) -> dict[str, Any]:
    """The Job resource the form describes (``kubectl apply``'s shape; the submitter picks the
    namespace)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"project": project, "type": job_type, "params": params, "inputs": inputs},
    }


class LocalStoreSubmitter:
    """Submits into the workstation runner's resource store (``cryokube up``).

    The Job goes into the namespace of the Project resource of the same name; a name already
    taken there is refused (applying it would replace that job's spec).
    """

    def __init__(self, store: ResourceStore) -> None:
        self._store = store

    async def submit(self, resource: dict[str, Any]) -> None:
        """Apply ``resource`` to the store, in its project's namespace."""
        await asyncio.to_thread(self._apply, resource)

    def _apply(self, resource: dict[str, Any]) -> None:
        project = resource["spec"]["project"]
        found = [
            p["metadata"]["namespace"]
            for p in self._store.list("Project")
            if p["metadata"]["name"] == project
        ]
        if not found:
            raise ValueError(f"spec.project: no Project resource {project!r} in the local store")
        name = resource["metadata"]["name"]
        if self._store.get("Job", found[0], name) is not None:
            raise ValueError(f"name: a job {name!r} already exists in project {project!r}")
        namespaced = {**resource, "metadata": {**resource["metadata"], "namespace": found[0]}}
        self._store.apply(namespaced)
