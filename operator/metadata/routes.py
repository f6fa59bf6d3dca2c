"""The route table: method, path, name and view of every endpoint (also the OpenAPI order)."""

from __future__ import annotations

from aiohttp import web

from .auth import local_login
from .keys import SETTINGS
from .views import jobs, projects, system, worker
from .views.base import Handler

API = "/api/v1"
RPC = "/rpc/v1/jobs/{uid}"

ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", "/healthz", "healthz", system.healthz),
    ("GET", "/readyz", "readyz", system.readyz),
    ("GET", "/metrics", "metrics", system.metrics),
    ("GET", "/openapi.json", "openapi", system.openapi),
    ("GET", f"{API}/me", "me", projects.me),
    ("POST", f"{API}/tokens", "create_api_token", projects.create_api_token),
    ("GET", f"{API}/projects", "list_projects", projects.list_projects),
    ("POST", f"{API}/projects", "create_project", projects.create_project),
    ("GET", f"{API}/projects/{{project}}", "get_project", projects.get_project),
    ("GET", f"{API}/projects/{{project}}/jobs", "list_jobs", jobs.list_jobs),
    ("GET", f"{API}/projects/{{project}}/exposures", "list_exposures", jobs.list_exposures),
    ("POST", f"{API}/jobs", "register_job", jobs.register_job),
    ("GET", f"{API}/jobs/{{uid}}", "get_job", jobs.get_job),
    ("PATCH", f"{API}/jobs/{{uid}}", "update_job", jobs.update_job),
    ("POST", f"{API}/jobs/{{uid}}/cancel", "cancel_job", jobs.cancel_job),
    ("GET", f"{API}/jobs/{{uid}}/events", "list_events", jobs.list_events),
    ("GET", f"{API}/jobs/{{uid}}/events/stream", "stream_events", jobs.stream_events),
    ("GET", f"{API}/jobs/{{uid}}/outputs", "list_outputs", jobs.list_outputs),
    ("POST", f"{RPC}/heartbeat", "rpc_heartbeat", worker.heartbeat),
    ("POST", f"{RPC}/progress", "rpc_progress", worker.progress),
    ("POST", f"{RPC}/events", "rpc_event", worker.event),
    ("POST", f"{RPC}/images", "rpc_image", worker.image),
    ("POST", f"{RPC}/outputs", "rpc_output", worker.output),
    ("POST", f"{RPC}/exposures", "rpc_exposure", worker.exposure),
    ("POST", f"{RPC}/complete", "rpc_complete", worker.complete),
)


def setup_routes(app: web.Application) -> None:
    """Add every route of :data:`ROUTES` to ``app``'s router, named."""
    for method, path, name, handler in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    if app[SETTINGS].local_login_token is not None:
        app.router.add_get("/login", local_login, name="local_login")
