"""The metadata service through its real HTTP interface, on the nx-27017 test server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.settings import Settings
from pydantic import ValidationError
from support.metadata_app import OPERATOR, PROXY_SECRET, admin, make_settings, user, worker

pytestmark = pytest.mark.mongo

SHA = "ab" * 32


@pytest.fixture
async def api(aiohttp_client: Any, mongo_server: Any, mongo_db_name: str) -> Any:
    return await aiohttp_client(create_app(make_settings(mongo_server.uri, mongo_db_name)))


async def _project(api: Any, name: str = "apo", **extra: Any) -> None:
    body = {"name": name, "members": ["mia"], **extra}
    resp = await api.post("/api/v1/projects", json=body, headers=admin())
    assert resp.status == 201, await resp.text()


async def _job(api: Any, uid: str = "uid-1", project: str = "apo", **extra: Any) -> dict[str, Any]:
    body = {"uid": uid, "name": f"job-{uid}", "project": project, "job_type": "motion", **extra}
    resp = await api.post("/api/v1/jobs", json=body, headers=OPERATOR)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_job_lifecycle_through_worker_rpc(api: Any) -> None:
    await _project(api)
    job = await _job(api, resources={"gpus": 1, "cpus": 4, "memory_MiB": 8192})
    assert job["status"] == "Queued"
    assert set(job["status_times"]) == {"Queued"}
    w = worker("apo", "uid-1")
    rpc = "/rpc/v1/jobs/uid-1"

    resp = await api.post(f"{rpc}/heartbeat", json={"node": "gpu-node-3"}, headers=w)
    assert resp.status == 200
    assert (await resp.json())["status"] == "Running"
    for seq, body in enumerate([{"message": "start"}, {"message": "frame 1", "level": "debug"}]):
        resp = await api.post(f"{rpc}/events", json={"seq": seq, **body}, headers=w)
        assert resp.status == 201
    resp = await api.post(f"{rpc}/progress", json={"seq": 2, "fraction": 0.5}, headers=w)
    assert resp.status == 201
    resp = await api.post(
        f"{rpc}/images",
        json={"seq": 3, "name": "avg", "content_type": "image/png", "data_base64": "iVBORw=="},
        headers=w,
    )
    assert resp.status == 201
    files = [{"path": "motion/mic_0001.mrc", "sha256": SHA, "size_bytes": 1024}]
    out = {"name": "class_averages", "kind": "templates", "files": files}
    assert (await api.post(f"{rpc}/outputs", json=out, headers=w)).status == 201
    assert (await api.post(f"{rpc}/outputs", json=out, headers=w)).status == 200
    changed = {**out, "files": [{**files[0], "size_bytes": 1}]}
    resp = await api.post(f"{rpc}/outputs", json=changed, headers=w)
    assert resp.status == 409
    exposure = {"name": "mic_0001", "movie_path": "raw/m1.tif", "defocus_u_A": 15000.0}
    assert (await api.post(f"{rpc}/exposures", json=exposure, headers=w)).status == 200
    resp = await api.post(f"{rpc}/complete", json={"succeeded": True, "message": "ok"}, headers=w)
    assert resp.status == 200
    done = await resp.json()
    assert done["status"] == "Succeeded"
    assert set(done["status_times"]) == {"Queued", "Running", "Succeeded"}
    assert done["progress"] == 0.5
    assert done["node"] == "gpu-node-3"
    assert done["heartbeat_at"] is not None
    replay = await api.post(f"{rpc}/complete", json={"succeeded": True}, headers=w)
    assert replay.status == 200
    flip = await api.post(f"{rpc}/complete", json={"succeeded": False}, headers=w)
    assert flip.status == 409
    assert (await flip.json())["error"] == "InvalidTransition"

    member = user("mia")
    events = await (await api.get("/api/v1/jobs/uid-1/events", headers=member)).json()
    assert [e["seq"] for e in events] == [0, 1, 2, 3]
    assert [e["kind"] for e in events] == ["log", "log", "progress", "image"]
    outs = await (await api.get("/api/v1/jobs/uid-1/outputs", headers=member)).json()
    assert outs[0]["id"] == "uid-1/class_averages"
    assert outs[0]["files"][0]["sha256"] == SHA
    page = await (await api.get("/api/v1/projects/apo/exposures", headers=member)).json()
    assert page["total"] == 1
    assert page["items"][0]["defocus_u_A"] == 15000.0


async def test_event_replay_is_idempotent(api: Any) -> None:
    await _project(api)
    await _job(api)
    w = worker("apo", "uid-1")
    first = await api.post("/rpc/v1/jobs/uid-1/events", json={"seq": 7, "message": "a"}, headers=w)
    again = await api.post("/rpc/v1/jobs/uid-1/events", json={"seq": 7, "message": "a"}, headers=w)
    assert (first.status, await first.json()) == (201, {"created": True})
    assert (again.status, await again.json()) == (200, {"created": False})
    older = await api.post(
        "/rpc/v1/jobs/uid-1/progress", json={"seq": 5, "fraction": 0.9}, headers=w
    )
    newer = await api.post(
        "/rpc/v1/jobs/uid-1/progress", json={"seq": 9, "fraction": 0.2}, headers=w
    )
    late = await api.post(
        "/rpc/v1/jobs/uid-1/progress", json={"seq": 8, "fraction": 0.7}, headers=w
    )
    assert [older.status, newer.status, late.status] == [201, 201, 201]
    job = await (await api.get("/api/v1/jobs/uid-1", headers=OPERATOR)).json()
    assert job["progress"] == 0.2
    events = await (await api.get("/api/v1/jobs/uid-1/events", headers=OPERATOR)).json()
    assert [e["seq"] for e in events] == [5, 7, 8, 9]


async def test_job_list_pagination_and_filters(api: Any) -> None:
    await _project(api)
    for i in range(5):
        await _job(api, uid=f"u{i}", lane="gpu" if i % 2 else "cpu")
    patch = {"status": "Running", "node": "n1"}
    assert (await api.patch("/api/v1/jobs/u3", json=patch, headers=OPERATOR)).status == 200
    url = "/api/v1/projects/apo/jobs"
    page = await (await api.get(url, params={"limit": 2, "offset": 1}, headers=user("mia"))).json()
    assert (page["total"], page["offset"], page["limit"]) == (5, 1, 2)
    assert [j["uid"] for j in page["items"]] == ["u3", "u2"]
    gpu = await (await api.get(url, params={"lane": "gpu"}, headers=user("mia"))).json()
    assert sorted(j["uid"] for j in gpu["items"]) == ["u1", "u3"]
    running = await (await api.get(url, params={"status": "Running"}, headers=user("mia"))).json()
    assert [j["uid"] for j in running["items"]] == ["u3"]
    bad = await api.get(url, params={"limit": 0}, headers=user("mia"))
    assert bad.status == 422
    assert (await bad.json())["fields"][0]["loc"] == "query.limit"


async def test_validation_errors_name_the_field(api: Any) -> None:
    await _project(api)
    body = {"uid": "x1", "name": "j", "project": "apo", "job_type": "m", "resources": {"gpus": -1}}
    resp = await api.post("/api/v1/jobs", json=body, headers=OPERATOR)
    assert resp.status == 422
    payload = await resp.json()
    assert payload["error"] == "ValidationFailed"
    assert payload["fields"][0]["loc"] == "body.resources.gpus"
    resp = await api.post("/api/v1/jobs", data=b"{not json", headers=OPERATOR)
    assert (resp.status, (await resp.json())["error"]) == (400, "MalformedJson")
    huge = {"seq": 1, "message": "x" * (70 * 1024)}
    resp = await api.post("/rpc/v1/jobs/uid-1/events", json=huge, headers=worker("apo", "uid-1"))
    assert resp.status == 413
    resp = await api.get("/api/v1/jobs/%2e%2e", headers=OPERATOR)
    assert resp.status == 404


async def test_auth_proxy_headers_need_proof(api: Any) -> None:
    await _project(api)
    await _job(api)
    bare = {"X-Forwarded-User": "mia"}
    assert (await api.get("/api/v1/projects", headers=bare)).status == 401
    forged = {**bare, "X-Auth-Proxy-Secret": PROXY_SECRET + "x"}
    resp = await api.get("/api/v1/projects", headers=forged)
    assert (resp.status, (await resp.json())["error"]) == (401, "Unauthenticated")
    no_user = {"X-Auth-Proxy-Secret": PROXY_SECRET}
    assert (await api.get("/api/v1/projects", headers=no_user)).status == 401
    assert (
        await api.get("/api/v1/projects", headers={"Authorization": "Bearer nope"})
    ).status == 401
    me = await (await api.get("/api/v1/me", headers=user("mia", "lab"))).json()
    assert me == {"name": "mia", "email": None, "groups": ["lab"], "role": "member"}


async def test_member_sees_only_their_projects(api: Any) -> None:
    await _project(api, "apo")
    await _project(api, "other", members=["olga"], groups=["other-lab"])
    await _job(api, uid="j-apo", project="apo")
    await _job(api, uid="j-other", project="other")
    mia = user("mia")
    names = await (await api.get("/api/v1/projects", headers=mia)).json()
    assert [p["name"] for p in names["items"]] == ["apo"]
    assert (await api.get("/api/v1/jobs/j-other", headers=mia)).status == 404
    assert (await api.get("/api/v1/projects/other/jobs", headers=mia)).status == 404
    assert (await api.get("/api/v1/jobs/j-other/events/stream", headers=mia)).status == 404
    by_group = user("gus", "other-lab")
    assert (await api.get("/api/v1/jobs/j-other", headers=by_group)).status == 200
    create = {"name": "mine", "members": ["mia"]}
    resp = await api.post("/api/v1/projects", json=create, headers=mia)
    assert (resp.status, (await resp.json())["error"]) == (403, "Forbidden")
    patch = await api.patch("/api/v1/jobs/j-apo", json={"status": "Running"}, headers=mia)
    assert patch.status == 403
    everything = await (await api.get("/api/v1/projects", headers=admin())).json()
    assert everything["total"] == 2


async def test_job_token_scope_and_expiry(api: Any) -> None:
    await _project(api)
    await _project(api, "other", members=["olga"])
    await _job(api, uid="a")
    await _job(api, uid="b")
    await _job(api, uid="c", project="other")
    event = {"seq": 1, "message": "hi"}
    assert (
        await api.post("/rpc/v1/jobs/b/events", json=event, headers=worker("apo", "a"))
    ).status == 401
    resp = await api.post("/rpc/v1/jobs/c/events", json=event, headers=worker("apo", "c"))
    assert resp.status == 401
    expired = worker("apo", "a", ttl_s=60, now_s=time.time() - 120)
    resp = await api.post("/rpc/v1/jobs/a/events", json=event, headers=expired)
    assert (resp.status, (await resp.json())["message"]) == (401, "job token has expired")
    assert (await api.post("/rpc/v1/jobs/a/events", json=event, headers=user("mia"))).status == 401
    assert (
        await api.post("/rpc/v1/jobs/a/events", json=event, headers=worker("apo", "a"))
    ).status == 201


async def test_api_token_authenticates_its_user(api: Any) -> None:
    await _project(api)
    resp = await api.post("/api/v1/tokens", json={"ttl_days": 1}, headers=user("mia", "lab"))
    assert resp.status == 201
    token = (await resp.json())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    me = await (await api.get("/api/v1/me", headers=bearer)).json()
    assert (me["name"], me["groups"]) == ("mia", ["lab"])
    assert (await api.get("/api/v1/projects/apo", headers=bearer)).status == 200


async def test_event_stream_sends_events_then_ends(api: Any) -> None:
    await _project(api)
    await _job(api)
    w = worker("apo", "uid-1")
    await api.post("/rpc/v1/jobs/uid-1/events", json={"seq": 0, "message": "zero"}, headers=w)
    resp = await api.get(
        "/api/v1/jobs/uid-1/events/stream", headers={**user("mia"), "Last-Event-ID": "-1"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")

    async def produce() -> None:
        await api.post("/rpc/v1/jobs/uid-1/events", json={"seq": 1, "message": "one"}, headers=w)
        await api.post("/rpc/v1/jobs/uid-1/complete", json={"succeeded": False}, headers=w)

    producer = asyncio.create_task(produce())
    text = (await asyncio.wait_for(resp.content.read(), 10)).decode()
    await producer
    messages = [m for m in text.split("\n\n") if m and not m.startswith(":")]
    ids = [line[4:] for m in messages for line in m.splitlines() if line.startswith("id: ")]
    assert ids == ["0", "1"]
    assert messages[-1].startswith("event: end")
    data = [json.loads(line[6:]) for line in messages[0].splitlines() if line.startswith("data: ")]
    assert data[0]["message"] == "zero"


async def test_unauthenticated_endpoints_expose_no_project_data(api: Any) -> None:
    await _project(api, "secret-project")
    assert (await (await api.get("/healthz")).json()) == {"status": "ok"}
    assert (await (await api.get("/readyz")).json()) == {"status": "ok"}
    metrics = await (await api.get("/metrics")).text()
    assert (
        'cryokube_metadata_requests_total{method="POST",route="create_project",status="201"}'
        in metrics
    )
    assert "secret-project" not in metrics
    doc = await (await api.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "/rpc/v1/jobs/{uid}/events" in doc["paths"]
    assert doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "JobCreate" in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"proxy_secret": None, "trusted_proxies": ("127.0.0.0/8",)}, 200),
        ({"proxy_secret": None, "trusted_proxies": ("10.0.0.0/8",)}, 401),
        ({"proxy_secret": None}, 401),
    ],
)
async def test_proxy_trusted_by_source_address_only_when_configured(
    aiohttp_client: Any,
    mongo_server: Any,
    mongo_db_name: str,
    overrides: dict[str, Any],
    expected: int,
) -> None:
    settings = make_settings(mongo_server.uri, mongo_db_name, **overrides)
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/api/v1/me", headers={"X-Forwarded-User": "mia"})
    assert resp.status == expected


def test_settings_from_environment() -> None:
    env = {
        "MONGODB_URI": "mongodb://db:27017/?replicaSet=rs0",
        "CRYOKUBE_TOKEN_SECRET": "k" * 32,
        "CRYOKUBE_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
        "CRYOKUBE_ADMIN_GROUPS": "ops,admins",
    }
    settings = Settings.from_env(env)
    assert settings.mongodb_uri == env["MONGODB_URI"]
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.7")
    assert settings.admin_groups == ("ops", "admins")
    assert settings.proxy_secret is None
    with pytest.raises(ValidationError, match="token_secret"):
        Settings.from_env({"CRYOKUBE_TOKEN_SECRET": "short"})
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings.from_env({**env, "CRYOKUBE_TRUSTED_PROXIES": "not-an-address"})


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"$where": "1"}, "may not start with '$'"),
        ({"a\u0000b": 1}, "contain NUL"),
        ({"n": [2**70]}, "does not fit in 64 bits"),
    ],
)
async def test_unstorable_parameters_are_422_not_500(
    api: Any, parameters: dict[str, Any], message: str
) -> None:
    await _project(api)
    body = {"uid": "p1", "name": "j", "project": "apo", "job_type": "m", "parameters": parameters}
    resp = await api.post("/api/v1/jobs", json=body, headers=OPERATOR)
    assert resp.status == 422
    payload = await resp.json()
    assert payload["fields"][0]["loc"] == "body.parameters"
    assert message in payload["message"]


@pytest.mark.parametrize(
    ("rpc", "body", "loc"),
    [
        (
            "outputs",
            {
                "name": "o",
                "kind": "k",
                "files": [{"path": "a/../../etc/passwd", "sha256": SHA, "size_bytes": 1}],
            },
            "body.files.0.path",
        ),
        (
            "outputs",
            {
                "name": "o",
                "kind": "k",
                "files": [{"path": "/etc/passwd", "sha256": SHA, "size_bytes": 1}],
            },
            "body.files.0.path",
        ),
        (
            "images",
            {"seq": 1, "name": "i", "content_type": "image/png", "data_base64": "not base64!"},
            "body.data_base64",
        ),
        (
            "exposures",
            {"name": "e", "movie_path": "m.tif", "defocus_u_A": "Infinity"},
            "body.defocus_u_A",
        ),
    ],
)
async def test_worker_writes_outside_storage_or_garbage_are_422(
    api: Any, rpc: str, body: dict[str, Any], loc: str
) -> None:
    await _project(api)
    await _job(api)
    resp = await api.post(f"/rpc/v1/jobs/uid-1/{rpc}", json=body, headers=worker("apo", "uid-1"))
    assert resp.status == 422
    assert (await resp.json())["fields"][0]["loc"] == loc
