"""Service settings, read once from the environment (``CRYOKUBE_*`` and ``MONGODB_URI``).

Secure by default: with neither a proxy secret nor trusted proxy addresses configured, no request
is trusted as a user, and every user endpoint answers 401.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Settings(BaseModel):
    """Configuration of one metadata-service instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mongodb_uri: str | None = Field(
        default=None,
        description="Production MongoDB URI (a replica set); when unset the service runs embedded.",
    )
    database: str = Field(default="cryokube", description="MongoDB database name.")
    embedded_data_dir: Path | None = Field(
        default=None, description="Persistent data folder of the embedded nx-27017 server."
    )
    embedded_port: int = Field(default=27817, ge=1, le=65535, description="Port of nx-27017.")
    token_secret: str = Field(
        min_length=32, description="HMAC key of the per-job worker tokens (>= 32 bytes)."
    )
    service_token: str | None = Field(
        default=None,
        min_length=32,
        description="Bearer token of the operator's service identity (admin); None disables it.",
    )
    local_login_token: str | None = Field(
        default=None,
        min_length=32,
        description=(
            "Workstation mode only (cryokube up): GET /login?token=<this> sets a cookie that "
            "signs the browser in as the local admin. Never set in a cluster (the proxy signs in)."
        ),
    )
    local_user: str = Field(
        default="local",
        min_length=1,
        max_length=200,
        description="User name of the workstation's local admin.",
    )
    proxy_secret: str | None = Field(
        default=None,
        min_length=16,
        description="Value the auth proxy sends in X-Auth-Proxy-Secret to prove its requests.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(), description="Source addresses or CIDR networks of the auth proxy."
    )
    admin_groups: tuple[str, ...] = Field(
        default=("cryokube-admins",), description="Proxy groups whose members are admins."
    )
    client_max_size_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest accepted request body, bytes."
    )
    server_selection_timeout_ms: int = Field(
        default=2000, ge=50, description="How long one MongoDB attempt waits for a server, ms."
    )
    store_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per operation.")
    store_backoff_s: float = Field(
        default=0.2, ge=0.0, description="First retry delay, doubled each attempt, seconds."
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After sent with a 503, s.")
    poll_interval_s: float = Field(
        default=0.5, gt=0.0, description="Change-feed polling period when streams are absent, s."
    )
    sse_keepalive_s: float = Field(
        default=15.0,
        gt=0.0,
        description="Idle time before an SSE comment line keeps a stream open, s.",
    )
    job_submitter: Literal["none", "kubernetes"] = Field(
        default="none",
        description=(
            "Where the console's create-job form sends Job resources: 'kubernetes' creates them "
            "through the API server (in a cluster); 'none' registers the job only (the "
            "workstation runner sets its own submitter)."
        ),
    )
    kube_host: str | None = Field(
        default=None,
        description=(
            "Kubernetes API server URL instead of the in-cluster service account or kubeconfig "
            "(job_submitter 'kubernetes'; tests point it at an emulator)."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description=(
            "Endpoint of the S3-compatible store holding s3:// project roots (none: AWS); "
            "credentials come from boto3's usual sources (AWS_* variables, workload identity)."
        ),
    )

    pvc_mounts: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            "PersistentVolumeClaims this service has mounted read-only, as "
            "'<namespace>/<claim>' -> mount path (CRYOKUBE_PVC_MOUNTS, a JSON object): the "
            "console reads pvc:// project roots there."
        ),
    )

    @field_validator("pvc_mounts")
    @classmethod
    def _mounts_name_claims(cls, value: dict[str, Path]) -> dict[str, Path]:
        for claim, path in value.items():
            namespace, _, name = claim.partition("/")
            if not namespace or not name or "/" in name:
                raise ValueError(f"CRYOKUBE_PVC_MOUNTS: key {claim!r} is not '<namespace>/<claim>'")
            if not path.is_absolute():
                raise ValueError(f"CRYOKUBE_PVC_MOUNTS: mount path {str(path)!r} is not absolute")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default ``os.environ``); missing keys keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        mapping = {
            "MONGODB_URI": "mongodb_uri",
            "CRYOKUBE_DATABASE": "database",
            "CRYOKUBE_EMBEDDED_DATA_DIR": "embedded_data_dir",
            "CRYOKUBE_EMBEDDED_PORT": "embedded_port",
            "CRYOKUBE_TOKEN_SECRET": "token_secret",
            "CRYOKUBE_SERVICE_TOKEN": "service_token",
            "CRYOKUBE_PROXY_SECRET": "proxy_secret",
            "CRYOKUBE_CLIENT_MAX_SIZE_BYTES": "client_max_size_bytes",
            "CRYOKUBE_JOB_SUBMITTER": "job_submitter",
            "CRYOKUBE_KUBE_HOST": "kube_host",
            "AWS_ENDPOINT_URL": "s3_endpoint_url",
        }
        for var, field in mapping.items():
            if env.get(var):
                values[field] = env[var]
        for var, field in (
            ("CRYOKUBE_TRUSTED_PROXIES", "trusted_proxies"),
            ("CRYOKUBE_ADMIN_GROUPS", "admin_groups"),
        ):
            if env.get(var):
                values[field] = tuple(s.strip() for s in env[var].split(",") if s.strip())
        if env.get("CRYOKUBE_PVC_MOUNTS"):
            values["pvc_mounts"] = _json_object("CRYOKUBE_PVC_MOUNTS", env["CRYOKUBE_PVC_MOUNTS"])
        return cls.model_validate(values)


def _json_object(var: str, text: str) -> dict[str, str]:
    """``text`` parsed as a JSON object of strings; ``ValueError`` naming ``var`` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{var}: not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(
            f'{var}: expected a JSON object of strings, e.g. {{"ns/claim": "/projects"}}'
        )
    return value
