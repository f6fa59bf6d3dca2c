"""The one error middleware (domain errors and validation to JSON) and the metrics middleware."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import MetadataError, StoreUnavailable
from .keys import METRICS
from .views.base import RequestInvalid

log = logging.getLogger(__name__)


def error_body(status: int, reason: str, message: str, **extra: object) -> web.Response:
    """``{"error": reason, "message": message, ...}`` with ``status``."""
    return web.json_response({"error": reason, "message": message, **extra}, status=status)


def _invalid(exc: RequestInvalid) -> web.Response:
    errors = exc.error.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return error_body(400, "MalformedJson", f"{exc.where}: not valid JSON")
    fields = [
        {"loc": ".".join([exc.where, *(str(p) for p in e["loc"])]), "message": e["msg"]}
        for e in errors
    ]
    first = fields[0]
    return error_body(422, "ValidationFailed", f"{first['loc']}: {first['message']}", fields=fields)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a JSON error; an unexpected exception is a logged 500."""
    try:
        return await handler(request)
    except RequestInvalid as exc:
        return _invalid(exc)
    except StoreUnavailable as exc:
        request.app[METRICS].store_unavailable.inc()
        response = error_body(exc.status, exc.reason, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except MetadataError as exc:
        return error_body(exc.status, exc.reason, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = (exc.reason or "Error").title().replace(" ", "")
        return error_body(exc.status, reason, exc.text or exc.reason or "")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_body(500, "InternalError", "internal error (logged)")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests and time them, labelled by route name (never by path values)."""
    started = time.perf_counter()
    route = request.match_info.route.name or "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency_s.labels(route).observe(time.perf_counter() - started)
