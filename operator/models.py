"""Pydantic models of the Project and Job custom resources (``cryokube.io/v1alpha1``).

These models are the single source of the CRDs (``crdgen`` renders ``crds/*.yaml`` from them)
and the edge where handlers parse a raw ``body`` once (``JobResource.model_validate(body)``).
Python names are snake_case with unit suffixes; the camelCase alias generator gives the CRD
names (``gpu_quota`` -> ``gpuQuota``). Field descriptions become ``kubectl explain`` text.

``spec.params`` is the deliberate escape hatch of the schema (``x-kubernetes-preserve-unknown-
fields``): it is validated against the job catalog (:mod:`cryokube.processing.jobs`) by the
operator, which reports errors as ``Ready=False, reason=InvalidSpec`` naming the field.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Self

from cryokube.processing import jobs as catalog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP: Final = "cryokube.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "cryokube.io/v1alpha1"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class CamelModel(BaseModel):
    """Base: camelCase aliases, snake_case attributes, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ObjectMeta(BaseModel):
    """The parts of ``metadata`` the operator reads; other keys are kept but ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --- Project -------------------------------------------------------------------------------


class PvcStorage(CamelModel):
    """A ReadWriteMany PersistentVolumeClaim holding the project."""

    claim_name: str = Field(description="Name of the PVC in the project's namespace.")
    sub_path: str = Field(
        "", description="Folder inside the volume that is the project root (empty: the volume)."
    )


class S3Storage(CamelModel):
    """An S3 bucket holding the project; pods stage inputs through a node-local SSD cache."""

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field("", description="Key prefix that is the project root.")
    endpoint: str | None = Field(
        None, description="Endpoint URL for S3-compatible stores (none: AWS)."
    )
    secret_ref: str = Field(
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the workers."
    )


class StorageSpec(CamelModel):
    """Where the project's files live: exactly one of pvc, s3 or path."""

    pvc: PvcStorage | None = Field(None, description="A ReadWriteMany volume claim.")
    s3: S3Storage | None = Field(None, description="An S3 bucket and prefix.")
    path: str | None = Field(
        None, description="A local folder (the workstation runner only; rejected in a cluster)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [k for k in ("pvc", "s3", "path") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"storage needs exactly one of pvc, s3, path (got {chosen or 'none'})")
        return self


class Member(CamelModel):
    """A user or group allowed to see and run the project's jobs."""

    kind: Literal["User", "Group"] = Field(description="User or Group.")
    name: str = Field(description="User name or group name as the auth proxy reports it.")


class Toleration(CamelModel):
    """A pod toleration (the subset of core/v1 Toleration that GPU nodes need)."""

    key: str = Field(description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists or Equal.")
    value: str = Field("", description="Taint value (operator Equal).")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "", description="Taint effect to tolerate (empty: all)."
    )


class NodeSelectorTerm(CamelModel):
    """One node label the worker pods require."""

    key: str = Field(description="Node label key.")
    value: str = Field(description="Node label value.")


class WorkerDefaults(CamelModel):
    """Settings every worker pod of the project gets."""

    image: str = Field(
        "ghcr.io/cryokube/worker:0.1.0", description="Worker image running cryokube-worker."
    )
    node_selector: list[NodeSelectorTerm] = Field(
        default_factory=list, description="Node labels the worker pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for tainted GPU nodes."
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", description="Extended resource requested per GPU (e.g. a MIG profile)."
    )
    cache_size: str = Field(
        "100Gi", pattern=QUANTITY, description="Size limit of the emptyDir SSD cache (quantity)."
    )
    backoff_limit: int = Field(
        3, ge=0, le=20, description="Pod retries for transient failures (exit codes other than 2)."
    )


class ProjectSpec(CamelModel):
    """A cryo-EM project: shared storage, members, file ownership and GPU quota."""

    storage: StorageSpec = Field(description="Where the project's files live.")
    members: list[Member] = Field(default_factory=list, description="Who may use the project.")
    run_as_user: int = Field(
        1000, ge=1, description="UNIX user id of worker pods (files belong to the lab)."
    )
    run_as_group: int = Field(1000, ge=0, description="UNIX group id of worker pods.")
    fs_group: int | None = Field(
        None, ge=0, description="Group that owns mounted volumes (none: run_as_group)."
    )
    gpu_quota: int | None = Field(
        None, ge=0, description="Most GPUs the project's jobs use at once (none: unlimited)."
    )
    workers: WorkerDefaults = Field(
        default_factory=WorkerDefaults, description="Worker pod defaults."
    )


# --- Job -----------------------------------------------------------------------------------


class InputRef(CamelModel):
    """An output group of an upstream Job of the same project."""

    job: str = Field(pattern=DNS_LABEL, description="Name of the upstream Job.")
    output: str = Field(description="Output group of the upstream Job (e.g. micrographs).")


class Resources(CamelModel):
    """Compute resources of each pod of the Job."""

    gpus: int | None = Field(
        None, ge=0, le=16, description="GPUs per pod (none: 1 for GPU jobs, 0 otherwise)."
    )
    cpu: str = Field("2", pattern=QUANTITY, description="CPU request per pod (quantity).")
    memory: str = Field("8Gi", pattern=QUANTITY, description="Memory request per pod (quantity).")


class JobSpec(CamelModel):
    """One processing step: a catalog job type with parameters and upstream inputs."""

    project: str = Field(pattern=DNS_LABEL, description="Name of the Project in this namespace.")
    type: str = Field(
        description="Job type from the catalog.",
        json_schema_extra={"enum": [job.name for job in catalog.all()]},
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the job type (cryoSPARC names), validated by the operator.",
    )
    inputs: list[InputRef] = Field(default_factory=list, description="Upstream outputs used.")
    resources: Resources = Field(default_factory=Resources, description="Per-pod resources.")
    shards: int = Field(1, ge=1, le=256, description="Parallel pods, each a part of the data.")
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first in the queue.")
    queue: str | None = Field(
        None, description="Kueue LocalQueue name; the child is created suspended for Kueue."
    )
    cancel: bool = Field(False, description="Set true to stop the Job and delete its pods.")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        catalog.get(value)
        return value


class Condition(CamelModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="Ready, Succeeded or Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable detail.")
    observed_generation: int | None = Field(
        None, description="metadata.generation the condition was computed from."
    )
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")


class ResourceStatus(CamelModel):
    """Status written by the operator (never by users)."""

    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = Field(None, description="Last generation reconciled.")
    phase: str | None = Field(None, description="Derived summary for printer columns.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    progress_percent: int | None = Field(
        None, ge=0, le=100, description="Job progress reported by the workers (percent)."
    )
    gpus: int | None = Field(None, ge=0, description="GPUs the Job's pods hold now.")
    child: str | None = Field(None, description="Name of the child batch/v1 Job.")


class ProjectResource(CamelModel):
    """A ``cryokube.io/v1alpha1`` Project."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["cryokube.io/v1alpha1"] = API_VERSION
    kind: Literal["Project"] = "Project"
    metadata: ObjectMeta
    spec: ProjectSpec
    status: ResourceStatus = Field(default_factory=ResourceStatus)


class JobResource(CamelModel):
    """A ``cryokube.io/v1alpha1`` Job."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["cryokube.io/v1alpha1"] = API_VERSION
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec
    status: ResourceStatus = Field(default_factory=ResourceStatus)

    def gpus_per_pod(self) -> int:
        """GPUs each pod requests: ``spec.resources.gpus`` or the job type's default."""
        if self.spec.resources.gpus is not None:
            return self.spec.resources.gpus
        return 1 if catalog.get(self.spec.type).uses_gpu else 0

    def gpus_total(self) -> int:
        """GPUs the Job holds when all its shards run."""
        return self.gpus_per_pod() * self.spec.shards


class InvalidSpecError(ValueError):
    """A resource's spec is invalid; ``str()`` names each offending field by its path."""


def format_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """Render a pydantic error as ``"spec.params.res_max_align: Input should be ..."`` lines."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc or prefix or 'spec'}: {err['msg']}")
    return "; ".join(parts)


def parse_job(body: Any) -> JobResource:
    """Parse a raw Job body and validate its params against the catalog.

    Raises
    ------
    InvalidSpecError
        Naming each invalid field (``spec.params.res_max_align``, ``spec.shards``, ...).
    """
    try:
        job = JobResource.model_validate(body)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc)) from None
    try:
        catalog.validate_params(job.spec.type, job.spec.params)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc, prefix="spec.params")) from None
    job_type = catalog.get(job.spec.type)
    if job.spec.shards > 1 and not job_type.shardable:
        raise InvalidSpecError(f"spec.shards: job type {job_type.name} cannot be sharded")
    return job


def parse_project(body: Any) -> ProjectResource:
    """Parse a raw Project body; raise :class:`InvalidSpecError` naming the field."""
    try:
        return ProjectResource.model_validate(body)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc)) from None
