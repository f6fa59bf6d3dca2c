"""The endpoint decorator: authentication, pydantic parsing and serialization in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..auth import job_claims, user_identity
from ..errors import NotFound
from ..models import Uid
from ..services.access import Identity
from ..tokens import JobClaims

Auth = Literal["user", "worker", "none"]
_UID = TypeAdapter(Uid)


class RequestInvalid(Exception):
    """A request part failed validation; ``where`` is ``body``, ``query`` or ``path``."""

    def __init__(self, where: str, error: ValidationError) -> None:
        super().__init__(str(error))
        self.where = where
        self.error = error


@dataclass(frozen=True)
class Spec:
    """What an endpoint takes and returns; the OpenAPI document is generated from it."""

    summary: str
    auth: Auth
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content_type: str = "application/json"


@dataclass
class Call:
    """One parsed request, handed to a view."""

    request: web.Request
    body: Any = None
    query: Any = None
    identity: Identity | None = None
    claims: JobClaims | None = None
    path: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> Identity:
        """The authenticated user (for ``auth="user"`` endpoints)."""
        if self.identity is None:
            raise RuntimeError("endpoint is not declared with auth='user'")
        return self.identity

    @property
    def job(self) -> JobClaims:
        """The verified job claims (for ``auth="worker"`` endpoints)."""
        if self.claims is None:
            raise RuntimeError("endpoint is not declared with auth='worker'")
        return self.claims


@dataclass(frozen=True)
class Reply:
    """A model with an explicit status (e.g. 201 when a write created something)."""

    model: BaseModel
    status: int


Result = BaseModel | Reply | web.StreamResponse
View = Callable[[Call], Awaitable[Result]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _path(request: web.Request) -> dict[str, str]:
    values = dict(request.match_info)
    if "uid" in values:
        try:
            _UID.validate_python(values["uid"])
        except ValidationError:
            raise NotFound(f"job {values['uid']!r} not found") from None
    return values


def _parse(where: str, model: type[BaseModel], data: Any) -> BaseModel:
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestInvalid(where, exc) from None


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """Serialize ``model`` as JSON (aliases, ISO datetimes)."""
    return web.Response(
        body=model.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


def endpoint(spec: Spec) -> Callable[[View], Handler]:
    """Wrap ``view`` into an aiohttp handler that authenticates, parses and serializes."""

    def wrap(view: View) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            call = Call(request=request, path=_path(request))
            if spec.auth == "user":
                call.identity = await user_identity(request)
            elif spec.auth == "worker":
                call.claims = job_claims(request, call.path["uid"])
            if spec.query is not None:
                call.query = _parse("query", spec.query, dict(request.query))
            if spec.body is not None:
                call.body = _parse("body", spec.body, await request.read())
            result = await view(call)
            if isinstance(result, web.StreamResponse):
                return result
            if isinstance(result, Reply):
                return json_response(result.model, result.status)
            return json_response(result, spec.status)

        handler.spec = spec  # type: ignore[attr-defined]
        handler.__doc__ = view.__doc__
        handler.__name__ = view.__name__
        return handler

    return wrap


def spec_of(handler: object) -> Spec | None:
    """The :class:`Spec` of an :func:`endpoint` handler; None for other handlers (console pages)."""
    spec = getattr(handler, "spec", None)
    return spec if isinstance(spec, Spec) else None
