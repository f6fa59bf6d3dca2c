"""Job views for the console, the CLI and the operator, including the event stream (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web
from pydantic import RootModel

from ..errors import MetadataError
from ..keys import HUB, JOBS, SETTINGS, SHUTDOWN
from ..models import (
    TERMINAL,
    Event,
    EventQuery,
    Exposure,
    ExposureQuery,
    Job,
    JobCreate,
    JobQuery,
    JobUpdate,
    Output,
    Page,
)
from .base import Call, Reply, Result, Spec, endpoint

log = logging.getLogger(__name__)


class EventList(RootModel[list[Event]]):
    """Events in sequence order."""


class OutputList(RootModel[list[Output]]):
    """Outputs by name."""


@endpoint(Spec("Register a job.", auth="user", body=JobCreate, response=Job, status=201))
async def register_job(call: Call) -> Result:
    """201 when created, 200 when the same UID was already registered for this job."""
    job, created = await call.request.app[JOBS].register(call.user, call.body)
    return Reply(job, 201 if created else 200)


@endpoint(Spec("A project's jobs.", auth="user", query=JobQuery, response=Page[Job]))
async def list_jobs(call: Call) -> Result:
    """Newest first; filter by status, job type and lane."""
    return await call.request.app[JOBS].page(call.user, call.path["project"], call.query)


@endpoint(Spec("One job.", auth="user", response=Job))
async def get_job(call: Call) -> Result:
    """Status, status history, scheduling record and latest progress."""
    return await call.request.app[JOBS].get(call.user, call.path["uid"])


@endpoint(Spec("Update scheduling state (operator).", auth="user", body=JobUpdate, response=Job))
async def update_job(call: Call) -> Result:
    """Status transitions follow the job state machine; 409 otherwise."""
    return await call.request.app[JOBS].update(call.user, call.path["uid"], call.body)


@endpoint(Spec("Cancel a job.", auth="user", response=Job))
async def cancel_job(call: Call) -> Result:
    """Members of the job's project may cancel it before it finishes."""
    return await call.request.app[JOBS].cancel(call.user, call.path["uid"])


@endpoint(Spec("A job's events.", auth="user", query=EventQuery, response=EventList))
async def list_events(call: Call) -> Result:
    """Events after ``after_seq``, in sequence order."""
    events = await call.request.app[JOBS].events(call.user, call.path["uid"], call.query)
    return EventList(events)


@endpoint(Spec("A job's outputs.", auth="user", response=OutputList))
async def list_outputs(call: Call) -> Result:
    """Dataset manifests with checksums and parents."""
    return OutputList(await call.request.app[JOBS].outputs(call.user, call.path["uid"]))


@endpoint(Spec("A project's exposures.", auth="user", query=ExposureQuery, response=Page[Exposure]))
async def list_exposures(call: Call) -> Result:
    """Per-exposure motion and CTF results by name, optionally only (not) accepted ones."""
    return await call.request.app[JOBS].exposures(call.user, call.path["project"], call.query)


@endpoint(
    Spec(
        "Server-sent events of a job.",
        auth="user",
        query=EventQuery,
        content_type="text/event-stream",
    )
)
async def stream_events(call: Call) -> Result:
    """One SSE message per event (``id`` = seq, ``event`` = kind); ends after a finished job.

    A reconnecting client's ``Last-Event-ID`` header resumes after that sequence number.
    """
    app = call.request.app
    jobs, hub = app[JOBS], app[HUB]
    uid = call.path["uid"]
    job = await jobs.get(call.user, uid)
    last = call.query.after_seq
    header = call.request.headers.get("Last-Event-ID", "")
    if header.lstrip("-").isdigit():
        last = max(last, int(header))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.headers["Cache-Control"] = "no-store"
    flag = hub.subscribe(uid)
    try:
        await response.prepare(call.request)
        await _stream(call, response, flag, job, last)
    except ConnectionResetError:
        log.debug("event stream of %s: client went away", uid)
    except MetadataError as exc:
        # Headers are sent: report the failure in-band; the client reconnects with Last-Event-ID.
        await response.write(
            f"event: error\ndata: {json.dumps({'error': exc.reason})}\n\n".encode()
        )
    finally:
        hub.unsubscribe(uid, flag)
    return response


async def _stream(
    call: Call, response: web.StreamResponse, flag: asyncio.Event, job: Job, last: int
) -> None:
    """Write events after ``last`` as they arrive until the job has finished and is drained."""
    app = call.request.app
    jobs, settings, uid = app[JOBS], app[SETTINGS], call.path["uid"]
    while not app[SHUTDOWN].is_set():
        flag.clear()
        query = EventQuery(after_seq=last, limit=call.query.limit)
        events = await jobs.events(call.user, uid, query)
        for event in events:
            data = event.model_dump_json(exclude_none=True)
            await response.write(f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode())
            last = event.seq
        if events:
            continue
        if job.status in TERMINAL:
            await response.write(b"event: end\ndata: {}\n\n")
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flag.wait(), settings.sse_keepalive_s)
        if not flag.is_set():
            await response.write(b": keepalive\n\n")
        job = await jobs.get(call.user, uid)
