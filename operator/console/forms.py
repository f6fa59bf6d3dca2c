"""The create-job form, generated from the job catalog's parameter models.

Each parameter's JSON schema (type, default, bounds, ``unit``, description) becomes one HTML
input; the submitted strings go back through the same pydantic model, so the form and the API
accept exactly the same values. CSRF tokens are stateless: an HMAC of the user's name under the
service's token secret, checked on every POST together with the ``Origin`` header.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryokube.processing.jobs import JobParams

CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"cryokube-console-csrf:"


@dataclass(frozen=True)
class FormField:
    """One parameter input: HTML type, bounds (inclusive unless marked), default, unit, help."""

    name: str
    kind: str
    default: Any
    unit: str
    description: str
    required: bool
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()

    @property
    def step(self) -> str:
        """The ``step`` of a number input: 1 for integers, any for floats."""
        return "1" if self.kind == "integer" else "any"


def _resolve(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property schema with ``$ref`` and ``anyOf [X, null]`` unwrapped; and if None is OK."""
    merged = dict(prop)
    nullable = False
    if "anyOf" in merged:
        options = [o for o in merged.pop("anyOf") if o.get("type") != "null"]
        nullable = len(options) == 1
        merged.update(options[0] if options else {})
    if "$ref" in merged:
        merged.update(defs[merged.pop("$ref").rsplit("/", 1)[-1]])
    return merged, nullable


def form_fields(model: type[JobParams]) -> list[FormField]:
    """One :class:`FormField` per parameter of ``model``, in declaration order."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    fields = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _resolve(raw, defs)
        kind = "enum" if "enum" in prop else str(prop.get("type", "string"))
        minimum = prop.get("minimum", prop.get("exclusiveMinimum"))
        maximum = prop.get("maximum", prop.get("exclusiveMaximum"))
        fields.append(
            FormField(
                name=name,
                kind=kind,
                default=prop.get("default", raw.get("default")),
                unit=str(raw.get("unit", prop.get("unit", ""))),
                description=str(raw.get("description", prop.get("description", ""))),
                required=name in required and not nullable,
                minimum=minimum,
                maximum=maximum,
                exclusive_minimum="exclusiveMinimum" in prop,
                exclusive_maximum="exclusiveMaximum" in prop,
                choices=tuple(str(c) for c in prop.get("enum", ())),
            )
        )
    return fields


def params_from_form(fields: list[FormField], form: Mapping[str, str]) -> dict[str, Any]:
    """The submitted parameter values (``param.<name>`` keys) for the pydantic model.

    Empty inputs are left out so the model's default applies; an unchecked checkbox is False.
    """
    values: dict[str, Any] = {}
    for field in fields:
        raw = form.get(f"param.{field.name}")
        if field.kind == "boolean":
            values[field.name] = raw is not None
        elif raw is not None and raw.strip() != "":
            values[field.name] = raw.strip()
    return values


def csrf_token(secret: str, user: str) -> str:
    """The CSRF token of ``user``'s forms (HMAC-SHA256 under the service's token secret)."""
    return hmac.new(secret.encode(), _CSRF_CONTEXT + user.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: str, user: str, sent: str | None) -> bool:
    """Whether ``sent`` is ``user``'s CSRF token (constant-time comparison)."""
    return sent is not None and hmac.compare_digest(sent, csrf_token(secret, user))
