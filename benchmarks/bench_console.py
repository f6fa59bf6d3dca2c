"""Console page render time with 1,000 jobs in one project, embedded store.

The service runs as in ``cryokube up`` (``create_app`` with its own nx-27017), served over
loopback HTTP in this process. The project holds 1,000 jobs in a branching graph (each job reads
one or two earlier jobs' outputs), a tenth of them running and the rest queued. Each page is
fetched by one client, best of several. The reference ("limit") measured in the same run is the
JSON API reading the same 1,000 jobs (two pages of 500): ``ratio_to_limit`` = page time / API
time says what the console adds over fetching its data (graph layout, SVG, templates; 1.0 would
be free). A job page with plots (picks on a 4096^2 float32 micrograph) is timed on its first view
(against one read of the micrograph at the measured memory bandwidth) and cached.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import harness
import numpy as np
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from cryokube.operator.console.graph import Node, job_graph_svg
from cryokube.operator.metadata.app import create_app
from cryokube.processing.io import write_mrc
from support.console_data import write_pipeline
from support.metadata_app import OPERATOR, admin, make_settings, user
from support.servers import free_port

N_JOBS = 1000
CONCURRENCY = 8
REPEAT = 5
MIC_PX = 4096


async def _best_s(fetch: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Best wall time of ``REPEAT`` calls after a warm-up, and the response size in bytes."""
    size = await fetch()
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        size = await fetch()
        best = min(best, time.perf_counter() - t0)
    return best, size


def _inputs(i: int) -> list[dict[str, str]]:
    if i == 0:
        return []
    parents = {(i - 1) // 2, max(0, i - 3)}
    return [{"job": f"job-{p:04d}", "output": "micrographs"} for p in sorted(parents)]


def _big_pipeline(root: Path) -> int:
    """The test pipeline's outputs with a 4096^2 float32 micrograph under the picks; its bytes."""
    write_pipeline(root)
    image = np.random.default_rng(0).normal(size=(MIC_PX, MIC_PX)).astype(np.float32)
    write_mrc(root / "motion-1/micrographs/mic_0001.mrc", image, pixel_size_A=1.0)
    return image.nbytes


async def _figures_page(
    http: aiohttp.ClientSession, root: Path, limits: dict[str, float]
) -> list[harness.Record]:
    """Job page of a picking job over a 4k micrograph: first view (draw) and later (cached)."""
    nbytes = await asyncio.to_thread(_big_pipeline, root)
    body = {"name": "figs", "members": ["mia"], "storage_root": str(root)}
    async with http.post("/api/v1/projects", json=body, headers=admin()) as resp:
        assert resp.status == 201, await resp.text()
    job = {"uid": "uid-picks", "name": "picks-1", "project": "figs", "job_type": "blob_picker"}
    async with http.post("/api/v1/jobs", json=job, headers=OPERATOR) as resp:
        assert resp.status == 201, await resp.text()

    async def view() -> str:
        async with http.get("/console/jobs/uid-picks", headers=user("mia")) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()

    t0 = time.perf_counter()
    page = await view()
    first_s = time.perf_counter() - t0
    assert 'class="pick"' in page, "the picks figure is missing"
    cached_s = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        await view()
        cached_s = min(cached_s, time.perf_counter() - t0)
    # Roofline of the first view: reading the micrograph once at memory bandwidth.
    roofline_s = nbytes / (limits["memory_bandwidth_GBps"] * 1e9)
    return [
        harness.Record(
            name=f"console: job page with picks on a {MIC_PX}^2 micrograph, first view",
            value=first_s * 1e3,
            unit="ms",
            ratio_to_limit=first_s / roofline_s,
            limit="memory_bandwidth_GBps (one read of the micrograph)",
            notes="read MRC, bin, PNG-encode, SVG; one sample (cold cache)",
        ),
        harness.Record(
            name=f"console: job page with picks on a {MIC_PX}^2 micrograph, cached",
            value=cached_s * 1e3,
            unit="ms",
            ratio_to_limit=cached_s / first_s,
            limit="the first (drawing) view of the same page",
        ),
    ]


async def _run(data_dir: Path, limits: dict[str, float]) -> list[harness.Record]:
    settings = make_settings(
        None,
        "cryokube",
        embedded_data_dir=data_dir,
        embedded_port=free_port(),
        server_selection_timeout_ms=5000,
        client_max_size_bytes=1024 * 1024,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    mia = user("mia")
    try:
        async with aiohttp.ClientSession(base) as http:
            body = {"name": "apo", "members": ["mia"]}
            async with http.post("/api/v1/projects", json=body, headers=admin()) as resp:
                assert resp.status == 201, await resp.text()

            async def register(c: int) -> None:
                for i in range(c, N_JOBS, CONCURRENCY):
                    job = {
                        "uid": f"uid-{i:04d}",
                        "name": f"job-{i:04d}",
                        "project": "apo",
                        "job_type": "ctf_estimation",
                        "inputs": _inputs(i),
                        "resources": {"gpus": 1},
                    }
                    async with http.post("/api/v1/jobs", json=job, headers=OPERATOR) as resp:
                        assert resp.status == 201, await resp.text()
                    if i % 10 == 0:
                        patch = {"status": "Running", "node": f"gpu-{i % 7}"}
                        async with http.patch(
                            f"/api/v1/jobs/uid-{i:04d}", json=patch, headers=OPERATOR
                        ) as resp:
                            assert resp.status == 200, await resp.text()

            await asyncio.gather(*(register(c) for c in range(CONCURRENCY)))

            def getter(
                path: str, params: dict[str, str] | None = None
            ) -> Callable[[], Awaitable[int]]:
                async def fetch() -> int:
                    async with http.get(path, params=params, headers=mia) as resp:
                        assert resp.status == 200, await resp.text()
                        return len(await resp.read())

                return fetch

            async def api_all_jobs() -> int:
                size = 0
                for offset in (0, 500):
                    query = {"limit": "500", "offset": str(offset)}
                    size += await getter("/api/v1/projects/apo/jobs", query)()
                return size

            api_s, _ = await _best_s(api_all_jobs)
            pages = {
                "project page (graph + table)": "/console/projects/apo",
                "projects page": "/console/projects",
                "queue page": "/console/queue",
                "job page": "/console/jobs/uid-0500",
                "create-job form": "/console/projects/apo/new?type=ctf_estimation",
            }
            records = [
                harness.Record(
                    name="console: API list of 1,000 jobs (reference)",
                    value=api_s * 1e3,
                    unit="ms",
                    notes="two GET /api/v1/projects/apo/jobs pages of 500",
                )
            ]
            for label, path in pages.items():
                seconds, size = await _best_s(getter(path))
                records.append(
                    harness.Record(
                        name=f"console: {label}, {N_JOBS} jobs",
                        value=seconds * 1e3,
                        unit="ms",
                        ratio_to_limit=seconds / api_s,
                        limit="JSON API list of the same jobs",
                        extra={"html_kB": round(size / 1024, 1)},
                    )
                )
            records += await _figures_page(http, data_dir / "figs", limits)
        nodes = [
            Node(
                f"job-{i:04d}",
                f"/console/jobs/uid-{i:04d}",
                "Succeeded",
                "ctf_estimation",
                tuple(d["job"] for d in _inputs(i)),
            )
            for i in range(N_JOBS)
        ]
        graph_s = harness.best_time_s(lambda: job_graph_svg(nodes), repeat=5)
        records.append(
            harness.Record(
                name=f"console: job graph SVG alone, {N_JOBS} jobs",
                value=graph_s * 1e3,
                unit="ms",
                ratio_to_limit=graph_s / api_s,
                limit="JSON API list of the same jobs",
                peak_memory_MB=harness.peak_traced_MB(lambda: job_graph_svg(nodes)),
            )
        )
        return records
    finally:
        await runner.cleanup()


@harness.benchmark("console_pages_1000_jobs")
def bench_console_pages(limits: dict[str, float]) -> list[harness.Record]:
    """Render time of the console's pages for a project with 1,000 jobs, and a plot page."""
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-console-") as tmp:
        return asyncio.run(_run(Path(tmp), limits))
