"""OpenAPI 3.1 document generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .models import ErrorBody
from .views.base import spec_of

TITLE = "CryoKube metadata service"
VERSION = "1"
_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"


def _security(auth: str) -> list[dict[str, list[str]]]:
    if auth == "user":
        return [{"authProxy": []}, {"bearer": []}]
    if auth == "worker":
        return [{"jobToken": []}]
    return []


def build_openapi(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI document of every named route of ``router`` declared with ``@endpoint``.

    Routes of other handlers (the console's HTML pages, static files) are not part of the API.
    """
    declared = [
        (route, spec)
        for route in router.routes()
        if route.name and route.method != "HEAD" and (spec := spec_of(route.handler)) is not None
    ]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for _, spec in declared:
        models += [(m, "validation") for m in (spec.body, spec.query) if m is not None]
        if spec.response is not None:
            models.append((spec.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route, spec in declared:
        path = route.resource.canonical if route.resource else ""
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PARAM.findall(path)
        ]
        if spec.query is not None:
            schema = spec.query.model_json_schema(ref_template=_REF)
            params += [
                {"name": name, "in": "query", "required": False, "schema": prop}
                for name, prop in schema["properties"].items()
            ]
        if spec.response is not None:
            ref = refs[(spec.response, "serialization")]
            content = {spec.content_type: {"schema": ref}}
        else:
            content = {spec.content_type: {"schema": {"type": "string"}}}
        error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
        responses: dict[str, Any] = {
            str(spec.status): {"description": spec.summary, "content": content},
            "default": {"description": "error", "content": error},
        }
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": spec.summary,
            "description": (route.handler.__doc__ or "").strip(),
            "parameters": params,
            "responses": responses,
            "security": _security(spec.auth),
        }
        if spec.body is not None:
            body_ref = refs[(spec.body, "validation")]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_ref}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "authProxy": {"type": "apiKey", "in": "header", "name": "X-Auth-Proxy-Secret"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "jobToken": {"type": "http", "scheme": "bearer", "bearerFormat": "cryokube-job"},
            },
        },
    }
