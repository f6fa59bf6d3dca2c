"""Authentication at the edge: users through the auth proxy or API tokens, workers by job token.

The proxy's identity headers (``X-Forwarded-User``, ``X-Forwarded-Email``,
``X-Forwarded-Groups``) are trusted only when the request proves it came through the proxy: the
shared secret in ``X-Auth-Proxy-Secret`` or a source address in ``trusted_proxies``. Anything else
is 401, so a client that reaches the service directly cannot claim an identity.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from aiohttp import web

from .errors import Unauthenticated
from .keys import REPOS, SETTINGS
from .models import Role
from .services.access import Identity
from .settings import Settings
from .tokens import JobClaims, verify_job_token

USER_HEADER = "X-Forwarded-User"
EMAIL_HEADER = "X-Forwarded-Email"
GROUPS_HEADER = "X-Forwarded-Groups"
PROXY_SECRET_HEADER = "X-Auth-Proxy-Secret"
API_TOKEN_PREFIX = "ck_"
OPERATOR_NAME = "system:cryokube-operator"
LOCAL_COOKIE = "cryokube_local"


def bearer(request: web.Request) -> str | None:
    """The bearer token of the ``Authorization`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_digest(token: str) -> str:
    """SHA-256 hex digest under which an API token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def role_of(groups: tuple[str, ...], settings: Settings) -> Role:
    """Admin when any group is an admin group, else member."""
    return Role.ADMIN if set(groups) & set(settings.admin_groups) else Role.MEMBER


def came_through_proxy(request: web.Request, settings: Settings) -> bool:
    """Whether the request proves it passed the auth proxy (secret header or source address)."""
    sent = request.headers.get(PROXY_SECRET_HEADER)
    if settings.proxy_secret is not None and sent is not None:
        return hmac.compare_digest(sent.encode(), settings.proxy_secret.encode())
    if settings.trusted_proxies and request.remote:
        try:
            source = ipaddress.ip_address(request.remote)
        except ValueError:
            return False
        return any(
            source in ipaddress.ip_network(net, strict=False) for net in settings.trusted_proxies
        )
    return False


async def user_identity(request: web.Request) -> Identity:
    """The calling user or service.

    Raises
    ------
    Unauthenticated
        No proof of the proxy, no user header, or an unknown or expired token.
    """
    settings = request.app[SETTINGS]
    token = bearer(request)
    if token is not None:
        if settings.service_token is not None and hmac.compare_digest(
            token.encode(), settings.service_token.encode()
        ):
            return Identity(name=OPERATOR_NAME, email=None, groups=(), role=Role.ADMIN)
        if token.startswith(API_TOKEN_PREFIX):
            repos = request.app[REPOS]
            owner = await repos.api_tokens.owner(token_digest(token))
            known = None if owner is None else await repos.users.groups(owner)
            if owner is not None and known is not None:
                kept = tuple(known)
                return Identity(owner, email=None, groups=kept, role=role_of(kept, settings))
        raise Unauthenticated("bearer token is not valid")
    cookie = request.cookies.get(LOCAL_COOKIE)
    if settings.local_login_token is not None and cookie is not None:
        if hmac.compare_digest(cookie.encode(), settings.local_login_token.encode()):
            return Identity(name=settings.local_user, email=None, groups=(), role=Role.ADMIN)
        raise Unauthenticated(
            "the local sign-in cookie is not valid; use the URL cryokube up printed"
        )
    if not came_through_proxy(request, settings):
        raise Unauthenticated("request did not come through the auth proxy")
    name = request.headers.get(USER_HEADER, "").strip()
    if not name:
        raise Unauthenticated(f"{USER_HEADER} is missing")
    groups = tuple(
        g.strip() for g in request.headers.get(GROUPS_HEADER, "").split(",") if g.strip()
    )
    email = request.headers.get(EMAIL_HEADER, "").strip() or None
    return Identity(name=name, email=email, groups=groups, role=role_of(groups, settings))


async def local_login(request: web.Request) -> web.StreamResponse:
    """Workstation sign-in: ``/login?token=...`` sets the local admin cookie, then the console.

    Only routed when ``local_login_token`` is set (``cryokube up``); a wrong token is a 401.
    """
    settings = request.app[SETTINGS]
    sent = request.query.get("token", "")
    expected = settings.local_login_token or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthenticated("login token is not valid")
    response = web.HTTPFound("/console/")
    response.set_cookie(LOCAL_COOKIE, expected, httponly=True, samesite="Strict", path="/")
    raise response


def job_claims(request: web.Request, job: str) -> JobClaims:
    """Verified claims of the job token on a worker RPC for ``job``.

    Raises
    ------
    Unauthenticated
        Missing, malformed, forged, expired, or another job's token.
    """
    token = bearer(request)
    if token is None:
        raise Unauthenticated("worker RPC needs 'Authorization: Bearer <job token>'")
    return verify_job_token(request.app[SETTINGS].token_secret, token, job=job)
