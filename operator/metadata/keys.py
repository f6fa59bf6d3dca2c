"""Typed application keys: every app-scoped object of the metadata service, declared once."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .metrics import Metrics
from .repositories import Repositories
from .services.events import EventHub
from .services.jobs import JobService
from .services.projects import ProjectService
from .services.worker import WorkerService
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
REPOS = web.AppKey("repos", Repositories)
HUB = web.AppKey("hub", EventHub)
PROJECTS = web.AppKey("projects", ProjectService)
JOBS = web.AppKey("jobs", JobService)
WORKER = web.AppKey("worker", WorkerService)
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
"""Set when the app is shutting down, so long-lived streams end promptly."""
