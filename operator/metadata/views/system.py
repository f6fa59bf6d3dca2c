"""Unauthenticated endpoints: liveness, readiness, metrics and the OpenAPI document.

None of them reveals project data.
"""

from __future__ import annotations

from aiohttp import web

from ..keys import METRICS, REPOS
from ..metrics import CONTENT_TYPE
from ..models import Health
from .base import Call, Reply, Result, Spec, endpoint


@endpoint(Spec("The process is alive.", auth="none", response=Health))
async def healthz(call: Call) -> Result:  # noqa: ARG001 (every view takes the call)
    """Always ``ok`` while the event loop answers."""
    return Health(status="ok")


@endpoint(Spec("MongoDB answers; ready for traffic.", auth="none", response=Health))
async def readyz(call: Call) -> Result:
    """``ok`` when one ping to MongoDB succeeds, else 503 ``unavailable``."""
    if await call.request.app[REPOS].store.ping():
        return Health(status="ok")
    return Reply(Health(status="unavailable"), 503)


@endpoint(Spec("Prometheus metrics.", auth="none", content_type=CONTENT_TYPE))
async def metrics(call: Call) -> Result:
    """Request counts and latencies by route, events ingested by kind."""
    body = call.request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@endpoint(Spec("This API's OpenAPI 3.1 document.", auth="none"))
async def openapi(call: Call) -> Result:
    """The document generated from the route table and the pydantic models."""
    from ..openapi import build_openapi

    return web.json_response(build_openapi(call.request.app.router))
