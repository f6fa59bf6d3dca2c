"""What a job's ``run(ctx)`` sees: parameters, resolved inputs, storage, progress, outputs.

A job reads its inputs through :meth:`JobContext.input_files` / :meth:`JobContext.open_input`
and writes only inside its own folder through :meth:`JobContext.publish`, so a failed job can
never touch its inputs. Per-item checkpoints (:meth:`is_done` / :meth:`mark_done`) let a retried
pod skip what its predecessor finished; long iterative jobs checkpoint their iteration state
(:mod:`cryokube.processing.jobs._checkpoint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryokube.processing.jobs import DataKind, JobParams, JobType
from cryokube.processing.jobs.base import JobInputError
from cryokube.processing.storage import Storage, confine_key
from cryokube.processing.worker.manifest import FileEntry, GroupEntry, JobManifest
from cryokube.processing.worker.reporter import Reporter

if TYPE_CHECKING:
    from cryokube.processing.datasets import Dataset

T = TypeVar("T")

__all__ = ["JobContext", "JobInputError", "ResolvedInput", "scratch_dir"]


@dataclass
class ResolvedInput:
    """An upstream output group connected to one of the job's input slots."""

    slot: str
    job: str
    output: str
    manifest: JobManifest

    @property
    def group(self) -> GroupEntry:
        return self.manifest.outputs[self.output]

    @property
    def output_id(self) -> str:
        return f"{self.manifest.job_uid}/{self.output}"


@dataclass
class JobContext:
    """The runtime handed to a job type's ``run(ctx)``.

    Attributes
    ----------
    job_type : JobType
        The catalog entry.
    params : JobParams
        Validated parameters.
    job, job_uid, project : str
        Identity; ``job`` is also the job's folder inside the project root.
    inputs : dict of str to list of ResolvedInput
        Upstream outputs per input slot.
    storage : Storage
        The project root.
    reporter : Reporter
        Durable progress, logs and images.
    shard_index, shards : int
        This pod's part of a sharded job (``items[shard_index::shards]``).
    device : str
        ``"cpu"`` or ``"gpu"``: where algorithms should put arrays.
    scratch : Path
        A private local folder, removed after the run.
    checkpoint_interval_s : float
        Least time between two iteration checkpoints of a long job (0: after every
        iteration); a retried pod redoes at most this much work plus one iteration. The
        worker sets it from ``CRYOKUBE_CHECKPOINT_INTERVAL_S``.
    """

    job_type: JobType
    params: JobParams
    job: str
    job_uid: str
    project: str
    inputs: dict[str, list[ResolvedInput]]
    storage: Storage
    reporter: Reporter
    scratch: Path
    shard_index: int = 0
    shards: int = 1
    device: str = "cpu"
    checkpoint_interval_s: float = 60.0
    groups: dict[str, GroupEntry] = field(default_factory=dict)

    # -- inputs --------------------------------------------------------------------------
    def input(self, slot: str) -> list[ResolvedInput]:
        """The upstream outputs connected to ``slot`` (validated to exist)."""
        return self.inputs.get(slot, [])

    def load_dataset(self, slot: str) -> Dataset:
        """The dataset connected to ``slot``: every upstream part, concatenated in order."""
        from cryokube.processing.datasets import concatenate, load_cs

        parts = []
        for resolved in self.input(slot):
            for key in resolved.group.datasets:
                with self.open_input(key) as path:
                    parts.append(load_cs(path))
        if not parts:
            raise JobInputError(f"input slot {slot!r} has no dataset")
        return parts[0] if len(parts) == 1 else concatenate(parts)

    def save_dataset(self, dataset: Dataset, relative: str) -> FileEntry:
        """Write ``dataset`` as ``<job>/<relative>`` (.cs) and return its file entry."""
        from cryokube.processing.datasets import save_cs

        local = self.scratch_path(relative)
        save_cs(dataset, local)
        return self.publish(local, relative)

    @contextlib.contextmanager
    def open_input(self, key: str) -> Iterator[Path]:
        """A local path for reading the project file ``key`` (cached for S3)."""
        with self.storage.local_copy(key) as path:
            yield path

    # -- sharding and checkpoints --------------------------------------------------------
    def my_part(self, items: Sequence[T]) -> list[T]:
        """This shard's items: every ``shards``-th one, starting at ``shard_index``."""
        return list(items[self.shard_index :: self.shards])

    def _marker(self, item: str) -> str:
        digest = hashlib.sha256(item.encode()).hexdigest()[:32]
        return f"{self.job}/checkpoints/{digest}"

    def is_done(self, item: str) -> bool:
        """True if a previous attempt finished ``item`` (checkpoint present)."""
        return self.storage.exists(self._marker(item))

    def mark_done(self, item: str) -> None:
        """Record that ``item`` is finished; call after its outputs are published."""
        self.storage.write_bytes(self._marker(item), item.encode())

    def stable_uids(self, names: Sequence[str]) -> Any:
        """Item uids derived from the job uid and each item's name: a retry makes the same."""
        import numpy as np

        return np.array(
            [
                int.from_bytes(hashlib.sha256(f"{self.job_uid}/{n}".encode()).digest()[:8], "big")
                for n in names
            ],
            dtype=np.uint64,
        )

    # -- outputs -------------------------------------------------------------------------
    def key(self, relative: str) -> str:
        """The project key of ``relative`` inside this job's folder."""
        return f"{self.job}/{confine_key(relative)}"

    def publish(self, local_path: Path, relative: str) -> FileEntry:
        """Publish a local file atomically at ``<job>/<relative>`` and return its entry."""
        key = self.key(relative)
        digest = hashlib.sha256()
        size = 0
        with local_path.open("rb") as f:
            while chunk := f.read(8 * 1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        self.storage.put_file(local_path, key)
        return FileEntry(path=key, sha256=digest.hexdigest(), size_bytes=size)

    def scratch_path(self, relative: str) -> Path:
        """A local path under the scratch folder (parents created)."""
        path = self.scratch / confine_key(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_output(
        self,
        name: str,
        *,
        dataset: FileEntry | None = None,
        files: Sequence[FileEntry] = (),
        n_items: int = 0,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Declare output group ``name`` (it must be one of the job type's output groups)."""
        group_def = self.job_type.output_group(name)
        entry = self.groups.setdefault(name, GroupEntry(name=name, kind=DataKind(group_def.kind)))
        if dataset is not None:
            entry.datasets.append(dataset.path)
            entry.files.append(dataset)
        entry.files.extend(files)
        entry.n_items += n_items
        entry.summary.update(summary or {})

    def progress(self, fraction: float, message: str = "") -> None:
        self.reporter.progress(fraction, message)

    def log(self, message: str, *, level: str = "info") -> None:
        self.reporter.log(message, level=level)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private temporary folder for one run."""
    with tempfile.TemporaryDirectory(prefix="cryokube-job-") as tmp:
        yield Path(tmp)
