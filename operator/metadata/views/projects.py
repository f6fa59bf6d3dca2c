"""Project and user views."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from ..auth import API_TOKEN_PREFIX, token_digest
from ..keys import PROJECTS, REPOS
from ..models import ApiToken, ApiTokenCreate, Page, PageQuery, Project, ProjectCreate, User
from .base import Call, Reply, Result, Spec, endpoint


@endpoint(
    Spec("Projects the caller may use.", auth="user", query=PageQuery, response=Page[Project])
)
async def list_projects(call: Call) -> Result:
    """A page of projects, by name."""
    return await call.request.app[PROJECTS].page(call.user, call.query)


@endpoint(
    Spec(
        "Create a project (admins).", auth="user", body=ProjectCreate, response=Project, status=201
    )
)
async def create_project(call: Call) -> Result:
    """201 when created, 200 when an identical project already existed."""
    project, created = await call.request.app[PROJECTS].create(call.user, call.body)
    return Reply(project, 201 if created else 200)


@endpoint(Spec("One project.", auth="user", response=Project))
async def get_project(call: Call) -> Result:
    """404 when absent or not visible to the caller."""
    return await call.request.app[PROJECTS].get(call.user, call.path["project"])


@endpoint(Spec("The caller's identity and role.", auth="user", response=User))
async def me(call: Call) -> Result:
    """Records the user as last seen with these groups (API tokens resolve groups from it)."""
    who = call.user
    await call.request.app[REPOS].users.record(
        name=who.name, email=who.email, groups=list(who.groups)
    )
    return User(name=who.name, email=who.email, groups=list(who.groups), role=who.role)


@endpoint(
    Spec(
        "Mint a personal API token.",
        auth="user",
        body=ApiTokenCreate,
        response=ApiToken,
        status=201,
    )
)
async def create_api_token(call: Call) -> Result:
    """The token is returned once; only its SHA-256 digest is stored."""
    who = call.user
    repos = call.request.app[REPOS]
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(days=call.body.ttl_days)
    await repos.users.record(name=who.name, email=who.email, groups=list(who.groups))
    await repos.api_tokens.add(digest=token_digest(token), user=who.name, expires_at=expires_at)
    return ApiToken(token=token, expires_at=expires_at)
