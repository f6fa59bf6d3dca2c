"""The manifest a job writes last into its folder: what it produced, from what, with checksums.

Its presence is what "the job's outputs exist" means: downstream jobs resolve their inputs from
it, and a retried worker that finds it for its own job uid does not run the job again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryokube.processing.jobs import DataKind
from cryokube.processing.worker.settings import InputRef
from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"


class FileEntry(BaseModel):
    """A file of an output group, relative to the project root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class GroupEntry(BaseModel):
    """One output group: its dataset part files (one per shard) and the data files they index."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: DataKind
    datasets: list[str] = Field(default_factory=list, description="dataset (.cs) parts, in order")
    files: list[FileEntry] = Field(default_factory=list)
    n_items: int = Field(default=0, ge=0)
    summary: dict[str, Any] = Field(default_factory=dict, description="key results for people")


class JobManifest(BaseModel):
    """The manifest of a finished job (or, under ``shards/<i>/``, of one finished shard)."""

    model_config = ConfigDict(extra="forbid")

    project: str
    job: str
    job_uid: str
    job_type: str
    params: dict[str, Any]
    inputs: list[InputRef]
    parents: list[str] = Field(default_factory=list, description="upstream output ids")
    outputs: dict[str, GroupEntry]
    shards: int = 1
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def merge_shards(parts: list[JobManifest]) -> JobManifest:
    """Join shard manifests (ordered by shard index) into the job's manifest."""
    if not parts:
        raise ValueError("merge_shards needs at least one shard manifest")
    first = parts[0]
    outputs: dict[str, GroupEntry] = {}
    for part in parts:
        for name, group in part.outputs.items():
            merged = outputs.setdefault(name, GroupEntry(name=name, kind=group.kind))
            merged.datasets.extend(group.datasets)
            merged.files.extend(group.files)
            merged.n_items += group.n_items
    for name, merged in outputs.items():
        summaries = [p.outputs[name].summary for p in parts if name in p.outputs]
        # Key results are not additive in general (a mean drift, a defocus range): one shard's
        # summary stands as is, several are kept side by side.
        merged.summary = summaries[0] if len(summaries) == 1 else {"shards": summaries}
    return first.model_copy(
        update={"outputs": outputs, "shards": len(parts), "finished_at": datetime.now(UTC)}
    )
