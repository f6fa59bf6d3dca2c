"""The operator's link to the metadata service, behind a small interface.

The metadata service (``cryokube.operator.metadata``) records projects and jobs, issues the
per-job worker tokens and collects progress. The operator talks to it only through
:class:`MetadataLink`, so it keeps working when no service is configured
(:class:`NoMetadata`: random tokens, no records, no progress); :class:`ServiceMetadata` adapts
the service's own client (:class:`~cryokube.operator.metadata.client.MetadataClient`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from .metadata.client import MetadataClient
from .metadata.models import JobCreate, JobInput, JobStatus, JobUpdate, ProjectCreate
from .metadata.models import Resources as MetadataResources
from .metadata.tokens import mint_job_token
from .models import JobResource, ProjectResource


class MetadataLink(Protocol):
    """What the operator needs from the metadata service."""

    async def register_project(self, project: ProjectResource) -> None:
        """Create or update the project's record (idempotent)."""

    async def register_job(
        self, job: JobResource, *, requests: Mapping[str, Any] | None = None
    ) -> str:
        """Create or update the job's record (idempotent) and return its worker token.

        ``requests`` are the pod's resource requests when they differ from ``spec.resources``
        (the operator's worker defaults fill in what the Job leaves unset).
        """

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

    async def register_job(
        self,
        job: JobResource,  # noqa: ARG002 - the protocol's signature
        *,
        requests: Mapping[str, Any] | None = None,  # noqa: ARG002 - the protocol's signature
    ) -> str:
        """Return a random 256-bit token (workers then only write files)."""
        return secrets.token_urlsafe(32)

    async def mark_job(self, job: JobResource, phase: str) -> None:
        """Do nothing: there is no record to mark."""

    async def progress_percent(self, job: JobResource) -> int | None:  # noqa: ARG002 - the protocol's signature
        """Return ``None``: no progress is known without the service."""
        return None

    async def close(self) -> None:
        """Do nothing: no connection is held."""


def _quantity_to_cpus(value: str) -> float:
    """Kubernetes CPU quantity (``"2"``, ``"500m"``) in cores."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "K": 1e3 / 2**20,
                 "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}  # fmt: skip


def _quantity_to_MiB(value: str) -> int:
    """Kubernetes memory quantity (``"8Gi"``, ``"512Mi"``, ``"1G"``) in MiB (at least 1)."""
    for suffix in sorted(_MEMORY_UNITS, key=len, reverse=True):
        if value.endswith(suffix):
            return max(1, round(float(value[: -len(suffix)]) * _MEMORY_UNITS[suffix]))
    return max(1, round(float(value) / 2**20))


PVC_SCHEME = "pvc://"
"""Scheme of a project root on a PersistentVolumeClaim: ``pvc://<namespace>/<claim>/<subPath>``."""


def split_pvc_root(root: str) -> tuple[str, str, str]:
    """``(namespace, claim, subPath)`` of a ``pvc://`` root made by :func:`storage_root`."""
    namespace, _, rest = root.removeprefix(PVC_SCHEME).partition("/")
    claim, _, sub_path = rest.partition("/")
    return namespace, claim, sub_path


def storage_root(project: ProjectResource) -> str | None:
    """The project's storage root as the metadata service records it, or None.

    An absolute ``path`` (the workstation runner), ``s3://bucket/prefix``, or
    ``pvc://<namespace>/<claim>/<subPath>``: the claim lives in the Project's namespace, so the
    root names both, and the console finds the folder where it has mounted that claim.
    """
    storage = project.spec.storage
    if storage.pvc is not None:
        sub_path = storage.pvc.sub_path.strip("/")
        return f"{PVC_SCHEME}{project.metadata.namespace}/{storage.pvc.claim_name}/{sub_path}"
    if storage.s3 is not None:
        return f"s3://{storage.s3.bucket}/{storage.s3.prefix}"
    return storage.path if storage.path and storage.path.startswith("/") else None


class ServiceMetadata:
    """The link to a running metadata service, through its operator client.

    Parameters
    ----------
    client : MetadataClient
        The service client authenticated with the service token.
    token_secret : str
        The service's HMAC key (``CRYOKUBE_TOKEN_SECRET``): the operator mints each job's token
        and the service verifies it, so no token travels over the network twice.
    token_ttl_s : int, optional
        Lifetime of a job token in seconds (default 7 days: longer than any job).

    Notes
    -----
    Jobs are keyed by the Job resource's UID, so registering again after a restart is a replay
    that returns the stored record. ``MetadataUnavailable`` propagates: the caller turns it into
    a ``kopf.TemporaryError`` and retries.
    """

    def __init__(
        self, client: MetadataClient, *, token_secret: str, token_ttl_s: int = 7 * 24 * 3600
    ) -> None:
        if token_ttl_s <= 0:
            raise ValueError(f"token_ttl_s must be positive, got {token_ttl_s}")
        self._client = client
        self._secret = token_secret
        self._ttl_s = token_ttl_s

    async def register_project(self, project: ProjectResource) -> None:
        """Create the project's record with its members and storage root."""
        spec = project.spec
        await self._client.register_project(
            ProjectCreate(
                name=project.metadata.name,
                members=[m.name for m in spec.members if m.kind == "User"],
                groups=[m.name for m in spec.members if m.kind == "Group"],
                storage_root=storage_root(project),
                namespace=project.metadata.namespace,
            )
        )

    async def register_job(
        self, job: JobResource, *, requests: Mapping[str, Any] | None = None
    ) -> str:
        """Register the job (by UID), with the pod's ``requests`` when given, and mint its token."""
        cpu = (requests or {}).get("cpu", job.spec.resources.cpu)
        memory = (requests or {}).get("memory", job.spec.resources.memory)
        await self._client.register_job(
            JobCreate(
                uid=job.metadata.uid,
                name=job.metadata.name,
                project=job.spec.project,
                job_type=job.spec.type,
                lane=job.spec.queue or "default",
                resources=MetadataResources(
                    gpus=job.gpus_total(),
                    cpus=_quantity_to_cpus(cpu),
                    memory_MiB=_quantity_to_MiB(memory),
                ),
                parameters=job.spec.params,
                inputs=[JobInput(job=i.job, output=i.output) for i in job.spec.inputs],
            )
        )
        return mint_job_token(
            self._secret, project=job.spec.project, job=job.metadata.uid, ttl_s=self._ttl_s
        )

    async def mark_job(self, job: JobResource, phase: str) -> None:
        """Mark the record Cancelled, or mirror another terminal phase."""
        if phase == "Cancelled":
            await self._client.cancel_job(job.metadata.uid)
        else:
            await self._client.update_job(job.metadata.uid, JobUpdate(status=JobStatus(phase)))

    async def progress_percent(self, job: JobResource) -> int | None:
        """The workers' latest progress, in percent."""
        record = await self._client.get_job(job.metadata.uid)
        return round(100 * record.progress)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._client.close()
