"""Run one job (or one shard of it): resolve inputs, run, publish the manifest, report.

Exit codes (the operator's ``podFailurePolicy`` relies on them):

* ``0``: success, or the job had already finished (a retry never runs it twice);
* ``2`` (:data:`EXIT_BAD_INPUT`): bad parameters, missing or wrong-kind inputs, unreadable
  files, paths outside the project: retrying cannot help;
* ``1`` (:data:`EXIT_TRANSIENT`): anything else (out of memory, storage or service trouble):
  the pod may be retried, and resumes from its checkpoints and its report spool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from pathlib import Path

from cryokube.processing import backend
from cryokube.processing.io.errors import InputFileError
from cryokube.processing.jobs import JobParams
from cryokube.processing.storage import (
    LocalCache,
    PosixStorage,
    S3Storage,
    Storage,
    StorageError,
    StoragePathError,
)
from cryokube.processing.storage.s3 import S3_SCHEME, make_client, split_s3_root
from cryokube.processing.worker.context import JobContext, JobInputError, ResolvedInput, scratch_dir
from cryokube.processing.worker.manifest import MANIFEST_NAME, FileEntry, JobManifest, merge_shards
from cryokube.processing.worker.reporter import PermanentReportError, Reporter
from cryokube.processing.worker.settings import SettingsError, WorkerSettings
from pydantic import ValidationError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_BAD_INPUT = 2
BAD_INPUT_ERRORS = (
    SettingsError,
    JobInputError,
    InputFileError,
    StoragePathError,
    ValidationError,
)
HEARTBEAT_INTERVAL_S = 30.0
FLUSH_TIMEOUT_S = 120.0


def open_storage(settings: WorkerSettings) -> Storage:
    """The project root named by ``CRYOKUBE_STORAGE_ROOT`` (a folder or ``s3://bucket/prefix``)."""
    root = settings.storage_root
    if root.startswith(S3_SCHEME):
        bucket, prefix = split_s3_root(root)
        cache = (
            LocalCache(settings.cache_dir, quota_bytes=settings.cache_quota_bytes)
            if settings.cache_dir
            else None
        )
        client = make_client(endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        return S3Storage(client, bucket, prefix, cache=cache)
    return PosixStorage(Path(root))


def read_manifest(storage: Storage, key: str) -> JobManifest | None:
    if not storage.exists(key):
        return None
    return JobManifest.model_validate_json(storage.read_bytes(key))


def resolve_inputs(settings: WorkerSettings, storage: Storage) -> dict[str, list[ResolvedInput]]:
    """Connect ``spec.inputs`` to the job type's slots, checking existence and kinds."""
    job_type = settings.job_type_def
    resolved: dict[str, list[ResolvedInput]] = {}
    for index, ref in enumerate(settings.inputs):
        where = f"inputs[{index}] ({ref.job}/{ref.output})"
        manifest = read_manifest(storage, f"{ref.job}/{MANIFEST_NAME}")
        if manifest is None:
            raise JobInputError(f"{where}: job {ref.job!r} has not finished (no {MANIFEST_NAME})")
        if ref.output not in manifest.outputs:
            known = ", ".join(manifest.outputs) or "none"
            raise JobInputError(f"{where}: job {ref.job!r} has no output {ref.output!r} ({known})")
        kind = manifest.outputs[ref.output].kind
        if ref.slot is not None:
            slot = job_type.input_slot(ref.slot)
        else:
            # The slot is the one that takes this kind of data (as the operator's gate checks).
            candidates = [s for s in job_type.inputs if s.kind == kind] or list(job_type.inputs)
            if len(candidates) > 1:
                candidates = [s for s in candidates if s.name == ref.output] or candidates
            if len(candidates) != 1:
                names = ", ".join(s.name for s in candidates) or "none"
                raise JobInputError(
                    f"{where}: job type {job_type.name!r} has no single input slot for "
                    f"{kind.value} ({names}); name one with 'slot'"
                )
            slot = candidates[0]
        if kind != slot.kind:
            raise JobInputError(
                f"{where}: output is {kind.value} but slot {slot.name!r} takes {slot.kind.value}"
            )
        if resolved.get(slot.name) and not slot.multiple:
            raise JobInputError(f"{where}: slot {slot.name!r} takes a single input")
        resolved.setdefault(slot.name, []).append(
            ResolvedInput(slot=slot.name, job=ref.job, output=ref.output, manifest=manifest)
        )
    for slot in job_type.inputs:
        if slot.required and slot.name not in resolved:
            raise JobInputError(f"inputs: required slot {slot.name!r} ({slot.kind.value}) is empty")
    return resolved


def select_device(requested: str) -> str:
    """``gpu`` when requested or when ``auto`` finds one, else ``cpu``."""
    if requested == "gpu" and not backend.gpu_available():
        raise SettingsError("CRYOKUBE_DEVICE=gpu but no CUDA device is visible to CuPy")
    if requested == "auto":
        return "gpu" if backend.gpu_available() else "cpu"
    return requested


def _heartbeat_loop(reporter: Reporter, stop: threading.Event) -> None:
    node = os.environ.get("NODE_NAME") or socket.gethostname()
    while not stop.is_set():
        reporter.heartbeat(node)
        stop.wait(HEARTBEAT_INTERVAL_S)


def _finish(reporter: Reporter, code: int, message: str) -> int:
    reporter.report("complete", {"succeeded": code == EXIT_OK, "message": message[:2000]})
    try:
        delivered = reporter.flush(FLUSH_TIMEOUT_S)
    except PermanentReportError as exc:
        log.error("%s", exc)
        return code if code != EXIT_OK else EXIT_TRANSIENT
    finally:
        reporter.close()
    if not delivered and code == EXIT_OK:
        log.error("metadata service unreachable: reports stay spooled for the retried pod")
        return EXIT_TRANSIENT
    return code


def run_worker(settings: WorkerSettings) -> int:
    """Run the job described by ``settings``; return the process exit code."""
    storage = open_storage(settings)
    job = settings.job
    shard_dir = f"{job}/shards/{settings.shard_index}" if settings.shards > 1 else job
    spool = _spool_dir(storage, settings)
    reporter = Reporter(
        spool, url=settings.metadata_url, job_uid=settings.job_uid, token=settings.job_token
    )
    stop = threading.Event()
    threading.Thread(target=_heartbeat_loop, args=(reporter, stop), daemon=True).start()
    try:
        existing = read_manifest(storage, f"{shard_dir}/{MANIFEST_NAME}")
        if existing is not None and existing.job_uid == settings.job_uid:
            reporter.log("outputs already complete from an earlier attempt; not running again")
            _maybe_merge(storage, settings)
            return _finish(reporter, EXIT_OK, "already complete")
        code, message = _run(settings, storage, reporter, shard_dir)
        return _finish(reporter, code, message)
    finally:
        stop.set()


def _spool_dir(storage: Storage, settings: WorkerSettings) -> Path:
    """The report spool: in the job folder on a POSIX root (survives the pod), else local."""
    name = f"reports-{settings.shard_index}"
    if isinstance(storage, PosixStorage):
        return storage.path(f"{settings.job}/.cryokube/{name}")
    base = settings.cache_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    return base / "cryokube-reports" / settings.job_uid / name


def _run(
    settings: WorkerSettings, storage: Storage, reporter: Reporter, shard_dir: str
) -> tuple[int, str]:
    job_type = settings.job_type_def
    try:
        params: JobParams = job_type.params.model_validate(settings.params)
        inputs = resolve_inputs(settings, storage)
        if job_type.run is None:
            raise SettingsError(f"job type {job_type.name!r} has no worker implementation yet")
        device = select_device(settings.device)
    except BAD_INPUT_ERRORS as exc:
        message = _describe(exc, prefix="CRYOKUBE_PARAMS")
        reporter.log(message, level="error")
        return EXIT_BAD_INPUT, message
    reporter.log(f"{job_type.name}: shard {settings.shard_index + 1}/{settings.shards} on {device}")
    with scratch_dir() as scratch:
        ctx = JobContext(
            job_type=job_type,
            params=params,
            job=settings.job,
            job_uid=settings.job_uid,
            project=settings.project,
            inputs=inputs,
            storage=storage,
            reporter=reporter,
            scratch=scratch,
            shard_index=settings.shard_index,
            shards=settings.shards,
            device=device,
            checkpoint_interval_s=settings.checkpoint_interval_s,
        )
        try:
            job_type.run(ctx)
        except BAD_INPUT_ERRORS as exc:
            message = _describe(exc)
            reporter.log(message, level="error")
            return EXIT_BAD_INPUT, message
        except (StorageError, OSError, MemoryError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            reporter.log(message, level="error")
            return EXIT_TRANSIENT, message
    manifest = JobManifest(
        project=settings.project,
        job=settings.job,
        job_uid=settings.job_uid,
        job_type=job_type.name,
        params=params.model_dump(mode="json"),
        inputs=settings.inputs,
        parents=sorted({r.output_id for rs in inputs.values() for r in rs}),
        outputs=ctx.groups,
        shards=settings.shards,
    )
    _write_manifest(storage, f"{shard_dir}/{MANIFEST_NAME}", manifest)
    merged = _maybe_merge(storage, settings)
    if merged is not None:
        final, manifest_file = merged
        for group in final.outputs.values():
            files = [*group.files, manifest_file]
            reporter.report(
                "outputs",
                {
                    "name": group.name,
                    "kind": group.kind.value,
                    "files": [f.model_dump() for f in files],
                    "parents": final.parents,
                },
            )
    reporter.progress(1.0, "done")
    return EXIT_OK, "succeeded"


def _write_manifest(storage: Storage, key: str, manifest: JobManifest) -> FileEntry:
    data = manifest.model_dump_json(indent=2).encode()
    storage.write_bytes(key, data)
    return FileEntry(path=key, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _maybe_merge(
    storage: Storage, settings: WorkerSettings
) -> tuple[JobManifest, FileEntry] | None:
    """The job's manifest and its file entry, once every shard has finished.

    With shards, the last shard to finish writes the merged manifest; two shards finishing
    together write the same content, atomically, so the result is the same.
    """
    final_key = f"{settings.job}/{MANIFEST_NAME}"
    if settings.shards == 1:
        data = storage.read_bytes(final_key)
        entry = FileEntry(
            path=final_key, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
        )
        return JobManifest.model_validate_json(data), entry
    parts = []
    for index in range(settings.shards):
        part = read_manifest(storage, f"{settings.job}/shards/{index}/{MANIFEST_NAME}")
        if part is None or part.job_uid != settings.job_uid:
            return None
        parts.append(part)
    merged = merge_shards(parts)
    return merged, _write_manifest(storage, final_key, merged)


def _describe(exc: Exception, *, prefix: str = "") -> str:
    """A one-line message naming the field or file, for a ValidationError or any error."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{prefix}.{loc}: {first['msg']}" if prefix else f"{loc}: {first['msg']}"
    return str(exc)
