"""The few Kubernetes writes and reads the handlers make, as coroutines.

The official synchronous client runs in a worker thread (``asyncio.to_thread``) so that it never
blocks kopf's event loop. Conflicts on create (409 AlreadyExists) count as success: children
have deterministic names, so a second create after a restart finds the first child.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kubernetes

from ..models import GROUP, VERSION

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


def _create_sync(api: Any, manifest: dict[str, Any]) -> bool:
    namespace = manifest["metadata"]["namespace"]
    try:
        if manifest["kind"] == "Secret":
            kubernetes.client.CoreV1Api(api).create_namespaced_secret(
                namespace, cast(Any, manifest)
            )
        else:
            kubernetes.client.BatchV1Api(api).create_namespaced_job(namespace, cast(Any, manifest))
    except kubernetes.client.ApiException as exc:
        if exc.status == HTTP_CONFLICT:
            return False
        raise
    return True


async def create(api: Any, manifest: dict[str, Any]) -> bool:
    """Create a Secret or batch/v1 Job; return ``False`` when it already existed (409)."""
    return await asyncio.to_thread(_create_sync, api, manifest)


def _delete_child_sync(api: Any, namespace: str, name: str) -> bool:
    try:
        # Background propagation: the garbage collector deletes the child's pods too.
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(
            name, namespace, propagation_policy="Background"
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == HTTP_NOT_FOUND:
            return False
        raise
    return True


async def delete_child(api: Any, namespace: str, name: str) -> bool:
    """Delete a child batch Job and its pods; return ``False`` when it was already gone."""
    return await asyncio.to_thread(_delete_child_sync, api, namespace, name)


def _get_job_sync(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "jobs", name
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == HTTP_NOT_FOUND:
            return None
        raise
    return cast(dict[str, Any], body)


async def get_job(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """Read a cryokube.io Job resource; ``None`` when it does not exist."""
    return await asyncio.to_thread(_get_job_sync, api, namespace, name)


def _patch_job_status_sync(api: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "jobs", name, {"status": status}
    )


async def patch_job_status(api: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch a Job resource's ``status`` subresource."""
    await asyncio.to_thread(_patch_job_status_sync, api, namespace, name, status)
