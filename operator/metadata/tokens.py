"""Per-job worker tokens: HMAC-SHA256 signed, scoped to one job of one project, expiring.

The operator mints a token with :func:`mint_job_token` and puts it in the job's Secret; the worker
sends it as ``Authorization: Bearer <token>`` on every RPC; the service checks it with
:func:`verify_job_token`. The format is ``v1.<payload>.<signature>``, both parts base64url without
padding; the payload is compact JSON ``{"p": project, "j": job, "exp": unix_s}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from .errors import Unauthenticated

TOKEN_VERSION = "v1"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class JobClaims:
    """What a verified job token allows: RPC writes for ``job`` of ``project`` until expiry."""

    project: str
    job: str
    expires_at_s: int


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes):
        raise TypeError("secret must be str or bytes")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes, got {len(key)}")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{TOKEN_VERSION}.{payload}".encode(), hashlib.sha256).digest())


def mint_job_token(
    secret: str | bytes, *, project: str, job: str, ttl_s: int, now_s: float | None = None
) -> str:
    """Sign a token that lets one job's worker call the RPC endpoints for that job only.

    Parameters
    ----------
    secret : str or bytes
        Shared HMAC key of the service (``CRYOKUBE_TOKEN_SECRET``), at least 32 bytes.
    project : str
        Project name the job belongs to.
    job : str
        Job UID (the Kubernetes UID of the Job resource).
    ttl_s : int
        Lifetime in seconds, positive.
    now_s : float, optional
        Issue time as Unix seconds; defaults to the current time.

    Returns
    -------
    str
        ``v1.<payload>.<signature>``.
    """
    key = _secret_bytes(secret)
    if not project:
        raise ValueError("project must be a non-empty string")
    if not job:
        raise ValueError("job must be a non-empty string")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    issued = time.time() if now_s is None else now_s
    claims = {"p": project, "j": job, "exp": int(issued) + int(ttl_s)}
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{TOKEN_VERSION}.{payload}.{_sign(key, payload)}"


def verify_job_token(
    secret: str | bytes, token: str, *, job: str, now_s: float | None = None
) -> JobClaims:
    """Check a job token's signature, expiry and scope.

    Parameters
    ----------
    secret : str or bytes
        The HMAC key the token was minted with.
    token : str
        The bearer token from the request.
    job : str
        UID of the job the request writes to; the token must be scoped to it.
    now_s : float, optional
        Current time as Unix seconds; defaults to the clock.

    Returns
    -------
    JobClaims
        The verified claims.

    Raises
    ------
    Unauthenticated
        Malformed token, bad signature, expired, or scoped to another job.
    """
    key = _secret_bytes(secret)
    version, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if version != TOKEN_VERSION or not payload or not signature:
        raise Unauthenticated("job token is malformed")
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise Unauthenticated("job token signature is invalid")
    try:
        claims = json.loads(_unb64(payload))
        claimed = JobClaims(
            project=str(claims["p"]), job=str(claims["j"]), expires_at_s=int(claims["exp"])
        )
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise Unauthenticated("job token payload is malformed") from exc
    if (time.time() if now_s is None else now_s) >= claimed.expires_at_s:
        raise Unauthenticated("job token has expired")
    if not hmac.compare_digest(claimed.job, job):
        raise Unauthenticated("job token is scoped to another job")
    return claimed
