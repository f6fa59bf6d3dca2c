"""kopf handlers: one module per kind (``projects``, ``jobs``) plus ``startup``.

Importing this package registers every handler in kopf's default registry. In a cluster the
operator runs as ``python -m cryokube.operator.handlers`` (settings from the environment, see
:class:`OperatorConfig`); :func:`run` starts the same handlers in an event loop of the caller's
(tests, the workstation CLI).
"""

from __future__ import annotations

import asyncio
import threading

import kopf

from . import jobs, projects, startup
from .startup import OperatorConfig

__all__ = ["OperatorConfig", "jobs", "projects", "run", "startup"]


async def run(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set.

    Parameters
    ----------
    config : OperatorConfig
        Where the API server is, the metadata service, the metrics port, the namespaces served
        (``watch_namespaces``; empty: the whole cluster).
    stop_flag : asyncio.Event or threading.Event, optional
        Set it to stop the operator gracefully (a ``threading.Event`` from another thread);
        without one, SIGTERM or SIGINT stops it (main thread only).
    ready_flag : asyncio.Event or threading.Event, optional
        Set by kopf once the watches are started.

    Notes
    -----
    On exit kopf cancels every task of the loop created after it started (kopf's
    ``run_tasks``), so a host that shares the loop loses its own later tasks; tests and
    benchmarks therefore run the operator in its own thread and event loop.
    """
    await kopf.operator(
        registry=kopf.get_default_registry(),
        # One replica (Deployment strategy Recreate): peering would only add API traffic.
        standalone=True,
        clusterwide=not config.watch_namespaces,
        namespaces=config.watch_namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(config=config),
    )
