"""Pure builders of the Kubernetes objects a Job resource owns (model in, dict out).

Nothing here talks to the API: handlers call these builders, pass the result through
``kopf.adopt`` (owner reference and namespace) and create it. Tests compare the output with
YAML golden files (``tests/data/operator/output/``), dask-kubernetes ``build_*_spec`` style.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator

from .models import (
    API_VERSION,
    QUANTITY,
    CamelModel,
    JobResource,
    ProjectResource,
    Toleration,
    WorkerDefaults,
)

LABEL_PREFIX = "cryokube.io"
JOB_LABEL = f"{LABEL_PREFIX}/job"
PROJECT_LABEL = f"{LABEL_PREFIX}/project"
TYPE_LABEL = f"{LABEL_PREFIX}/type"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

WORKER_CONTAINER = "worker"
BAD_INPUT_EXIT_CODE = 2
"""``cryokube-worker`` exits 2 on bad input: retrying cannot help, so the Job fails at once."""

MAX_NAME_CHARS = 63
# Keys that belong to tools, not to the user: never copied onto children (kopf keeps its
# progress there; kubectl its last-applied configuration).
FOREIGN_KEY_PREFIXES = ("kopf.zalando.org/", "kubectl.kubernetes.io/")
T = TypeVar("T")


class SsdCache(CamelModel):
    """The workers' node-local SSD cache of S3 objects and scratch space."""

    host_path: str = Field("", description="Host path of the node's SSD (empty: an emptyDir).")
    size_limit: str = Field("100Gi", pattern=QUANTITY, description="emptyDir size limit.")
    mount_path: str = Field("/cache", pattern=r"^/", description="Mount path in the worker.")


class PodResources(CamelModel):
    """Default requests and limits of a worker container (quantities by resource name)."""

    requests: dict[str, str] = Field(default_factory=dict, description="Requests.")
    limits: dict[str, str] = Field(default_factory=dict, description="Limits.")

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities_as_text(cls, value: Any) -> Any:
        # YAML reads `cpu: 4` as a number; Kubernetes quantities are strings.
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int | float) else v for k, v in value.items()}
        return value


class LocalObjectReference(CamelModel):
    """A reference by name to an object in the same namespace (an image pull Secret)."""

    name: str = Field(description="Object name.")


class WorkerConfig(CamelModel):
    """Operator-wide defaults of every worker pod: the chart's ``worker-defaults.yaml``.

    The operator reads the file named by ``CRYOKUBE_WORKER_DEFAULTS`` once at start-up. A
    Project's own ``spec.workers`` settings and a Job's own ``spec.resources`` win over these
    wherever the resource sets them; these win over the models' built-in defaults. The built-in
    values here are what a pod gets with no file.
    """

    metadata_url: str | None = Field(
        None,
        alias="metadataURL",
        description="Metadata-service base URL the workers report to (none: files only).",
    )
    image: str = Field("ghcr.io/cryokube/worker:0.1.0", description="Worker image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy (none: Kubernetes' default)."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, description="Secrets for a private registry (in each namespace)."
    )
    gpu_resource_name: str = Field("nvidia.com/gpu", description="Extended resource per GPU.")
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra pod labels (the operator's own labels win)."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations.")
    resources: PodResources = Field(
        default_factory=PodResources, description="Requests and limits a Job does not set."
    )
    pod_security_context: dict[str, Any] = Field(
        default_factory=dict, description="Base pod securityContext (hardening keys forced)."
    )
    container_security_context: dict[str, Any] = Field(
        default_factory=dict, description="Base container securityContext (hardening forced)."
    )
    ssd_cache: SsdCache = Field(default_factory=SsdCache, description="The SSD cache.")
    project_mount_path: str = Field(
        "/project", pattern=r"^/", description="Where a PVC project root is mounted."
    )
    checkpoint_interval_s: float = Field(
        60.0,
        ge=0.0,
        allow_inf_nan=False,
        alias="checkpointIntervalS",
        description=(
            "Seconds between the saved states of iterative jobs, which a restarted pod resumes "
            "from (0: after every iteration). Shorter loses less work on preemptible nodes."
        ),
    )


def child_name(job_name: str, step: str = "run") -> str:
    """Deterministic name of the child batch Job: ``{job}-{step}``, at most 63 characters.

    Long names keep a prefix and gain a 8-character hash of the full name, so two long Job
    names never map to the same child and the operator always finds its child again.
    """
    name = f"{job_name}-{step}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_CHARS - 9].rstrip('-')}-{digest}"


def token_secret_name(job_name: str) -> str:
    """Name of the Secret holding the job's metadata-service token."""
    return child_name(job_name, "token")


def user_metadata(values: dict[str, str]) -> dict[str, str]:
    """Drop tool-owned keys (kopf, kubectl) from labels or annotations before copying them."""
    return {k: v for k, v in values.items() if not k.startswith(FOREIGN_KEY_PREFIXES)}


def child_labels(job: JobResource) -> dict[str, str]:
    """Labels of every child object: the user's, then ours (ours win)."""
    labels = user_metadata(job.metadata.labels)
    labels.update(
        {
            "app.kubernetes.io/name": "cryokube-worker",
            "app.kubernetes.io/managed-by": "cryokube-operator",
            JOB_LABEL: job.metadata.name,
            PROJECT_LABEL: job.spec.project,
            TYPE_LABEL: job.spec.type,
        }
    )
    if job.spec.queue:
        labels[KUEUE_QUEUE_LABEL] = job.spec.queue
    return labels


def with_project_owner(
    owners: list[dict[str, Any]], project: ProjectResource
) -> list[dict[str, Any]] | None:
    """A Job's ``ownerReferences`` with its Project added; ``None`` when nothing is to add.

    The reference is not a controller one (the Project does not reconcile its Jobs) and does
    not block the Project's deletion: it only lets the garbage collector delete a Project's Jobs
    with it, and through their own references their batch Jobs and pods (Kubernetes "Garbage
    Collection", owners and dependents). ``None`` too when the Project has no uid yet.
    """
    uid = project.metadata.uid
    if not uid or any(owner.get("uid") == uid for owner in owners):
        return None
    reference = {
        "apiVersion": API_VERSION,
        "kind": "Project",
        "name": project.metadata.name,
        "uid": uid,
    }
    return [*owners, reference]


def build_token_secret(job: JobResource, token: str) -> dict[str, Any]:
    """Build the Secret with the job's token (key ``token``), mounted as an env var."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(job.metadata.name),
            "namespace": job.metadata.namespace,
            "labels": child_labels(job),
        },
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def _storage(
    project: ProjectResource, job_name: str, mount: str
) -> tuple[list[Any], list[Any], list[Any]]:
    """Volumes, mounts and env for the project's storage root (PVC at ``mount``, or S3)."""
    storage = project.spec.storage
    if storage.pvc is not None:
        volumes = [
            {"name": "project", "persistentVolumeClaim": {"claimName": storage.pvc.claim_name}}
        ]
        mounts = [{"name": "project", "mountPath": mount, "subPath": storage.pvc.sub_path}]
        env: list[dict[str, Any]] = [
            {"name": "CRYOKUBE_STORAGE_ROOT", "value": mount},
            {"name": "CRYOKUBE_JOB_DIR", "value": f"{mount.rstrip('/')}/{job_name}"},
        ]
        return volumes, mounts, env
    if storage.s3 is not None:
        s3 = storage.s3
        root = f"s3://{s3.bucket}/{s3.prefix.strip('/')}".rstrip("/")
        env = [
            {"name": "CRYOKUBE_STORAGE_ROOT", "value": root},
            {"name": "CRYOKUBE_JOB_DIR", "value": f"{root}/{job_name}"},
        ]
        if s3.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
        env.extend(
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": s3.secret_ref, "key": key}},
            }
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        )
        return [], [], env
    raise ValueError(
        f"project {project.metadata.name!r}: spec.storage.path is for the local runner only; "
        "a cluster needs spec.storage.pvc or spec.storage.s3"
    )


HARDENED_CONTAINER: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
"""Container security settings no default may loosen (writable paths are emptyDir volumes)."""


def _own(workers: WorkerDefaults, field: str, default: T) -> T:
    """The Project's ``spec.workers`` field when the Project sets it, else ``default``."""
    value: T = getattr(workers, field) if field in workers.model_fields_set else default
    return value


def _resources(job: JobResource, defaults: PodResources, gpu_resource: str) -> dict[str, Any]:
    """Requests and limits: the Job's own cpu and memory, else the defaults, else the model's.

    A Job's own memory is both its request and its limit; GPUs are requested and limited alike,
    as Kubernetes requires for extended resources.
    """
    own = job.spec.resources
    cpu = own.cpu if "cpu" in own.model_fields_set else defaults.requests.get("cpu", own.cpu)
    if "memory" in own.model_fields_set:
        memory = memory_limit = own.memory
    else:
        memory = defaults.requests.get("memory", own.memory)
        memory_limit = defaults.limits.get("memory", memory)
    requests: dict[str, Any] = {**defaults.requests, "cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {**defaults.limits, "memory": memory_limit}
    gpus = job.gpus_per_pod()
    if gpus:
        requests[gpu_resource] = limits[gpu_resource] = str(gpus)
    return {"requests": requests, "limits": limits}


def build_child_job(
    job: JobResource, project: ProjectResource, *, config: WorkerConfig
) -> dict[str, Any]:
    """Build the batch/v1 Job that runs ``job`` as ``spec.shards`` worker pods.

    Parameters
    ----------
    job : JobResource
        The validated Job resource (params already checked against the catalog).
    project : ProjectResource
        Its Project: storage, UNIX ids, worker defaults.
    config : WorkerConfig
        Operator-wide worker settings.

    Returns
    -------
    dict
        The manifest, without owner references (``kopf.adopt`` adds them).

    Raises
    ------
    ValueError
        If the project's storage is a local ``path`` (not usable in a cluster).

    Notes
    -----
    * ``completionMode: Indexed`` gives each shard ``JOB_COMPLETION_INDEX``; the worker reads it
      with ``CRYOKUBE_SHARDS`` to pick its part of the exposures.
    * ``podFailurePolicy`` fails the whole Job at once on exit code 2 (bad input) and does not
      count pod disruptions (preemption, node drain) against ``backoffLimit``; it needs
      ``restartPolicy: Never``.
    * With ``spec.queue`` the Job is created suspended with Kueue's queue-name label: Kueue
      admits it (unsuspends it) when quota allows.
    """
    name = job.metadata.name
    workers = project.spec.workers
    labels = child_labels(job)
    volumes, mounts, storage_env = _storage(project, name, config.project_mount_path)
    gpu_resource = _own(workers, "gpu_resource_name", config.gpu_resource_name)
    cache = config.ssd_cache
    env: list[dict[str, Any]] = [
        {"name": "CRYOKUBE_PROJECT", "value": job.spec.project},
        {"name": "CRYOKUBE_JOB", "value": name},
        {"name": "CRYOKUBE_JOB_UID", "value": job.metadata.uid},
        {"name": "CRYOKUBE_JOB_TYPE", "value": job.spec.type},
        {"name": "CRYOKUBE_PARAMS", "value": json.dumps(job.spec.params, sort_keys=True)},
        {
            "name": "CRYOKUBE_INPUTS",
            "value": json.dumps([i.model_dump() for i in job.spec.inputs]),
        },
        {"name": "CRYOKUBE_SHARDS", "value": str(job.spec.shards)},
        {"name": "CRYOKUBE_CACHE_DIR", "value": cache.mount_path},
        # The worker's CPU threads: the pod's CPU request in whole cores (rounded up), not the
        # node's core count, which would multiply per-thread buffers past the memory limit.
        {
            "name": "CRYOKUBE_FFT_WORKERS",
            "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}},
        },
        *storage_env,
        {
            "name": "CRYOKUBE_JOB_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(name), "key": "token"}},
        },
        {"name": "CRYOKUBE_CHECKPOINT_INTERVAL_S", "value": f"{config.checkpoint_interval_s:g}"},
    ]
    if config.metadata_url:
        env.append({"name": "CRYOKUBE_METADATA_URL", "value": config.metadata_url})
    # The Project's UNIX ids always apply (files belong to the lab); hardening is forced.
    pod_security: dict[str, Any] = {
        "seccompProfile": {"type": "RuntimeDefault"},
        **config.pod_security_context,
        "runAsUser": project.spec.run_as_user,
        "runAsGroup": project.spec.run_as_group,
        "fsGroup": (
            project.spec.fs_group
            if project.spec.fs_group is not None
            else project.spec.run_as_group
        ),
        "runAsNonRoot": True,
    }
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": _own(workers, "image", config.image),
        **({"imagePullPolicy": config.image_pull_policy} if config.image_pull_policy else {}),
        "command": ["cryokube-worker", "run"],
        "args": ["--job", name, "--type", job.spec.type],
        "env": env,
        "resources": _resources(job, config.resources, gpu_resource),
        "securityContext": {**config.container_security_context, **HARDENED_CONTAINER},
        "volumeMounts": [
            *mounts,
            {"name": "cache", "mountPath": cache.mount_path},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    cache_volume: dict[str, Any] = (
        {"hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
        if cache.host_path
        else {"emptyDir": {"sizeLimit": _own(workers, "cache_size", cache.size_limit)}}
    )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            *volumes,
            {"name": "cache", **cache_volume},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [ref.model_dump() for ref in config.image_pull_secrets]
    node_selector = (
        {term.key: term.value for term in workers.node_selector}
        if "node_selector" in workers.model_fields_set
        else config.node_selector
    )
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _own(workers, "tolerations", config.tolerations)
    if tolerations:
        # operator is always written: Kubernetes reads a missing one as Equal, which would not
        # tolerate valued taints (GKE's nvidia.com/gpu=present) with the model's default Exists.
        pod_spec["tolerations"] = [
            {
                "key": t.key,
                "operator": t.operator,
                **({"value": t.value} if t.operator == "Equal" else {}),
                **({"effect": t.effect} if t.effect else {}),
            }
            for t in tolerations
        ]
    spec: dict[str, Any] = {
        "completions": job.spec.shards,
        "parallelism": job.spec.shards,
        "completionMode": "Indexed",
        "backoffLimit": workers.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": WORKER_CONTAINER,
                        "operator": "In",
                        "values": [BAD_INPUT_EXIT_CODE],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {"metadata": {"labels": {**config.pod_labels, **labels}}, "spec": pod_spec},
    }
    if job.spec.queue:
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": child_name(name),
            "namespace": job.metadata.namespace,
            "labels": labels,
            "annotations": user_metadata(job.metadata.annotations),
        },
        "spec": spec,
    }
