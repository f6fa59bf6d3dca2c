"""Console pages: projects, a project's job graph, a job, the queue, and the create-job form.

Views follow the API's layering: authenticate with :func:`user_identity`, read through the
services (which scope every read to the caller's projects), render a Jinja2 template. Errors of
the services (401, 404 for a foreign project) pass to the service's error middleware.
"""

from __future__ import annotations

import asyncio
import http
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from cryokube.processing import jobs as catalog
from markupsafe import Markup
from pydantic import ValidationError

from ..metadata.auth import user_identity
from ..metadata.errors import Forbidden, MetadataError, NotFound
from ..metadata.keys import JOBS, PROJECTS, SETTINGS
from ..metadata.models import (
    TERMINAL,
    EventQuery,
    Job,
    JobCreate,
    JobInput,
    JobQuery,
    JobStatus,
    PageQuery,
    Project,
    Resources,
)
from ..metadata.services.access import Identity
from .figures import UNREADABLE, Figure, FigureCache, StorageOpener, read_job_manifest
from .forms import CSRF_FIELD, csrf_token, csrf_valid, form_fields, params_from_form
from .graph import STATUS_COLOURS, Node, job_graph_svg
from .submit import SUBMITTER, job_resource

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PREFIX = "/console"
ENV = web.AppKey("console_templates", jinja2.Environment)
FIGURES = web.AppKey("console_figures", FigureCache)
STORAGE = web.AppKey("console_storage", StorageOpener)
PAGE_SIZE = 500
LOG_PAGE = 200
"""Events rendered with a job page; the live stream sends every later one from there."""
SECURITY_HEADERS = {
    # Scripts and styles only from our static folder; plots are inline SVG with data: images.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    page = request.app[ENV].get_template(template).render(prefix=PREFIX, **context)
    return web.Response(
        text=page, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


async def _all_jobs(
    request: web.Request, who: Identity, project: str, status: JobStatus | None = None
) -> list[Job]:
    """Every job of ``project`` (newest first), paged through the job service."""
    service, found = request.app[JOBS], list[Job]()
    while True:
        query = JobQuery(limit=PAGE_SIZE, offset=len(found), status=status)
        page = await service.page(who, project, query)
        found.extend(page.items)
        if not page.items or len(found) >= page.total:
            return found


async def _all_projects(request: web.Request, who: Identity) -> list[Project]:
    service, found = request.app[PROJECTS], list[Project]()
    while True:
        page = await service.page(who, PageQuery(limit=PAGE_SIZE, offset=len(found)))
        found.extend(page.items)
        if not page.items or len(found) >= page.total:
            return found


async def projects_page(request: web.Request) -> web.StreamResponse:
    """The caller's projects with members, groups and GPUs in use by running jobs."""
    who = await user_identity(request)
    rows = []
    for project in await _all_projects(request, who):
        running = await _all_jobs(request, who, project.name, JobStatus.RUNNING)
        queued = await request.app[JOBS].page(
            who, project.name, JobQuery(limit=1, status=JobStatus.QUEUED)
        )
        gpus = sum(j.resources.gpus for j in running)
        rows.append(
            {"project": project, "running": len(running), "queued": queued.total, "gpus": gpus}
        )
    return _render(request, "projects.html", who=who, rows=rows)


async def project_page(request: web.Request) -> web.StreamResponse:
    """A project's job graph and job table."""
    who = await user_identity(request)
    project = await request.app[PROJECTS].get(who, request.match_info["project"])
    jobs = await _all_jobs(request, who, project.name)
    oldest_first = jobs[::-1]
    nodes = [
        Node(j.name, f"{PREFIX}/jobs/{j.uid}", j.status.value, j.job_type,
             tuple(i.job for i in j.inputs))
        for j in oldest_first
    ]  # fmt: skip
    return _render(
        request, "project.html", who=who, project=project, jobs=jobs,
        graph=Markup(job_graph_svg(nodes)), colours=STATUS_COLOURS,
    )  # fmt: skip


def _storage_figures(
    opener: StorageOpener, cache: FigureCache, project: Project, job: Job
) -> tuple[list[Figure], str]:
    """Figures from the job's outputs on the project's storage (a folder or S3), or a note
    why there are none."""
    root = project.storage_root
    if root is None:
        return [], "The project records no storage root the console can read."
    try:
        storage = opener.open(root)
        manifest = read_job_manifest(storage, job.name)
    except UNREADABLE as exc:
        log.warning("console: manifest of %s in %s unreadable: %s", job.name, root, exc)
        return [], f"The job's manifest in {root} could not be read: {exc}"
    if manifest is None:
        return [], "No manifest yet: the job has not finished writing its outputs."
    return cache.figures(root, storage, manifest), ""


async def job_page(request: web.Request) -> web.StreamResponse:
    """One job: parameters, inputs, outputs, live log, progress, timing, queue reason, plots."""
    who = await user_identity(request)
    service = request.app[JOBS]
    job = await service.get(who, request.match_info["uid"])
    project = await request.app[PROJECTS].get(who, job.project)
    events = await service.events(who, job.uid, EventQuery(limit=LOG_PAGE))
    outputs = await service.outputs(who, job.uid)
    figures, note = await asyncio.to_thread(
        _storage_figures, request.app[STORAGE], request.app[FIGURES], project, job
    )
    times = sorted(job.status_times.items(), key=lambda kv: kv[1])
    started, finished = job.status_times.get(JobStatus.RUNNING), None
    if job.status in TERMINAL:
        finished = job.status_times.get(job.status)
    duration_s = (finished - started).total_seconds() if started and finished else None
    return _render(
        request, "job.html", who=who, job=job, project=project, events=events,
        outputs=outputs, figures=[(f.title, Markup(f.svg), f.note) for f in figures],
        figures_note=note, times=times, duration_s=duration_s,
        last_seq=events[-1].seq if events else -1, terminal=job.status in TERMINAL,
    )  # fmt: skip


async def queue_page(request: web.Request) -> web.StreamResponse:
    """What runs where and what waits and why, across the caller's projects."""
    who = await user_identity(request)
    running: list[Job] = []
    queued: list[Job] = []
    for project in await _all_projects(request, who):
        running += await _all_jobs(request, who, project.name, JobStatus.RUNNING)
        queued += await _all_jobs(request, who, project.name, JobStatus.QUEUED)
    queued.sort(key=lambda j: j.created_at)
    return _render(request, "queue.html", who=who, running=running, queued=queued)


def _input_choices(jobs: list[Job]) -> dict[str, list[str]]:
    """``job/output`` references of the project's jobs, by the kind of data each output holds."""
    choices: dict[str, list[str]] = {}
    for job in jobs:
        try:
            job_type = catalog.get(job.job_type)
        except catalog.UnknownJobTypeError:
            continue
        for group in job_type.outputs:
            choices.setdefault(group.kind.value, []).append(f"{job.name}/{group.name}")
    return choices


async def _form(
    request: web.Request,
    who: Identity,
    project: Project,
    job_type: str | None,
    *,
    values: Mapping[str, str] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> web.Response:
    jobs = await _all_jobs(request, who, project.name)
    chosen = None
    if job_type:
        try:
            chosen = catalog.get(job_type)
        except catalog.UnknownJobTypeError:
            raise NotFound(f"job type {job_type!r} is not in the catalog") from None
    default_name = f"{job_type.replace('_', '-')}-{len(jobs) + 1}" if job_type else ""
    return _render(
        request, "new_job.html", status=status, who=who, project=project,
        types=catalog.all(), chosen=chosen,
        fields=form_fields(chosen.params) if chosen else [],
        choices=_input_choices(jobs), values=values or {}, errors=errors or [],
        default_name=default_name, csrf_field=CSRF_FIELD,
        csrf=csrf_token(request.app[SETTINGS].token_secret, who.name),
    )  # fmt: skip


async def new_job_page(request: web.Request) -> web.StreamResponse:
    """The create-job form; ``?type=`` picks the job type whose parameters it shows."""
    who = await user_identity(request)
    project = await request.app[PROJECTS].get(who, request.match_info["project"])
    return await _form(request, who, project, request.query.get("type"))


def _same_origin(request: web.Request) -> bool:
    """A browser's ``Origin`` (when sent) must be this host: cross-site form posts are refused."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def create_job(request: web.Request) -> web.StreamResponse:
    """Validate the form against the catalog, then submit the Job resource (303 to the project
    page, where the runner's registration shows it) or, without a submitter, register the job
    directly (303 to its page)."""
    who = await user_identity(request)
    project = await request.app[PROJECTS].get(who, request.match_info["project"])
    posted = await request.post()
    form = {k: v for k, v in posted.items() if isinstance(v, str)}
    secret = request.app[SETTINGS].token_secret
    if not _same_origin(request) or not csrf_valid(secret, who.name, form.get(CSRF_FIELD)):
        raise Forbidden("the form's CSRF token or origin is not valid; reload the form")
    job_type = form.get("job_type", "")
    try:
        chosen = catalog.get(job_type)
    except catalog.UnknownJobTypeError:
        raise NotFound(f"job type {job_type!r} is not in the catalog") from None
    inputs = []
    for slot in chosen.inputs:
        for ref in posted.getall(f"input.{slot.name}", []):
            if isinstance(ref, str) and ref:
                source, _, output = ref.partition("/")
                inputs.append({"job": source, "output": output})
    try:
        params = chosen.params.model_validate(params_from_form(form_fields(chosen.params), form))
        job = JobCreate(
            uid=str(uuid.uuid4()), name=form.get("name", ""), project=project.name,
            job_type=chosen.name, parameters=params.model_dump(mode="json"),
            inputs=[JobInput.model_validate(i) for i in inputs],
            resources=Resources(gpus=1 if chosen.uses_gpu else 0),
        )  # fmt: skip
    except ValidationError as exc:
        errors = [
            f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        return await _form(request, who, project, job_type, values=form, errors=errors, status=422)
    submitter = request.app.get(SUBMITTER)
    if submitter is None:
        created, _ = await request.app[JOBS].register(who, job)
        raise web.HTTPSeeOther(f"{PREFIX}/jobs/{created.uid}")
    resource = job_resource(
        project=project.name, namespace=project.namespace, name=job.name,
        job_type=job.job_type, params=job.parameters,
        inputs=[i.model_dump() for i in job.inputs], submitted_by=who.name,
    )  # fmt: skip
    try:
        await submitter.submit(resource)
    except ValueError as exc:
        return await _form(
            request, who, project, job_type, values=form, errors=[str(exc)], status=422
        )
    raise web.HTTPSeeOther(f"{PREFIX}/projects/{project.name}#job-{job.name}")


def _prefers_html(request: web.Request) -> bool:
    """Whether ``Accept`` ranks ``text/html`` (named, not a wildcard) above JSON, as a browser's
    page load does; API clients (``*/*``, ``application/json``) and ``EventSource`` do not."""
    html_q = json_q = 0.0
    for item in request.headers.get("Accept", "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == "text/html":
            html_q = max(html_q, q)
        elif media in {"application/json", "application/*", "*/*"}:
            json_q = max(json_q, q)
    return html_q > json_q


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Client errors (401, 403, 404, 405...) as an HTML page when the caller is a browser.

    Everyone else, and server errors (5xx, counted and logged by the service's error
    middleware), get the service's JSON problem responses.
    """
    try:
        return await handler(request)
    except MetadataError as exc:
        if not 400 <= exc.status < 500 or not _prefers_html(request):
            raise
        status, message = exc.status, exc.message
    except web.HTTPException as exc:
        if not 400 <= exc.status < 500 or not _prefers_html(request):
            raise
        status, message = exc.status, exc.reason
    return _render(
        request, "error.html", status=status, code=status, who=None,
        title=http.HTTPStatus(status).phrase, message=message,
    )  # fmt: skip


async def index(_request: web.Request) -> web.StreamResponse:
    """``/console`` and ``/console/`` go to the projects page."""
    raise web.HTTPFound(f"{PREFIX}/projects")


def setup_console(app: web.Application) -> None:
    """Add the console's routes and static files to the metadata service ``app``."""
    app[ENV] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[FIGURES] = FigureCache()
    settings = app[SETTINGS]
    app[STORAGE] = StorageOpener(settings.s3_endpoint_url, settings.pvc_mounts)
    app.middlewares.append(html_errors)
    router = app.router
    router.add_get(PREFIX, index, name="console_index")
    router.add_get(f"{PREFIX}/", index, name="console_index_slash")
    router.add_get(f"{PREFIX}/projects", projects_page, name="console_projects")
    router.add_get(f"{PREFIX}/projects/{{project}}", project_page, name="console_project")
    router.add_get(f"{PREFIX}/projects/{{project}}/new", new_job_page, name="console_new_job")
    router.add_post(f"{PREFIX}/projects/{{project}}/jobs", create_job, name="console_create_job")
    router.add_get(f"{PREFIX}/jobs/{{uid}}", job_page, name="console_job")
    router.add_get(f"{PREFIX}/queue", queue_page, name="console_queue")
    router.add_static(f"{PREFIX}/static", HERE / "static", name="console_static")
