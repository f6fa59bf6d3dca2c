"""Prometheus metrics of the operator (served by ``prometheus_client`` when a port is set).

Declared once at import: ``prometheus_client`` registers metrics in a process-wide registry
and refuses duplicates.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECONCILES = Counter(
    "cryokube_operator_reconciles",
    "Job reconcile passes, by the write they decided (none, create, delete) and outcome.",
    ["action", "outcome"],
)
JOBS_WAITING = Gauge(
    "cryokube_operator_jobs_waiting",
    "Jobs waiting for inputs or quota (queue length), by namespace, as last indexed.",
    ["namespace"],
)
GPUS_IN_USE = Gauge(
    "cryokube_operator_gpus_in_use",
    "GPUs held by running or pending children, by namespace and project.",
    ["namespace", "project"],
)
