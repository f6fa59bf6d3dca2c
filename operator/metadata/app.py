"""The application factory: settings in, a wired ``web.Application`` out.

Lifetimes are ``cleanup_ctx`` context managers, entered in order and left in reverse: the
embedded server (when no ``MONGODB_URI``), the Mongo client with migrations and indexes, and the
change-feed task that wakes event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..console import setup_console, setup_kubernetes_submitter
from .embedded import EmbeddedMongo
from .keys import HUB, JOBS, METRICS, PROJECTS, REPOS, SETTINGS, SHUTDOWN, WORKER
from .metrics import Metrics
from .middlewares import errors_middleware, metrics_middleware
from .repositories import Repositories
from .repositories.base import RetryPolicy, Store
from .repositories.changefeed import open_change_feed
from .routes import setup_routes
from .services.events import EventHub
from .services.jobs import JobService
from .services.projects import ProjectService
from .services.worker import WorkerService
from .settings import Settings

log = logging.getLogger(__name__)
_MONGO_URI = web.AppKey("mongo_uri", str)


async def _embedded_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start nx-27017 when no MongoDB URI is configured; stop it at teardown."""
    settings = app[SETTINGS]
    if settings.mongodb_uri is not None:
        app[_MONGO_URI] = settings.mongodb_uri
        yield
        return
    if settings.embedded_data_dir is None:
        raise ValueError("embedded_data_dir: set it (or mongodb_uri) to give MongoDB a home")
    server = EmbeddedMongo(settings.embedded_data_dir, settings.embedded_port)
    await server.start()
    app[_MONGO_URI] = server.uri
    try:
        yield
    finally:
        await server.stop()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the client, migrate and ensure indexes, wire the services; close at teardown."""
    settings = app[SETTINGS]
    store = Store(
        app[_MONGO_URI],
        settings.database,
        retry=RetryPolicy(
            settings.store_attempts, settings.store_backoff_s, settings.retry_after_s
        ),
        server_selection_timeout_ms=settings.server_selection_timeout_ms,
    )
    repos = Repositories.on(store)
    try:
        await repos.prepare()
        app[REPOS] = repos
        app[PROJECTS] = ProjectService(repos)
        app[JOBS] = JobService(repos)
        app[WORKER] = WorkerService(repos)
        yield
    finally:
        await store.close()


async def _follow_events(app: web.Application) -> None:
    """Feed the hub from the events change feed; reopen with backoff when the store fails."""
    repos, settings = app[REPOS], app[SETTINGS]
    stop = app[SHUTDOWN]
    delay_s = settings.poll_interval_s
    while not stop.is_set():
        try:
            feed = await open_change_feed(
                repos.store,
                "events",
                order_field="time_ms",
                poll_interval_s=settings.poll_interval_s,
            )
            await app[HUB].run(feed, repos.feed_state, stop=stop)
        except Exception:
            log.warning("event change feed stopped; reopening in %.1f s", delay_s, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
        delay_s = min(2 * delay_s, 30.0)


async def _feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the change-feed task; at teardown ask it to stop, cancel it only if it lingers."""
    task = asyncio.create_task(_follow_events(app), name="metadata-event-feed")
    try:
        yield
    finally:
        app[SHUTDOWN].set()
        grace_s = (
            2 * app[SETTINGS].poll_interval_s + 2 * app[SETTINGS].server_selection_timeout_ms / 1000
        )
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTDOWN].set()


def create_app(settings: Settings) -> web.Application:
    """Build the metadata service for ``settings`` (nothing runs until the app starts)."""
    app = web.Application(
        client_max_size=settings.client_max_size_bytes,
        middlewares=[metrics_middleware, errors_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[HUB] = EventHub()
    app[SHUTDOWN] = asyncio.Event()
    setup_routes(app)
    setup_console(app)
    if settings.job_submitter == "kubernetes":
        setup_kubernetes_submitter(app, settings.kube_host)
    app.cleanup_ctx.extend([_embedded_ctx, _store_ctx, _feed_ctx])
    app.on_shutdown.append(_on_shutdown)
    return app
