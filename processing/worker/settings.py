"""The worker's settings, read once from the environment the operator (or local runner) sets.

The contract is the env list built by ``cryokube.operator.manifests.build_child_job``:
``CRYOKUBE_PROJECT``, ``CRYOKUBE_JOB``, ``CRYOKUBE_JOB_UID``, ``CRYOKUBE_JOB_TYPE``,
``CRYOKUBE_PARAMS`` (JSON object), ``CRYOKUBE_INPUTS`` (JSON list of ``{job, output}``),
``CRYOKUBE_SHARDS`` with Kubernetes' ``JOB_COMPLETION_INDEX``, ``CRYOKUBE_STORAGE_ROOT`` (a folder
or ``s3://bucket/prefix``), ``CRYOKUBE_CACHE_DIR``, ``CRYOKUBE_METADATA_URL`` and
``CRYOKUBE_JOB_TOKEN``; ``CRYOKUBE_DEVICE`` (``auto``, ``cpu`` or ``gpu``) overrides the device,
and ``CRYOKUBE_CHECKPOINT_INTERVAL_S`` (seconds, default 60; 0: after every iteration) sets the
least time between two iteration checkpoints of a long job (2D classification, ab-initio,
refinement): a retried pod redoes at most that much work plus one iteration.
``CRYOKUBE_FFT_WORKERS`` (the pod's CPU request) bounds the worker's CPU threads, read by
:func:`cryokube.processing.backend.fft_workers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cryokube.processing.jobs import JobType
from cryokube.processing.jobs import get as get_job_type
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class InputRef(BaseModel):
    """``{job, output}``: an output group of an upstream job in the same project."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    output: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$")
    slot: str | None = Field(default=None, description="input slot; default: the only one")


class WorkerSettings(BaseModel):
    """Everything a worker needs to run one job (or one shard of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(min_length=1)
    job: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    job_uid: str = Field(min_length=1)
    job_type: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputRef] = Field(default_factory=list)
    shards: int = Field(default=1, ge=1, le=10_000)
    shard_index: int = Field(default=0, ge=0)
    storage_root: str = Field(min_length=1)
    cache_dir: Path | None = None
    cache_quota_bytes: int = Field(default=100 * 1024**3, gt=0)
    metadata_url: str | None = None
    job_token: str | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    checkpoint_interval_s: float = Field(default=60.0, ge=0.0, allow_inf_nan=False)

    @field_validator("job_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        get_job_type(value)  # raises ValueError naming the type and the known ones
        return value

    @property
    def job_type_def(self) -> JobType:
        return get_job_type(self.job_type)


ENV = {
    "project": "CRYOKUBE_PROJECT",
    "job": "CRYOKUBE_JOB",
    "job_uid": "CRYOKUBE_JOB_UID",
    "job_type": "CRYOKUBE_JOB_TYPE",
    "params": "CRYOKUBE_PARAMS",
    "inputs": "CRYOKUBE_INPUTS",
    "shards": "CRYOKUBE_SHARDS",
    "shard_index": "JOB_COMPLETION_INDEX",
    "storage_root": "CRYOKUBE_STORAGE_ROOT",
    "cache_dir": "CRYOKUBE_CACHE_DIR",
    "cache_quota_bytes": "CRYOKUBE_CACHE_QUOTA_BYTES",
    "metadata_url": "CRYOKUBE_METADATA_URL",
    "job_token": "CRYOKUBE_JOB_TOKEN",
    "device": "CRYOKUBE_DEVICE",
    "checkpoint_interval_s": "CRYOKUBE_CHECKPOINT_INTERVAL_S",
}
JSON_FIELDS = {"params", "inputs"}


class SettingsError(ValueError):
    """The environment does not describe a runnable job (names the variable)."""


def settings_from_env(env: Mapping[str, str]) -> WorkerSettings:
    """Parse :data:`ENV` variables; errors name the variable, never a bare traceback."""
    raw: dict[str, Any] = {}
    for field, var in ENV.items():
        if var not in env or env[var] == "":
            continue
        value: Any = env[var]
        if field in JSON_FIELDS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{var} is not valid JSON: {exc}") from None
        raw[field] = value
    try:
        settings = WorkerSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        var = ENV.get(field, field)
        where = ".".join(str(p) for p in first["loc"][1:])
        raise SettingsError(f"{var}{'.' + where if where else ''}: {first['msg']}") from None
    if settings.shard_index >= settings.shards:
        raise SettingsError(
            f"JOB_COMPLETION_INDEX={settings.shard_index} is not below CRYOKUBE_SHARDS="
            f"{settings.shards}"
        )
    return settings


def settings_to_env(settings: WorkerSettings) -> dict[str, str]:
    """The environment that :func:`settings_from_env` reads back as ``settings``."""
    env: dict[str, str] = {}
    for field, var in ENV.items():
        value = getattr(settings, field)
        if value is None:
            continue
        if field in JSON_FIELDS:
            env[var] = json.dumps(
                [v.model_dump(exclude_none=True) for v in value] if field == "inputs" else value
            )
        else:
            env[var] = str(value)
    return env
