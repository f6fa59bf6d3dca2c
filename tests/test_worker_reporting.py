"""Worker -> metadata service over real HTTP: nothing lost when the service is down mid-job,
nothing duplicated when a killed worker is retried."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.tokens import mint_job_token
from cryokube.processing.io.movies import write_movie_tiff
from cryokube.processing.worker.reporter import ACKED_NAME, SPOOL_NAME
from support import servers
from support.metadata_app import OPERATOR, TOKEN_SECRET, admin, make_settings

pytestmark = [pytest.mark.mongo, pytest.mark.slow]
WORKER = str(Path(sys.executable).with_name("cryokube-worker"))
WORKER_WAIT_S = 120.0
"""Deadline of the waits for a worker process (Python start-up included): only for failures."""


class Service:
    """The metadata app on a fixed loopback port, stoppable and restartable."""

    def __init__(self, settings: Any, port: int) -> None:
        self.settings = settings
        self.port = port
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def service(mongo_server: servers.MongoServer, mongo_db_name: str) -> AsyncIterator[Service]:
    svc = Service(make_settings(mongo_server.uri, mongo_db_name), servers.free_port())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def register(svc: Service, uid: str) -> str:
    async with aiohttp.ClientSession(svc.url) as http:
        r = await http.post("/api/v1/projects", json={"name": "apo"}, headers=admin())
        assert r.status in (200, 201), await r.text()
        body = {"uid": uid, "name": uid, "project": "apo", "job_type": "import_movies"}
        r = await http.post("/api/v1/jobs", json=body, headers=OPERATOR)
        assert r.status in (200, 201), await r.text()
    return mint_job_token(TOKEN_SECRET, project="apo", job=uid, ttl_s=600)


async def job_state(svc: Service, uid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with aiohttp.ClientSession(svc.url) as http:
        job = await (await http.get(f"/api/v1/jobs/{uid}", headers=admin())).json()
        events = await (
            await http.get(f"/api/v1/jobs/{uid}/events", params={"limit": "1000"}, headers=admin())
        ).json()
    return job, events


def project_with_movies(root: Path, n: int) -> Path:
    (root / "raw").mkdir(parents=True)
    frames = np.ones((2, 16, 16), np.uint8)
    for i in range(n):
        write_movie_tiff(root / "raw" / f"m{i:03d}.tif", frames, compression="lzw")
    return root


async def start_worker(
    root: Path, svc: Service, uid: str, token: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CRYOKUBE_PROJECT": "apo", "CRYOKUBE_JOB": uid, "CRYOKUBE_JOB_UID": uid,
        "CRYOKUBE_JOB_TYPE": "import_movies",
        "CRYOKUBE_PARAMS": json.dumps({"blob_paths": "raw/*.tif"}),
        "CRYOKUBE_STORAGE_ROOT": str(root), "CRYOKUBE_METADATA_URL": svc.url,
        "CRYOKUBE_JOB_TOKEN": token, "CRYOKUBE_DEVICE": "cpu",
    }  # fmt: skip
    return await asyncio.create_subprocess_exec(
        WORKER, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


def spool_dir(root: Path, uid: str) -> Path:
    return root / uid / ".cryokube" / "reports-0"


def spooled(root: Path, uid: str) -> list[dict[str, Any]]:
    path = spool_dir(root, uid) / SPOOL_NAME
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_for_worker(
    proc: asyncio.subprocess.Process, reached: Callable[[], bool], what: str
) -> None:
    """Poll until ``reached()`` (checked first: a worker that is done has reached it too)."""
    deadline = asyncio.get_running_loop().time() + WORKER_WAIT_S
    while not reached():
        assert proc.returncode is None, f"worker exited {proc.returncode} before {what}"
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not in {WORKER_WAIT_S} s"
        await asyncio.sleep(0.05)


async def test_service_down_mid_job_loses_no_events(service: Service, tmp_path: Path) -> None:
    root = project_with_movies(tmp_path / "project", 5)
    token = await register(service, "import-a")
    await service.stop()  # the service goes away before the worker reports anything
    proc = await start_worker(root, service, "import-a", token)
    spool = spool_dir(root, "import-a") / SPOOL_NAME
    # The whole job runs with the service down: its completion report is spooled, not sent.
    await wait_for_worker(
        proc,
        lambda: spool.exists() and '"endpoint": "complete"' in spool.read_text(),
        "completion spooled",
    )
    assert proc.returncode is None  # the worker waits for the service, it does not give up
    await service.start()
    _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    job, events = await job_state(service, "import-a")
    assert job["status"] == "Succeeded"
    sent = [e["seq"] for e in spooled(root, "import-a") if e["endpoint"] in {"events", "progress"}]
    assert sorted(e["seq"] for e in events) == sent  # every event, once


async def test_killed_worker_retry_duplicates_nothing(service: Service, tmp_path: Path) -> None:
    root = project_with_movies(tmp_path / "project", 40)
    token = await register(service, "import-b")
    proc = await start_worker(root, service, "import-b", token)
    # Killed while reading movies, with reports up to the second movie's progress (seq 2)
    # delivered: the retry resends what was spooled but not acknowledged, and the service must
    # not count anything twice.
    acked = spool_dir(root, "import-b") / ACKED_NAME
    await wait_for_worker(
        proc, lambda: acked.exists() and int(acked.read_text()) >= 2, "progress delivered"
    )
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()
    retry = await start_worker(root, service, "import-b", token)
    _, stderr = await asyncio.wait_for(retry.communicate(), 120)
    assert retry.returncode == 0, stderr.decode()
    job, events = await job_state(service, "import-b")
    assert job["status"] == "Succeeded"
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs))
    sent = [e["seq"] for e in spooled(root, "import-b") if e["endpoint"] in {"events", "progress"}]
    assert sorted(seqs) == sent
    manifest = json.loads((root / "import-b" / "manifest.json").read_text())
    assert manifest["outputs"]["movies"]["n_items"] == 40
