"""``cryokube up``: the embedded metadata service and the local controller together, for real."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from cryokube.operator.cli import serve
from cryokube.operator.local.service import load_secrets
from cryokube.operator.local.store import ResourceStore, load_manifests
from cryokube.processing.io.movies import write_movie_tiff
from support import servers

MANIFEST = """\
apiVersion: cryokube.io/v1alpha1
kind: Project
metadata: {name: apo, namespace: lab}
spec:
  storage: {path: data}
---
apiVersion: cryokube.io/v1alpha1
kind: Job
metadata: {name: movies, namespace: lab}
spec:
  project: apo
  type: import_movies
  params: {blob_paths: "raw/*.tif"}
"""
FINISH_S = 300.0
"""Deadline for the Job to finish (nx-27017 and a worker process start first): it only matters
when the test fails."""


@pytest.mark.mongo
@pytest.mark.slow
async def test_up_registers_jobs_and_workers_report_to_it(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    write_movie_tiff(raw / "a.tif", np.ones((2, 16, 16), np.uint8), compression="lzw")
    (tmp_path / "pipeline.yaml").write_text(MANIFEST)
    state = tmp_path / "state"
    port = servers.free_port()
    task = asyncio.create_task(serve(state, port=port, mongo_port=servers.free_port(), slots=1))
    try:
        store = ResourceStore(state)
        for document in load_manifests([tmp_path / "pipeline.yaml"]):
            store.apply(document)
        uid = store.get("Job", "lab", "movies")["metadata"]["uid"]  # type: ignore[index]
        deadline = asyncio.get_running_loop().time() + FINISH_S
        while True:
            body = store.get("Job", "lab", "movies") or {}
            if body.get("status", {}).get("phase") in {"Succeeded", "Failed"}:
                break
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, f"not finished: {body}"
            await asyncio.sleep(0.25)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        token = load_secrets(state).service_token
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {token}"}
            job = await (await http.get(f"/api/v1/jobs/{uid}", headers=headers)).json()
            events = await (await http.get(f"/api/v1/jobs/{uid}/events", headers=headers)).json()
            anonymous = await http.get(f"/api/v1/jobs/{uid}")
            forged = await http.get(
                "/console/projects", cookies={"cryokube_local": "x" * 64}, allow_redirects=False
            )
        # a browser keeps cookies for 127.0.0.1; aiohttp's jar needs unsafe=True for IP hosts
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", cookie_jar=jar) as browser:
            login = f"/login?token={load_secrets(state).login_token}"
            signed_in = await browser.get(login)  # follows the redirect with the cookie set
            page = await signed_in.text()
            wrong = await browser.get("/login?token=guess", allow_redirects=False)
        assert job["status"] == "Succeeded"
        assert job["project"] == "apo"
        assert any("imported 1 movies" in (e.get("message") or "") for e in events)
        assert anonymous.status == 401
        assert forged.status == 401
        assert signed_in.status == 200
        assert wrong.status == 401
        assert "apo" in page
        assert (state / "secrets.json").stat().st_mode & 0o077 == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
