"""Project and Job resources as JSON files under ``<state>/resources/<namespace>/<kind>/``.

``apply`` validates a manifest the way the operator does (a Job's params against the catalog)
and refuses an invalid one with the field named, so nothing invalid is stored. Specs are
replaced, statuses kept; ``metadata.generation`` counts spec changes and ``metadata.uid`` is
assigned once, as the API server does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cryokube.operator.models import (
    API_VERSION,
    InvalidSpecError,
    JobResource,
    ProjectResource,
    parse_job,
    parse_project,
)

KINDS = ("Project", "Job")


class ManifestError(ValueError):
    """A manifest file or document that cannot be applied (names the file and the field)."""


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read every YAML document of ``paths`` (files, or folders of ``*.yaml``), in order."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = (
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
        for file in files:
            try:
                docs = list(yaml.safe_load_all(file.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise ManifestError(f"{file}: {exc}") from None
            for index, doc in enumerate(docs):
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise ManifestError(f"{file}: document {index} is not a mapping")
                if doc.get("apiVersion") != API_VERSION or doc.get("kind") not in KINDS:
                    raise ManifestError(
                        f"{file}: document {index}: expected apiVersion {API_VERSION} and kind "
                        f"Project or Job, got {doc.get('apiVersion')!r} {doc.get('kind')!r}"
                    )
                documents.append({**doc, "_source": f"{file}#{index}"})
    return documents


class ResourceStore:
    """The local runner's resources, one JSON file each, written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "resources"
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write cycles of the CLI and a running ``cryokube up``."""
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def _path(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / namespace / kind.lower() / f"{name}.json"

    def _write(self, path: Path, body: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        path = self._path(kind, namespace, name)
        try:
            body: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return body

    def list(self, kind: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        pattern = f"{namespace or '*'}/{kind.lower()}/*.json"
        for path in sorted(self.root.glob(pattern)):
            yield json.loads(path.read_text())

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        """Validate and store one manifest; return the stored body."""
        source = document.get("_source", "manifest")
        body = {k: v for k, v in document.items() if k != "_source"}
        body.setdefault("metadata", {}).setdefault("namespace", "default")
        try:
            model: ProjectResource | JobResource = (
                parse_project(body) if body["kind"] == "Project" else parse_job(body)
            )
        except InvalidSpecError as exc:
            raise ManifestError(
                f"{source}: {body['kind']} {body['metadata'].get('name')}: {exc}"
            ) from None
        meta = model.metadata
        with self.locked():
            return self._apply(body, meta.namespace, meta.name, model, source)

    def _apply(
        self,
        body: dict[str, Any],
        namespace: str,
        name: str,
        model: ProjectResource | JobResource,
        source: str,
    ) -> dict[str, Any]:
        old = self.get(body["kind"], namespace, name)
        spec = model.model_dump(by_alias=True, exclude_none=True, mode="json")["spec"]
        path = spec.get("storage", {}).get("path")
        if path is not None and not Path(path).is_absolute():
            # Like kustomize: a relative storage path is relative to the manifest's folder.
            base = Path(source.rsplit("#", 1)[0]).parent if "#" in source else Path.cwd()
            spec["storage"]["path"] = str((base / path).resolve())
        if old is None:
            stored = {
                "apiVersion": API_VERSION,
                "kind": body["kind"],
                "metadata": {
                    **body["metadata"],
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "creationTimestamp": dt.datetime.now(dt.UTC).isoformat(),
                },
                "spec": spec,
                "status": {},
            }
        else:
            stored = {**old, "spec": spec}
            if old["spec"] != spec:
                stored["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._write(self._path(body["kind"], namespace, name), stored)
        return stored

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self.locked():
            body = self.get(kind, namespace, name)
            if body is None:
                return
            body["status"] = status
            self._write(self._path(kind, namespace, name), body)

    def patch_spec(self, kind: str, namespace: str, name: str, changes: dict[str, Any]) -> None:
        with self.locked():
            body = self.get(kind, namespace, name)
            if body is None:
                raise ManifestError(f"{kind} {namespace}/{name} not found")
            body["spec"] = {**body["spec"], **changes}
            body["metadata"]["generation"] = body["metadata"].get("generation", 1) + 1
            self._write(self._path(kind, namespace, name), body)
