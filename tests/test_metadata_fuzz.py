"""Schema-driven fuzzing: random requests to every operation of our OpenAPI document, no 500s.

Requests are authenticated (admin proxy headers, a valid job token) so that they reach parsing
and the services rather than stopping at 401. The server runs on a real socket in its own loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryokube.operator.metadata.app import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.metadata_app import OPERATOR, admin, make_settings, worker

pytestmark = pytest.mark.mongo

SKIPPED = {"stream_events"}
"""Streams stay open for a running job; covered by the API tests instead."""

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
path_values = st.sampled_from(["fz", "apo", "uid-1", "..", "%20", "a" * 200]) | st.text(
    st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=20
)


VALID_JOB = {"name": "fz", "project": "fz", "job_type": "motion"}
uids = st.text(st.sampled_from("abcdef0123456789-"), min_size=1, max_size=12).map(lambda u: "u" + u)


def _body_strategy(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Objects using the model's own field names (to get past "extra field"), or any JSON."""
    ref = schema.get("$ref", "")
    props = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
    if not props:
        return json_values
    shaped = st.dictionaries(st.sampled_from(sorted(props)), json_values, max_size=len(props))
    return shaped | json_values


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if op["operationId"] not in SKIPPED
    ]


def test_no_request_gets_a_500(mongo_server: Any, mongo_db_name: str) -> None:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    session = loop.run_until_complete(_session())
    try:
        loop.run_until_complete(_seed(session, base))
        doc = loop.run_until_complete(_get_json(session, f"{base}/openapi.json"))
        components = doc["components"]["schemas"]
        operations = _operations(doc)
        assert len(operations) >= 20

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            method, path, op = data.draw(st.sampled_from(operations))
            url = path
            for param in op["parameters"]:
                if param["in"] == "path":
                    url = url.replace("{" + param["name"] + "}", data.draw(path_values))
            query = {
                p["name"]: data.draw(st.text(max_size=12))
                for p in op["parameters"]
                if p["in"] == "query" and data.draw(st.booleans())
            }
            body = None
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = data.draw(_body_strategy(schema, components))
            if op["operationId"] == "register_job" and data.draw(st.booleans()):
                # A valid registration with free-form parameters: reaches the store's encoder.
                params = data.draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
                body = {**VALID_JOB, "uid": data.draw(uids), "parameters": params}
            headers = worker("fz", "fz") if path.startswith("/rpc/") else admin()
            if data.draw(st.booleans()):
                headers = {**headers, **OPERATOR} if not path.startswith("/rpc/") else headers
            status, text = loop.run_until_complete(
                _send(session, method, base + url, query, body, headers)
            )
            assert status < 500, f"{method} {url} {query} {body!r} -> {status} {text}"

        check()
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


async def _seed(session: aiohttp.ClientSession, base: str) -> None:
    """A project and a job named ``fz`` so fuzzed requests can hit existing objects."""
    async with session.post(f"{base}/api/v1/projects", json={"name": "fz"}, headers=admin()):
        pass
    job = {"uid": "fz", "name": "fz", "project": "fz", "job_type": "motion"}
    async with session.post(f"{base}/api/v1/jobs", json=job, headers=OPERATOR):
        pass


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    query: dict[str, str],
    body: Any,
    headers: dict[str, str],
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body)
    async with session.request(
        method, url, params=query, data=data, headers=headers, allow_redirects=False
    ) as resp:
        return resp.status, (await resp.text())[:300]
