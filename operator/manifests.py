"""Pure builders of the Kubernetes objects a Job resource owns (model in, dict out).

Nothing here talks to the API: handlers call these builders, pass the result through
``kopf.adopt`` (owner reference and namespace) and create it. Tests compare the output with
YAML golden files (``tests/data/operator/output/``), dask-kubernetes ``build_*_spec`` style.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .models import JobResource, ProjectResource

LABEL_PREFIX = "cryokube.io"
JOB_LABEL = f"{LABEL_PREFIX}/job"
PROJECT_LABEL = f"{LABEL_PREFIX}/project"
TYPE_LABEL = f"{LABEL_PREFIX}/type"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

WORKER_CONTAINER = "worker"
PROJECT_MOUNT = "/project"
CACHE_MOUNT = "/cache"
BAD_INPUT_EXIT_CODE = 2
"""``cryokube-worker`` exits 2 on bad input: retrying cannot help, so the Job fails at once."""

MAX_NAME_CHARS = 63
# Keys that belong to tools, not to the user: never copied onto children (kopf keeps its
# progress there; kubectl its last-applied configuration).
FOREIGN_KEY_PREFIXES = ("kopf.zalando.org/", "kubectl.kubernetes.io/")


@dataclass(frozen=True)
class WorkerConfig:
    """Operator-wide settings that go into every worker pod.

    Attributes
    ----------
    metadata_url : str or None
        Base URL of the metadata service the workers report to; ``None`` when not configured
        (workers then only write files).
    """

    metadata_url: str | None = None


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


def _storage(project: ProjectResource, job_name: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Volumes, mounts and env for the project's storage root (PVC or S3)."""
    storage = project.spec.storage
    if storage.pvc is not None:
        volumes = [
            {"name": "project", "persistentVolumeClaim": {"claimName": storage.pvc.claim_name}}
        ]
        mounts = [{"name": "project", "mountPath": PROJECT_MOUNT, "subPath": storage.pvc.sub_path}]
        env: list[dict[str, Any]] = [
            {"name": "CRYOKUBE_STORAGE_ROOT", "value": PROJECT_MOUNT},
            {"name": "CRYOKUBE_JOB_DIR", "value": f"{PROJECT_MOUNT}/{job_name}"},
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
    volumes, mounts, storage_env = _storage(project, name)
    gpus = job.gpus_per_pod()
    requests: dict[str, Any] = {"cpu": job.spec.resources.cpu, "memory": job.spec.resources.memory}
    limits: dict[str, Any] = {"memory": job.spec.resources.memory}
    if gpus:
        requests[workers.gpu_resource_name] = str(gpus)
        limits[workers.gpu_resource_name] = str(gpus)
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
        {"name": "CRYOKUBE_CACHE_DIR", "value": CACHE_MOUNT},
        *storage_env,
        {
            "name": "CRYOKUBE_JOB_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(name), "key": "token"}},
        },
    ]
    if config.metadata_url:
        env.append({"name": "CRYOKUBE_METADATA_URL", "value": config.metadata_url})
    pod_security: dict[str, Any] = {
        "runAsUser": project.spec.run_as_user,
        "runAsGroup": project.spec.run_as_group,
        "fsGroup": (
            project.spec.fs_group
            if project.spec.fs_group is not None
            else project.spec.run_as_group
        ),
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "name": WORKER_CONTAINER,
        "image": workers.image,
        "command": ["cryokube-worker", "run"],
        "args": ["--job", name, "--type", job.spec.type],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            *mounts,
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            *volumes,
            {"name": "cache", "emptyDir": {"sizeLimit": workers.cache_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if workers.node_selector:
        pod_spec["nodeSelector"] = {term.key: term.value for term in workers.node_selector}
    if workers.tolerations:
        # operator is always written: Kubernetes reads a missing one as Equal, which would not
        # tolerate valued taints (GKE's nvidia.com/gpu=present) with the model's default Exists.
        pod_spec["tolerations"] = [
            {
                "key": t.key,
                "operator": t.operator,
                **({"value": t.value} if t.operator == "Equal" else {}),
                **({"effect": t.effect} if t.effect else {}),
            }
            for t in workers.tolerations
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
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
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
