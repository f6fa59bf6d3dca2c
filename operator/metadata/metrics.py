"""Prometheus metrics of one app instance (its own registry, so tests can build many apps).

Labels carry route names and statuses only, never project names or user names, so ``/metrics``
can stay unauthenticated.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Request counts and latencies by route, events ingested by kind, store outages."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cryokube_metadata_requests",
            "HTTP requests by route name, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency_s = Histogram(
            "cryokube_metadata_request_duration_seconds",
            "HTTP request latency by route name, seconds.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.events_ingested = Counter(
            "cryokube_metadata_events_ingested",
            "Worker events stored (replays excluded) by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "cryokube_metadata_store_unavailable",
            "Requests answered 503 because MongoDB did not answer.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
