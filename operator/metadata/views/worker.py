"""Worker RPC views: each authenticated by the job token of the job in the path."""

from __future__ import annotations

from ..keys import METRICS, WORKER
from ..models import (
    Completion,
    EventIn,
    ExposureIn,
    Heartbeat,
    ImageIn,
    Ingested,
    Job,
    OutputIn,
    ProgressReport,
)
from .base import Call, Reply, Result, Spec, endpoint


def _ingested(call: Call, kind: str, created: bool) -> Reply:
    if created:
        call.request.app[METRICS].events_ingested.labels(kind).inc()
    return Reply(Ingested(created=created), 201 if created else 200)


@endpoint(Spec("Worker heartbeat.", auth="worker", body=Heartbeat, response=Job))
async def heartbeat(call: Call) -> Result:
    """The first heartbeat moves a Queued job to Running."""
    return await call.request.app[WORKER].heartbeat(call.job, call.body)


@endpoint(
    Spec("Report progress.", auth="worker", body=ProgressReport, response=Ingested, status=201)
)
async def progress(call: Call) -> Result:
    """201 when new, 200 for a replayed ``seq``."""
    created = await call.request.app[WORKER].progress(call.job, call.body)
    return _ingested(call, "progress", created)


@endpoint(Spec("Append a log event.", auth="worker", body=EventIn, response=Ingested, status=201))
async def event(call: Call) -> Result:
    """201 when new, 200 for a replayed ``seq``."""
    return _ingested(call, "log", await call.request.app[WORKER].event(call.job, call.body))


@endpoint(
    Spec("Attach a preview image.", auth="worker", body=ImageIn, response=Ingested, status=201)
)
async def image(call: Call) -> Result:
    """201 when new, 200 for a replayed ``seq``."""
    return _ingested(call, "image", await call.request.app[WORKER].image(call.job, call.body))


@endpoint(Spec("Register an output.", auth="worker", body=OutputIn, response=Ingested, status=201))
async def output(call: Call) -> Result:
    """201 when new, 200 for an identical replay, 409 for different content under the name."""
    return _ingested(call, "output", await call.request.app[WORKER].output(call.job, call.body))


@endpoint(Spec("Record an exposure's results.", auth="worker", body=ExposureIn, response=Ingested))
async def exposure(call: Call) -> Result:
    """Fields sent are merged into the exposure's record; fields left out keep their values."""
    await call.request.app[WORKER].exposure(call.job, call.body)
    return Ingested(created=True)


@endpoint(Spec("Finish the job.", auth="worker", body=Completion, response=Job))
async def complete(call: Call) -> Result:
    """Succeeded or Failed; replaying the same outcome is a no-op."""
    return await call.request.app[WORKER].complete(call.job, call.body)
