"""Generate the Helm chart's ``values.schema.json`` from the comments in ``values.yaml``.

Every key in ``values.yaml`` must carry a description: the ``#`` comment lines directly above it
(``##`` lines are section headers and are skipped). A comment line ``# @schema {...}`` adds JSON
Schema keywords to that key, for example ``{"enum": ["pvc", "s3"]}`` or, for a free-form map,
``{"additionalProperties": {"type": "string"}}``. Types come from the default values. Every
mapping without an ``additionalProperties`` annotation is closed (``additionalProperties:
false``), so ``helm lint``/``install`` reject misspelt keys. Follows cert-manager's generated
values schema.

Usage::

    python scripts/gen_values_schema.py            # rewrite charts/cryokube/values.schema.json
    python scripts/gen_values_schema.py --check    # exit 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "cryokube"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./-]+):(?:\s|$)")
SCHEMA_TAG = "@schema"

Path_ = tuple[str, ...]


class ValuesDocError(ValueError):
    """``values.yaml`` is not documented the way the generator needs."""


def read_comments(text: str) -> dict[Path_, tuple[str, dict[str, Any]]]:
    """Map each mapping key's path to its description and ``@schema`` keywords.

    Parameters
    ----------
    text : str
        The content of ``values.yaml`` (block-style mappings, two-space indents).

    Returns
    -------
    dict
        ``{("operator", "image", "tag"): ("Image tag; ...", {...}), ...}``. Keys inside list
        items are not included: their list's ``@schema`` annotation describes them.

    Raises
    ------
    ValuesDocError
        If an ``@schema`` annotation is not a JSON object; the message names the line.
    """
    found: dict[Path_, tuple[str, dict[str, Any]]] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    keywords: dict[str, Any] = {}
    list_indent: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("##"):
            comment, keywords = [], {}
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith(SCHEMA_TAG):
                try:
                    extra = json.loads(body[len(SCHEMA_TAG) :])
                except json.JSONDecodeError as exc:
                    raise ValuesDocError(
                        f"values.yaml line {number}: bad @schema JSON: {exc}"
                    ) from exc
                if not isinstance(extra, dict):
                    raise ValuesDocError(f"values.yaml line {number}: @schema must be an object")
                keywords.update(extra)
            else:
                comment.append(body)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if list_indent is not None and indent >= list_indent:
            continue
        list_indent = None
        if stripped.startswith("-"):
            list_indent = indent
            continue
        match = KEY_LINE.match(line)
        if match is None:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        found[tuple(key for _, key in stack)] = (" ".join(comment), keywords)
        comment, keywords = [], {}
    return found


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    raise TypeError(f"values.yaml holds an unsupported value type {type(value).__name__}")


def schema_for(
    value: Any, path: Path_, docs: dict[Path_, tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """JSON Schema of one value, recursing into closed mappings.

    Parameters
    ----------
    value : object
        The default value loaded from ``values.yaml``.
    path : tuple of str
        Keys leading to ``value`` (empty for the root).
    docs : dict
        Output of :func:`read_comments`.

    Raises
    ------
    ValuesDocError
        If a key has no description; the message names the key's dotted path.
    """
    node: dict[str, Any] = {}
    keywords: dict[str, Any] = {}
    if path:
        if path not in docs or not docs[path][0]:
            raise ValuesDocError(f"values.yaml key {'.'.join(path)!r} has no description comment")
        description, keywords = docs[path]
        node["description"] = description
    node["type"] = _type_of(value)
    if isinstance(value, dict) and "additionalProperties" not in keywords:
        node["properties"] = {
            key: schema_for(item, (*path, key), docs) for key, item in value.items()
        }
        node["additionalProperties"] = False
    elif isinstance(value, list) and value and "items" not in keywords:
        node["items"] = {"type": _type_of(value[0])}
    node.update(keywords)
    return node


def generate(values_path: Path) -> str:
    """Return the schema document for ``values_path`` as formatted JSON text."""
    text = values_path.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValuesDocError(f"{values_path} must hold a mapping at the top level")
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "CryoKube Helm chart values (generated by scripts/gen_values_schema.py)",
        **schema_for(values, (), read_comments(text)),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_atomically(path: Path, content: str) -> None:
    """Replace ``path`` with ``content`` in one rename, so readers never see half a file."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        handle.write(content)
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=CHART, help="chart folder")
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    target = args.chart / "values.schema.json"
    content = generate(args.chart / "values.yaml")
    if args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            print(f"{target} is stale: run scripts/gen_values_schema.py", file=sys.stderr)
            return 1
        return 0
    write_atomically(target, content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
