"""Reliability and deployment modes: MongoDB down, embedded nx-27017, and the HTTP clients."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.client import (
    JobRpcClient,
    MetadataClient,
    MetadataRequestError,
    MetadataUnavailable,
)
from cryokube.operator.metadata.models import (
    Completion,
    EventIn,
    JobCreate,
    JobStatus,
    JobUpdate,
    ProjectCreate,
)
from cryokube.operator.metadata.tokens import mint_job_token
from support import servers
from support.metadata_app import SERVICE_TOKEN, TOKEN_SECRET, admin, make_settings

pytestmark = pytest.mark.mongo

HANG_GUARD_S = 30.0
"""Not a speed check: only turns a hang into a failure."""


async def test_mongodb_down_answers_503_with_retry_after(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    with servers.mongo_server(tmp_path) as dedicated:
        # A short server-selection timeout: the 503 comes after two attempts of 0.5 s.
        settings = make_settings(dedicated.uri, "outage", server_selection_timeout_ms=500)
        api = await aiohttp_client(create_app(settings))
        resp = await api.post("/api/v1/projects", json={"name": "apo"}, headers=admin())
        assert resp.status == 201
        servers.stop_process(dedicated.proc)
        resp = await asyncio.wait_for(api.get("/api/v1/projects", headers=admin()), HANG_GUARD_S)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["error"] == "StoreUnavailable"
        ready = await asyncio.wait_for(api.get("/readyz"), HANG_GUARD_S)
        assert ready.status == 503
        assert (await api.get("/healthz")).status == 200
        metrics = await (await api.get("/metrics")).text()
        assert "cryokube_metadata_store_unavailable_total 1.0" in metrics


@pytest.mark.slow
async def test_embedded_mode_persists_across_restarts(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    settings = make_settings(
        None, "cryokube", embedded_data_dir=tmp_path / "store", embedded_port=servers.free_port()
    )
    first = await aiohttp_server(create_app(settings))
    async with MetadataClient(str(first.make_url("/")), service_token=SERVICE_TOKEN) as client:
        await client.register_project(ProjectCreate(name="apo", members=["mia"]))
    await first.close()
    assert (tmp_path / "store" / "db").is_dir()
    again = await aiohttp_client(create_app(settings))
    resp = await again.get("/api/v1/projects/apo", headers=admin())
    assert resp.status == 200
    assert (await resp.json())["members"] == ["mia"]


async def test_clients_drive_a_job_end_to_end(
    aiohttp_server: Any, mongo_server: Any, mongo_db_name: str
) -> None:
    server = await aiohttp_server(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    url = str(server.make_url("/"))
    async with MetadataClient(url, service_token=SERVICE_TOKEN) as operator:
        await operator.register_project(ProjectCreate(name="apo"))
        job = JobCreate(uid="u-1", name="motion", project="apo", job_type="motion")
        assert (await operator.register_job(job)).status is JobStatus.QUEUED
        assert (await operator.register_job(job)).uid == "u-1"
        queued = await operator.update_job("u-1", JobUpdate(queue_reason="waiting for a GPU"))
        assert queued.queue_reason == "waiting for a GPU"
        token = mint_job_token(TOKEN_SECRET, project="apo", job="u-1", ttl_s=600)
        async with JobRpcClient(url, uid="u-1", token=token) as rpc:
            assert (await rpc.heartbeat(node="n1")).status is JobStatus.RUNNING
            assert (await rpc.event(EventIn(seq=0, message="hello"))).created
            assert not (await rpc.event(EventIn(seq=0, message="hello"))).created
            assert (await rpc.complete(Completion(succeeded=True))).status is JobStatus.SUCCEEDED
        with pytest.raises(MetadataRequestError) as err:
            await operator.update_job("u-1", JobUpdate(status=JobStatus.RUNNING))
        assert (err.value.status, err.value.reason) == (409, "InvalidTransition")
        with pytest.raises(MetadataRequestError) as missing:
            await operator.get_job("nope")
        assert missing.value.status == 404
        assert not isinstance(missing.value, MetadataUnavailable)
        await operator.register_job(job.model_copy(update={"uid": "u-2"}))
        assert (await operator.cancel_job("u-2")).status is JobStatus.CANCELLED
