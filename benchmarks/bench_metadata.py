"""Metadata service under load: worker-event ingestion and job-list queries, embedded store.

The service runs as in ``cryokube up``: ``create_app`` with no MongoDB URI, so it starts and
supervises its own nx-27017 process, served over loopback HTTP by aiohttp in this process. The
clients are concurrent coroutines in the same process (the machine has 2 cores, shared by the
server, nx-27017 and the clients). The reference ("limit") for each figure is the raw PyMongo rate
of the equivalent database work at the same concurrency on the same nx-27017, measured in the
same run: ``insert_one`` of an event document, and ``find`` + ``count_documents`` of one job-list
page. ``ratio_to_limit`` = raw rate / service rate (1.0 would mean HTTP, auth, validation and
serialization cost nothing; 3 means the service delivers a third of the raw store rate).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import harness
from aiohttp import web
from pymongo import AsyncMongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from cryokube.operator.metadata.app import create_app
from support.metadata_app import OPERATOR, make_settings, user, worker
from support.servers import free_port

CONCURRENCY = 8
EVENTS_PER_WORKER = 250
N_LIST_JOBS = 200
LIST_QUERIES_PER_CLIENT = 40
LIST_PAGE = 50


def _percentile_ms(samples_s: list[float], q: float) -> float:
    ordered = sorted(samples_s)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _concurrently(
    n: int, per_client: int, op: Callable[[int, int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run ``op(client, i)`` ``per_client`` times in each of ``n`` clients; wall s, latencies."""
    latencies: list[float] = []

    async def client(c: int) -> None:
        for i in range(per_client):
            t0 = time.perf_counter()
            await op(c, i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(n)))
    return time.perf_counter() - t0, latencies


async def _run(data_dir: Path) -> list[harness.Record]:
    port = free_port()
    settings = make_settings(
        None,
        "cryokube",
        embedded_data_dir=data_dir,
        embedded_port=port,
        client_max_size_bytes=1024 * 1024,
        server_selection_timeout_ms=5000,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true"
    )
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    session = aiohttp.ClientSession(connector=connector)
    try:
        return await _measure(session, base, raw)
    finally:
        await session.close()
        await raw.close()
        await runner.cleanup()


async def _post(session: aiohttp.ClientSession, url: str, body: Any, headers: Any) -> None:
    async with session.post(url, json=body, headers=headers) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"POST {url} -> {resp.status} {await resp.text()}")


async def _measure(
    session: aiohttp.ClientSession, base: str, raw: AsyncMongoClient[dict[str, Any]]
) -> list[harness.Record]:
    await _post(session, f"{base}/api/v1/projects", {"name": "bench", "members": ["mia"]}, OPERATOR)
    for c in range(CONCURRENCY):
        job = {"uid": f"w{c}", "name": f"w{c}", "project": "bench", "job_type": "motion"}
        await _post(session, f"{base}/api/v1/jobs", job, OPERATOR)
    tokens = [worker("bench", f"w{c}", ttl_s=3600) for c in range(CONCURRENCY)]
    message = "frame 0001: drift 0.42 px, dose 1.25 e/A^2"

    # Limit: the raw store rate for the same documents at the same concurrency.
    scratch = raw["cryokube"]["bench_raw_events"]

    async def raw_insert(c: int, i: int) -> None:
        await scratch.insert_one(
            {"_id": f"w{c}/{i}", "job": f"w{c}", "seq": i, "kind": "log", "message": message}
        )

    raw_wall_s, _ = await _concurrently(CONCURRENCY, EVENTS_PER_WORKER, raw_insert)

    async def ingest(c: int, i: int) -> None:
        url = f"{base}/rpc/v1/jobs/w{c}/events"
        await _post(session, url, {"seq": i, "message": message}, tokens[c])

    wall_s, lat = await _concurrently(CONCURRENCY, EVENTS_PER_WORKER, ingest)
    n_events = CONCURRENCY * EVENTS_PER_WORKER
    ours = n_events / wall_s
    limit = n_events / raw_wall_s
    records = [
        harness.Record(
            f"metadata/event_ingest_{CONCURRENCY}_workers",
            ours,
            "events/s",
            ratio_to_limit=limit / ours,
            limit=f"raw PyMongo insert_one, {CONCURRENCY} concurrent, same nx-27017 ({limit:.0f}/s)",
            notes=f"{n_events} log events over HTTP with job tokens; embedded nx-27017",
            extra={
                "p50_ms": _percentile_ms(lat, 0.50),
                "p99_ms": _percentile_ms(lat, 0.99),
                "mean_ms": 1000 * statistics.fmean(lat),
            },
        )
    ]

    for j in range(N_LIST_JOBS):
        job = {"uid": f"l{j}", "name": f"l{j}", "project": "bench", "job_type": "ctf"}
        await _post(session, f"{base}/api/v1/jobs", job, OPERATOR)
    jobs = raw["cryokube"]["jobs"]
    query = {"project": "bench"}

    async def raw_list(_c: int, _i: int) -> None:
        await jobs.find(query).sort([("created_at_ms", -1), ("_id", 1)]).limit(LIST_PAGE).to_list()
        await jobs.count_documents(query)

    raw_wall_s, _ = await _concurrently(CONCURRENCY, LIST_QUERIES_PER_CLIENT, raw_list)
    headers = user("mia")

    async def list_jobs(_c: int, i: int) -> None:
        url = f"{base}/api/v1/projects/bench/jobs"
        params = {"limit": str(LIST_PAGE), "offset": str((i * LIST_PAGE) % N_LIST_JOBS)}
        async with session.get(url, params=params, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url} -> {resp.status}")
            await resp.read()

    wall_s, lat = await _concurrently(CONCURRENCY, LIST_QUERIES_PER_CLIENT, list_jobs)
    n_queries = CONCURRENCY * LIST_QUERIES_PER_CLIENT
    ours = n_queries / wall_s
    limit = n_queries / raw_wall_s
    records.append(
        harness.Record(
            f"metadata/job_list_{CONCURRENCY}_clients",
            ours,
            "queries/s",
            ratio_to_limit=limit / ours,
            limit=f"raw PyMongo find+count, {CONCURRENCY} concurrent, same nx-27017 ({limit:.0f}/s)",
            notes=f"pages of {LIST_PAGE} of {N_LIST_JOBS + CONCURRENCY} jobs, member auth via proxy",
            extra={
                "p50_ms": _percentile_ms(lat, 0.50),
                "p99_ms": _percentile_ms(lat, 0.99),
                "mean_ms": 1000 * statistics.fmean(lat),
            },
        )
    )
    return records


@harness.benchmark("metadata")
def metadata_service(machine: dict[str, float]) -> list[harness.Record]:
    del machine  # no hardware roofline applies; the limit is the raw store rate
    with tempfile.TemporaryDirectory(prefix="bench-metadata-") as tmp:
        return asyncio.run(_run(Path(tmp)))
