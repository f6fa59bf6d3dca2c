"""Iteration checkpoints of the long jobs (2D classification, ab-initio, refinement).

A retried pod resumes. After an iteration the job hands its algorithm's state (a frozen
dataclass of arrays, numbers, lists and the generator state:
:class:`~cryokube.processing.algorithms.class2d.Class2DState`,
:class:`~cryokube.processing.algorithms.abinitio.AbInitioState`,
:class:`~cryokube.processing.algorithms.refine.RefinementState`) to :meth:`Checkpoint.after`,
which reports progress and, at most every :attr:`JobContext.checkpoint_interval_s
<cryokube.processing.worker.context.JobContext.checkpoint_interval_s>`, saves the state as one
``.npz`` file, :data:`CHECKPOINT_NAME` in the job's folder, published atomically (temporary
name, then rename). The file carries a fingerprint of the job type, the parameters and the
upstream manifests. :meth:`Checkpoint.start` resumes from it only when the fingerprint matches
and the file reads back whole; otherwise it logs why and the job starts over. The job removes
the file once its outputs are published; it is never part of an output group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
import zipfile
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from cryokube.processing.storage.base import StorageError

if TYPE_CHECKING:
    from cryokube.processing.worker.context import JobContext

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "job_fingerprint"]

CHECKPOINT_NAME = "checkpoints/iteration.npz"
"""The checkpoint file, relative to the job's folder."""

FORMAT_VERSION = 1
"""Bumped when the file layout changes: an older checkpoint is then ignored."""

_META = "__checkpoint__"


class IterationState(Protocol):
    """A frozen dataclass whose ``iteration`` counts the iterations completed."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def iteration(self) -> int: ...


S = TypeVar("S", bound=IterationState)


def job_fingerprint(ctx: JobContext) -> str:
    """SHA-256 of the job type, its parameters and the manifests of its upstream outputs.

    Two attempts of a job share it exactly when they would compute the same thing; a changed
    parameter or a re-run upstream job (new files, new checksums) changes it.
    """
    content = {
        "job_type": ctx.job_type.name,
        "params": ctx.params.model_dump(mode="json"),
        "inputs": {
            slot: [
                {"output": r.output, "manifest": r.manifest.model_dump(mode="json")}
                for r in resolved
            ]
            for slot, resolved in sorted(ctx.inputs.items())
        },
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class Checkpoint(Generic[S]):
    """Resume, progress and periodic saving of one job's iteration state.

    Parameters
    ----------
    ctx : JobContext
        The running job.
    state_type : type
        The algorithm's state dataclass.
    n_iterations : int
        Iterations of the whole run; the state after iteration ``k`` reports progress
        ``start + (end - start) k / n_iterations``.
    progress_range : tuple of float, optional
        Progress fractions ``(start, end)`` of the iterations.
    """

    def __init__(
        self,
        ctx: JobContext,
        state_type: type[S],
        *,
        n_iterations: int,
        progress_range: tuple[float, float] = (0.1, 0.9),
    ) -> None:
        self.ctx = ctx
        self.state_type = state_type
        self.n_iterations = n_iterations
        self.progress_range = progress_range
        self.key = ctx.key(CHECKPOINT_NAME)
        self.fingerprint = job_fingerprint(ctx)
        self._saved_at = time.monotonic()

    def fraction(self, iteration: int) -> float:
        """Progress fraction after ``iteration`` iterations."""
        start, end = self.progress_range
        return start + (end - start) * iteration / self.n_iterations

    def start(self, message: str) -> S | None:
        """The state to resume from, or None; reports progress where the run starts.

        First removes what a predecessor killed while saving left behind (a temporary file
        beside the checkpoint, or an incomplete multipart upload); where that fails (an S3
        policy without ``s3:ListBucketMultipartUploads``), it logs a warning and goes on.
        """
        try:
            self.ctx.storage.discard_partial(self.key)
        except StorageError as error:
            self.ctx.log(f"left an interrupted save in place: {error}", level="warning")
        state = self.load()
        self._saved_at = time.monotonic()
        if state is None:
            self.ctx.progress(self.fraction(0), message)
            return None
        done = f"{state.iteration}/{self.n_iterations}"
        self.ctx.log(f"resuming after iteration {done} from the checkpoint {self.key}")
        self.ctx.progress(self.fraction(state.iteration), f"{message}: resumed after {done}")
        return state

    def after(self, state: S) -> None:
        """``on_iteration`` hook: save ``state`` if the interval has passed, report progress.

        The state is saved before the progress report, so a report of iteration ``k`` means
        that a checkpoint of iteration ``k`` or later exists (with a zero interval: exactly
        ``k``).
        """
        if time.monotonic() - self._saved_at >= self.ctx.checkpoint_interval_s:
            self.save(state)
        self.ctx.progress(
            self.fraction(state.iteration), f"iteration {state.iteration}/{self.n_iterations}"
        )

    def save(self, state: S) -> None:
        """Write ``state`` atomically as the job's checkpoint (arrays copied to the host)."""
        from cryokube.processing.backend import to_host

        arrays: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for field in dataclasses.fields(state):
            value = getattr(state, field.name)
            if value is None or isinstance(value, int | float | str | list | dict):
                values[field.name] = value
            else:
                arrays[field.name] = np.asarray(to_host(value))
        meta = {
            "format": FORMAT_VERSION,
            "state": self.state_type.__name__,
            "fingerprint": self.fingerprint,
            "values": values,
        }
        arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        local = self.ctx.scratch_path(CHECKPOINT_NAME)
        with local.open("wb") as f:
            np.savez(f, **arrays)
        self.ctx.storage.put_file(local, self.key)
        local.unlink()
        self._saved_at = time.monotonic()

    def load(self) -> S | None:
        """The saved state if it belongs to this job and reads back whole; else None (logged).

        Storage errors propagate (the pod is retried); a file that does not parse, was written
        for other parameters or inputs, or by another format version is ignored.
        """
        if not self.ctx.storage.exists(self.key):
            return None
        data = self.ctx.storage.read_bytes(self.key)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(npz[_META].tobytes())
                arrays = {name: npz[name] for name in npz.files if name != _META}
            if meta.get("format") != FORMAT_VERSION or meta.get("state") != (
                self.state_type.__name__
            ):
                reason = "it was written by another version"
            elif meta.get("fingerprint") != self.fingerprint:
                reason = "the parameters or inputs changed since it was written"
            else:
                state = self.state_type(**meta["values"], **arrays)
                if 0 < state.iteration < self.n_iterations:
                    return state
                reason = f"iteration {state.iteration} is outside 1..{self.n_iterations - 1}"
        except (ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as e:
            reason = f"it is unreadable ({type(e).__name__}: {e})"
        self.ctx.log(
            f"ignoring the checkpoint {self.key}: {reason}; starting over", level="warning"
        )
        return None

    def remove(self) -> None:
        """Delete the checkpoint (call once the outputs are published)."""
        self.ctx.storage.delete(self.key)
