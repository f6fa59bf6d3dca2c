"""Helpers for the metadata-service tests: settings against a test server, and auth headers."""

from __future__ import annotations

from cryokube.operator.metadata.auth import (
    EMAIL_HEADER,
    GROUPS_HEADER,
    PROXY_SECRET_HEADER,
    USER_HEADER,
)
from cryokube.operator.metadata.settings import Settings
from cryokube.operator.metadata.tokens import mint_job_token

TOKEN_SECRET = "test-token-secret-0123456789abcdef-xyz"
SERVICE_TOKEN = "test-service-token-0123456789abcdef-xyz"
PROXY_SECRET = "test-proxy-secret-0123"
ADMIN_GROUP = "cryokube-admins"


def make_settings(uri: str, database: str, **overrides: object) -> Settings:
    """Settings for a test app: two quick attempts per store operation, with the service's own 2 s
    server-selection timeout so that a slow answer on a loaded runner is not taken for an outage
    (outage tests pass a shorter one)."""
    values: dict[str, object] = {
        "mongodb_uri": uri,
        "database": database,
        "token_secret": TOKEN_SECRET,
        "service_token": SERVICE_TOKEN,
        "proxy_secret": PROXY_SECRET,
        "server_selection_timeout_ms": 2000,
        "store_attempts": 2,
        "store_backoff_s": 0.05,
        "retry_after_s": 3,
        "poll_interval_s": 0.05,
        "sse_keepalive_s": 0.3,
        "client_max_size_bytes": 64 * 1024,
        **overrides,
    }
    return Settings.model_validate(values)


def user(name: str, *groups: str, email: str | None = None) -> dict[str, str]:
    """Headers the auth proxy would send for ``name`` in ``groups``."""
    headers = {
        PROXY_SECRET_HEADER: PROXY_SECRET,
        USER_HEADER: name,
        GROUPS_HEADER: ",".join(groups),
    }
    if email is not None:
        headers[EMAIL_HEADER] = email
    return headers


def admin(name: str = "ada") -> dict[str, str]:
    """Proxy headers of an admin."""
    return user(name, ADMIN_GROUP)


OPERATOR = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def worker(
    project: str, job: str, *, ttl_s: int = 600, now_s: float | None = None
) -> dict[str, str]:
    """The Authorization header of a worker of ``job``."""
    token = mint_job_token(TOKEN_SECRET, project=project, job=job, ttl_s=ttl_s, now_s=now_s)
    return {"Authorization": f"Bearer {token}"}
