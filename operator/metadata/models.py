"""Pydantic models: the single source of the API's request and response schemas.

The OpenAPI document (:mod:`.openapi`) is generated from these classes. Request models forbid
unknown fields so that a typo is a 422 naming the field, not a silently ignored key.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
"""A DNS-1123 label: project names, output names."""

Uid = Annotated[str, Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$", max_length=128)]
"""A job's UID (the Kubernetes UID of its Job resource)."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

OutputName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$")]
"""An output group's name as the job catalog declares it (``micrographs``, ``class_averages``)."""

T = TypeVar("T")


class Request(BaseModel):
    """Base of request bodies: unknown fields are errors, and so are infinities and NaN."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


INT64 = 2**63
MAX_DEPTH = 20


def _storable(value: Any, path: str, depth: int = 0) -> None:
    """Raise ValueError naming ``path`` when ``value`` cannot be stored as a BSON document."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key or key.startswith("$"):
                raise ValueError(f"{path}: key {key!r} may not start with '$' or contain NUL")
            _storable(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _storable(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        raise ValueError(f"{path}: integer {value} does not fit in 64 bits")


def _check_document(value: dict[str, Any]) -> dict[str, Any]:
    _storable(value, "value")
    return value


Document = Annotated[dict[str, Any], AfterValidator(_check_document)]


def _check_relative(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise ValueError("must be a relative POSIX path without backslashes or NUL")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("must not contain empty, '.' or '..' segments")
    return path


RelativePath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_relative)]
"""A path inside the project's storage root: readers join it to the root, so no escaping it."""


def _check_base64(text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not valid base64: {exc}") from None
    return text


Base64Text = Annotated[str, AfterValidator(_check_base64)]
"""Free-form JSON object that MongoDB can store (keys without '$' or NUL, 64-bit integers)."""


class Response(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(extra="ignore")


class Role(StrEnum):
    """A user's role: admins see every project, members only their own."""

    ADMIN = "admin"
    MEMBER = "member"


class JobStatus(StrEnum):
    """Job states; each transition is stamped once in ``status_times``."""

    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Page(Response, Generic[T]):
    """One page of a list: ``items`` from ``offset``, ``total`` matching the filter."""

    items: list[T]
    total: int = Field(ge=0)
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)


class PageQuery(Request):
    """Pagination: ``limit`` items starting at ``offset``."""

    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=1_000_000)


# Projects -----------------------------------------------------------------------------------


class ProjectCreate(Request):
    """A project and who may use it (user names or proxy groups)."""

    name: Name
    display_name: str = Field(default="", max_length=200)
    members: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )
    groups: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    storage_root: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "The project's storage root (an absolute path, s3://bucket/prefix or "
            "pvc://<namespace>/<claim>/<subPath>), where the "
            "console reads outputs."
        ),
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description="Kubernetes namespace of the Project resource, where the console creates Jobs.",
    )


class Project(Response):
    """A stored project."""

    name: str
    display_name: str
    members: list[str]
    groups: list[str]
    created_at: datetime
    storage_root: str | None = None
    namespace: str | None = None


# Jobs ---------------------------------------------------------------------------------------


class Resources(Request):
    """What one job asks for."""

    gpus: int = Field(default=0, ge=0, le=64)
    cpus: float = Field(default=1.0, gt=0, le=1024)
    memory_MiB: int = Field(default=1024, ge=1, le=16 * 1024 * 1024)


class JobInput(Request):
    """An edge of the job graph: output group ``output`` of job ``job`` (a name) is an input."""

    job: Name
    output: OutputName


class JobCreate(Request):
    """Registration of a job by the operator (or the local runner)."""

    uid: Uid
    name: Name
    project: Name
    job_type: str = Field(min_length=1, max_length=100)
    lane: str = Field(default="default", min_length=1, max_length=63)
    resources: Resources = Field(default_factory=Resources)
    parameters: Document = Field(default_factory=dict)
    inputs: list[JobInput] = Field(default_factory=list, max_length=100)


class JobUpdate(Request):
    """The operator's view of scheduling: status, why it is queued, where it runs."""

    status: JobStatus | None = None
    queue_reason: str | None = Field(default=None, max_length=500)
    node: str | None = Field(default=None, max_length=253)
    attempts: int | None = Field(default=None, ge=0, le=1000)
    message: str | None = Field(default=None, max_length=2000)


class Job(Response):
    """A stored job with its scheduling record and latest progress."""

    uid: str
    name: str
    project: str
    job_type: str
    lane: str
    resources: Resources
    parameters: dict[str, Any]
    inputs: list[JobInput] = Field(default_factory=list)
    status: JobStatus
    status_times: dict[JobStatus, datetime]
    queue_reason: str | None
    node: str | None
    attempts: int
    message: str | None
    heartbeat_at: datetime | None
    progress: float = Field(ge=0.0, le=1.0)
    progress_message: str
    created_at: datetime
    updated_at: datetime


class JobQuery(PageQuery):
    """Filters of the job list."""

    status: JobStatus | None = None
    job_type: str | None = Field(default=None, max_length=100)
    lane: str | None = Field(default=None, max_length=63)


# Worker RPC ---------------------------------------------------------------------------------


class Heartbeat(Request):
    """A worker is alive, on ``node``."""

    node: str | None = Field(default=None, max_length=253)


class ProgressReport(Request):
    """Fraction done, with a short human message."""

    seq: int = Field(ge=0, description="The worker's event sequence number (idempotency key).")
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = Field(default="", max_length=2000)


class EventKind(StrEnum):
    """What a job event carries."""

    LOG = "log"
    PROGRESS = "progress"
    IMAGE = "image"


class EventIn(Request):
    """One job event from a worker; ``seq`` orders the job's events and makes replays no-ops."""

    seq: int = Field(ge=0, le=2**53)
    kind: Literal[EventKind.LOG] = EventKind.LOG
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str = Field(max_length=20_000)


class ImageIn(Request):
    """A small preview image (PNG or JPEG, base64) attached to a job as an event."""

    seq: int = Field(ge=0, le=2**53)
    name: str = Field(min_length=1, max_length=200)
    content_type: Literal["image/png", "image/jpeg"]
    data_base64: Base64Text = Field(max_length=2 * 1024 * 1024)


class Event(Response):
    """A stored job event."""

    job: str
    seq: int
    kind: EventKind
    time: datetime
    level: str | None = None
    message: str | None = None
    fraction: float | None = None
    image_name: str | None = None
    content_type: str | None = None
    data_base64: str | None = None


class EventQuery(Request):
    """Events after ``after_seq`` (exclusive), oldest first."""

    after_seq: int = Field(default=-1, ge=-1)
    limit: int = Field(default=200, ge=1, le=1000)


class Ingested(Response):
    """Answer to a worker write: ``created`` is False when it was a replay."""

    created: bool


class OutputFile(Request):
    """A file in an output dataset, relative to the project's storage root."""

    path: RelativePath
    sha256: Sha256
    size_bytes: int = Field(ge=0)


class OutputIn(Request):
    """A dataset manifest a job produced, with the outputs it was made from (lineage)."""

    name: OutputName
    kind: str = Field(min_length=1, max_length=100, description="e.g. micrographs, particles")
    files: list[OutputFile] = Field(min_length=1, max_length=100_000)
    parents: list[str] = Field(default_factory=list, max_length=100, description="output ids")


class Output(Response):
    """A stored output; ``id`` is ``<job uid>/<name>``."""

    id: str
    job: str
    project: str
    name: str
    kind: str
    files: list[OutputFile]
    parents: list[str]
    created_at: datetime


class Completion(Request):
    """The worker's last word: success or failure, with a message."""

    succeeded: bool
    message: str = Field(default="", max_length=2000)


class ExposureIn(Request):
    """Per-exposure results for streaming and curation (motion and CTF)."""

    name: str = Field(min_length=1, max_length=500)
    movie_path: str = Field(min_length=1, max_length=1024)
    drift_total_px: float | None = Field(default=None, ge=0)
    defocus_u_A: float | None = Field(default=None, ge=0)
    defocus_v_A: float | None = Field(default=None, ge=0)
    astigmatism_angle_deg: float | None = Field(default=None, ge=-360, le=360)
    ctf_fit_resolution_A: float | None = Field(default=None, gt=0)
    accepted: bool | None = None


class Exposure(Response):
    """A stored exposure record of a project."""

    project: str
    name: str
    job: str
    movie_path: str
    drift_total_px: float | None
    defocus_u_A: float | None
    defocus_v_A: float | None
    astigmatism_angle_deg: float | None
    ctf_fit_resolution_A: float | None
    accepted: bool | None
    updated_at: datetime


class ExposureQuery(PageQuery):
    """Filters of the exposure list."""

    accepted: bool | None = None


# Users --------------------------------------------------------------------------------------


class User(Response):
    """The caller as the service sees it."""

    name: str
    email: str | None
    groups: list[str]
    role: Role


class ApiTokenCreate(Request):
    """A new personal API token for the CLI."""

    ttl_days: int = Field(default=30, ge=1, le=365)


class ApiToken(Response):
    """A newly minted API token, shown once."""

    token: str
    expires_at: datetime


class ErrorBody(Response):
    """Every error response: a CamelCase reason, a message, and for 422 the failing fields."""

    error: str
    message: str
    fields: list[dict[str, str]] | None = None


class Health(Response):
    """Liveness or readiness."""

    status: Literal["ok", "unavailable"]
