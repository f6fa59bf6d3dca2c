"""Where the create-job form sends a job: to whatever runs jobs, as a Job resource.

Jobs run when the operator (or the local runner) sees a Job resource; it then registers the job
in the metadata service under the resource's UID. The console therefore submits the resource
through a :class:`JobSubmitter` set on the app with :func:`set_job_submitter`, and does not
register the job itself. Without a submitter (a service with nothing that runs jobs), the form
registers the job directly so that it is at least recorded, Queued.

In a cluster, :class:`KubernetesSubmitter` creates the resource through the API server as the
service's ServiceAccount (RBAC: ``create`` on ``jobs.cryokube.io``, nothing else); the console
user who asked is recorded in the :data:`SUBMITTED_BY` annotation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol, cast

import kubernetes
from aiohttp import web

from ..kubeclient import api_client
from ..local.store import ResourceStore
from ..models import API_VERSION, GROUP, VERSION

SUBMITTED_BY = "cryokube.io/submitted-by"
"""Annotation of a Job resource created from the console: the user (proxy name) who asked."""
HTTP_CONFLICT = 409
HTTP_UNPROCESSABLE = 422


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
    namespace: str | None,
    name: str,
    job_type: str,
    params: dict[str, Any],
    inputs: list[dict[str, str]],
    submitted_by: str,
) -> dict[str, Any]:
    """The Job resource the form describes (``kubectl apply``'s shape), in the project's
    Kubernetes ``namespace`` when the project records one."""
    metadata: dict[str, Any] = {"name": name, "annotations": {SUBMITTED_BY: submitted_by}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": metadata,
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


def _form_field(api_field: str) -> str:
    """The form's name for a field of the resource (``metadata.name`` is the form's ``name``,
    ``spec.params.X`` its parameter ``X``); other paths as the API server wrote them."""
    if api_field == "metadata.name":
        return "name"
    return api_field.removeprefix("spec.params.")


def _invalid(exc: kubernetes.client.ApiException) -> ValueError:
    """The API server's 422 as one error per field it names (its ``details.causes``)."""
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        status = None
    if not isinstance(status, dict):
        status = {}
    causes = (status.get("details") or {}).get("causes") or []
    named = [f"{_form_field(c['field'])}: {c.get('message', '')}" for c in causes if c.get("field")]
    return ValueError("; ".join(named) or f"spec: {status.get('message', exc.reason)}")


class KubernetesSubmitter:
    """Creates Job resources through the Kubernetes API (``cryokube.io/v1alpha1``, ``jobs``).

    ``api`` is a ``kubernetes.client.ApiClient``; its synchronous calls run in a worker thread.
    The resource goes into the project's namespace (recorded with the project when the operator
    registered it). A 409 (the name is taken) and a 422 (the API server's schema validation)
    become ``ValueError`` naming the form field; other API errors propagate.
    """

    def __init__(self, api: Any) -> None:
        self._api = api
        self._custom = kubernetes.client.CustomObjectsApi(api)

    async def close(self) -> None:
        """Close the API client's connections."""
        self._api.close()

    async def submit(self, resource: dict[str, Any]) -> None:
        """Create ``resource`` in ``metadata.namespace``."""
        namespace = resource["metadata"].get("namespace")
        project = resource["spec"]["project"]
        if not namespace:
            raise ValueError(
                f"spec.project: project {project!r} records no Kubernetes namespace "
                "(its Project resource has not been registered by the operator)"
            )
        try:
            await asyncio.to_thread(
                self._custom.create_namespaced_custom_object,
                GROUP, VERSION, namespace, "jobs", cast(Any, resource),
            )  # fmt: skip
        except kubernetes.client.ApiException as exc:
            name = resource["metadata"]["name"]
            if exc.status == HTTP_CONFLICT:
                msg = f"name: a job {name!r} already exists in project {project!r}"
                raise ValueError(msg) from None
            if exc.status == HTTP_UNPROCESSABLE:
                raise _invalid(exc) from None
            raise


def setup_kubernetes_submitter(app: web.Application, host: str | None) -> None:
    """Submit the form's Job resources through the Kubernetes API; close it at app cleanup."""
    submitter = KubernetesSubmitter(api_client(host))
    set_job_submitter(app, submitter)

    async def close(_app: web.Application) -> None:
        await submitter.close()

    app.on_cleanup.append(close)
