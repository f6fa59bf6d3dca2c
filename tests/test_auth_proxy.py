"""oauth2-proxy, configured by the chart, in front of the running metadata service and console.

The proxy is the pinned oauth2-proxy that scripts/tools.sh builds; its configuration is the
chart's own rendered ConfigMap and container arguments, with three test substitutions: loopback
addresses, an OIDC provider that needs no discovery (no network here), and its htpasswd login
(HTTP basic auth) standing in for the identity provider. Behind it runs the real metadata
service (``create_app``) on the nx-27017 test server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryokube.operator.metadata.app import create_app
from support.metadata_app import ADMIN_GROUP, PROXY_SECRET, make_settings
from support.tools import tool

pytestmark = pytest.mark.mongo

USER, PASSWORD = "alice", "correct horse battery staple"
IDP_LOGIN = "https://login.example.org/authorize"
START_TIMEOUT_S = 20.0
CLEANUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rendered_proxy(repo_root: Path) -> tuple[dict[str, Any], list[str]]:
    """The chart's oauth2-proxy alpha config and container arguments (default values)."""
    result = subprocess.run(
        [str(tool("helm")), "template", "ck", "charts/cryokube", "--namespace", "cryokube"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("auth-proxy")
    ]
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("auth-proxy")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return yaml.safe_load(config["data"]["alpha-config.yaml"]), list(container["args"])


@pytest.fixture
async def console(mongo_server: Any, mongo_db_name: str) -> AsyncIterator[str]:
    """The metadata service and console on a loopback port; its base URL."""
    # The proxy keeps idle connections open; do not wait the default 60 s for them at teardown.
    app = create_app(make_settings(mongo_server.uri, mongo_db_name))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # A teardown that hangs (seen once on a loaded machine) fails this test, not the run.
        await asyncio.wait_for(runner.cleanup(), CLEANUP_TIMEOUT_S)


@pytest.fixture
def proxy(repo_root: Path, tmp_path: Path, console: str) -> Iterator[str]:
    """oauth2-proxy with the chart's configuration in front of ``console``; its base URL."""
    alpha, args = rendered_proxy(repo_root)
    port = free_port()
    alpha["server"]["bindAddress"] = f"127.0.0.1:{port}"
    (upstream,) = alpha["upstreamConfig"]["upstreams"]
    upstream["uri"] = console
    (provider,) = alpha["providers"]
    (tmp_path / "client-secret").write_text("not-used-by-htpasswd-logins\n")
    provider["clientSecretFile"] = str(tmp_path / "client-secret")
    provider["loginURL"] = IDP_LOGIN
    provider["redeemURL"] = "https://login.example.org/token"
    provider["oidcConfig"]["skipDiscovery"] = True
    provider["oidcConfig"]["jwksURL"] = "https://login.example.org/jwks"
    (tmp_path / "alpha.yaml").write_text(yaml.safe_dump(alpha))
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (tmp_path / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    chart_args = [a for a in args if not a.startswith("--alpha-config=")]
    command = [
        str(tool("oauth2-proxy")),
        f"--alpha-config={tmp_path / 'alpha.yaml'}",
        *chart_args,
        f"--htpasswd-file={tmp_path / 'htpasswd'}",
        f"--htpasswd-user-group={ADMIN_GROUP}",
    ]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OAUTH2_PROXY_COOKIE_SECRET": "0123456789abcdef0123456789abcdef",
        "CRYOKUBE_PROXY_SECRET": PROXY_SECRET,
    }
    log = (tmp_path / "oauth2-proxy.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def wait_ready(session: aiohttp.ClientSession, proxy: str, log: Path) -> None:
    """Poll the proxy's /ready until it answers 200, or fail with its log."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with session.get(f"{proxy}/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"oauth2-proxy did not become ready:\n{log.read_text()}")


@pytest.fixture
async def client(proxy: str, tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, proxy, tmp_path / "oauth2-proxy.log")
        yield session


ALICE = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}


async def test_request_without_session_is_refused(
    client: aiohttp.ClientSession, proxy: str
) -> None:
    async with client.get(f"{proxy}/api/v1/me") as resp:
        assert resp.status == 401
    # A browser is sent to the identity provider to sign in, never to the console.
    async with client.get(f"{proxy}/", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].startswith(IDP_LOGIN)


async def test_wrong_password_is_refused(client: aiohttp.ClientSession, proxy: str) -> None:
    wrong = {"Authorization": aiohttp.encode_basic_auth(USER, "wrong")}
    async with client.get(f"{proxy}/api/v1/me", headers=wrong) as resp:
        assert resp.status == 401


async def test_signed_in_user_reaches_console_with_identity_headers(
    client: aiohttp.ClientSession, proxy: str
) -> None:
    async with client.get(f"{proxy}/api/v1/me", headers=ALICE) as resp:
        assert resp.status == 200, await resp.text()
        me = await resp.json()
    assert me["name"] == USER
    assert me["groups"] == [ADMIN_GROUP]
    assert me["role"] == "admin"


async def test_client_cannot_forge_identity_through_the_proxy(
    client: aiohttp.ClientSession, proxy: str
) -> None:
    forged = {
        "X-Forwarded-User": "mallory",
        "X-Forwarded-Groups": "intruders",
        "X-Auth-Proxy-Secret": "guessed-secret-value",
    }
    async with client.get(f"{proxy}/api/v1/me", headers={**forged, **ALICE}) as resp:
        assert resp.status == 200, await resp.text()
        me = await resp.json()
    assert (me["name"], me["groups"]) == (USER, [ADMIN_GROUP])
    async with client.get(f"{proxy}/api/v1/me", headers=forged) as resp:
        assert resp.status == 401


async def test_console_ignores_identity_headers_that_skip_the_proxy(
    client: aiohttp.ClientSession, console: str
) -> None:
    forged = {"X-Forwarded-User": "mallory", "X-Forwarded-Groups": ADMIN_GROUP}
    async with client.get(f"{console}/api/v1/me", headers=forged) as resp:
        assert resp.status == 401
