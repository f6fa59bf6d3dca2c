"""Render the CustomResourceDefinitions in ``crds/`` from the pydantic models.

The models in :mod:`cryokube.operator.models` are the single source of the CRDs; a golden test
(``tests/test_operator_crds.py``) fails when the committed YAML differs from this rendering.
Regenerate with ``PYTHONSAFEPATH=1 .venv/bin/python -m cryokube.operator.crdgen crds``.

The schema is structural (Kubernetes requires it for ``apiextensions.k8s.io/v1``): ``$ref``
inlined, ``anyOf [X, null]`` collapsed to ``X`` with ``nullable``, pydantic's ``title`` keys
dropped. ``spec.params`` keeps ``x-kubernetes-preserve-unknown-fields``: it is the deliberate
escape hatch that the operator validates against the job catalog.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .models import GROUP, VERSION, JobSpec, ProjectSpec, ResourceStatus

_KEEP = (
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "format",
)


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 schema node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} structurally")
        node = structural(branches[0], defs)
        node["nullable"] = True
        if "description" in schema:
            node["description"] = schema["description"]
        return node
    out = {k: schema[k] for k in _KEEP if k in schema}
    if "properties" in schema:
        out["type"] = "object"
        out["properties"] = {
            name: structural(sub, defs) for name, sub in schema["properties"].items()
        }
        required = [r for r in schema.get("required", []) if r in schema["properties"]]
        if required:
            out["required"] = required
    elif schema.get("type") == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in schema:
        out["items"] = structural(schema["items"], defs)
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def render_crd(
    model: type[BaseModel],
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    """Build one CRD for ``model`` (the spec model) with status, columns and names."""
    spec = _schema(model)
    status = _schema(ResourceStatus)
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["cryokube"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _ready(json_path_field: str) -> str:
    return f'.status.conditions[?(@.type=="Ready")].{json_path_field}'


def render_all() -> dict[str, dict[str, Any]]:
    """Return ``{file name: CRD}`` for every CryoKube resource."""
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    phase = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
    reason = {"name": "Reason", "type": "string", "jsonPath": _ready("reason"), "priority": 1}
    return {
        "cryokube.io_projects.yaml": render_crd(
            ProjectSpec,
            kind="Project",
            plural="projects",
            short_names=["cproj"],
            description="A cryo-EM project: storage, members, UNIX ids and GPU quota.",
            columns=[
                {"name": "Ready", "type": "string", "jsonPath": _ready("status")},
                phase,
                {"name": "GPU Quota", "type": "integer", "jsonPath": ".spec.gpuQuota"},
                reason,
                age,
            ],
        ),
        "cryokube.io_jobs.yaml": render_crd(
            JobSpec,
            kind="Job",
            plural="jobs",
            short_names=["cjob"],
            description="One processing step of a Project, run as worker pods.",
            columns=[
                {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
                phase,
                {"name": "Progress", "type": "integer", "jsonPath": ".status.progressPercent"},
                {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
                reason,
                age,
            ],
        ),
    }


def dump(crd: dict[str, Any]) -> str:
    """Serialise a CRD as YAML the way the committed files are written."""
    header = "# Generated by cryokube.operator.crdgen from cryokube.operator.models; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """Write every CRD into the given folder (default ``crds``)."""
    parser = argparse.ArgumentParser(prog="crdgen", description=__doc__)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("crds"))
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, crd in render_all().items():
        target = args.folder / name
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(dump(crd))
        tmp.replace(target)  # atomic: a reader never sees half a CRD
    return 0


if __name__ == "__main__":
    sys.exit(main())
