"""The metadata service for the workstation runner: embedded nx-27017, secrets kept in the state.

``cryokube up`` serves it on loopback next to the local controller, which registers projects and
jobs with it and hands each worker a job token, exactly as the operator does in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryokube.operator.console.submit import LocalStoreSubmitter, set_job_submitter
from cryokube.operator.local.store import ResourceStore
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.client import MetadataClient
from cryokube.operator.metadata.settings import Settings
from cryokube.operator.registration import ServiceMetadata


@dataclass(frozen=True)
class LocalSecrets:
    """The HMAC key of job tokens and the runner's service token (admin)."""

    token_secret: str
    service_token: str
    login_token: str


def load_secrets(state: Path) -> LocalSecrets:
    """Read ``<state>/secrets.json``, creating it (mode 0600) on first use."""
    path = state / "secrets.json"
    if not path.exists():
        state.mkdir(parents=True, exist_ok=True)
        body = {key: secrets.token_urlsafe(48)
                for key in ("token_secret", "service_token", "login_token")}  # fmt: skip
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
    raw = json.loads(path.read_text())
    return LocalSecrets(raw["token_secret"], raw["service_token"], raw["login_token"])


@contextlib.asynccontextmanager
async def local_service(
    state: Path, store: ResourceStore, *, port: int, mongo_port: int
) -> AsyncIterator[tuple[str, ServiceMetadata]]:
    """Serve the metadata service on ``127.0.0.1:port``; yield its URL and the runner's link.

    The console's create-job form submits into ``store``, where the local controller runs it.
    """
    keys = load_secrets(state)
    settings = Settings(
        embedded_data_dir=state / "db",
        embedded_port=mongo_port,
        token_secret=keys.token_secret,
        service_token=keys.service_token,
        local_login_token=keys.login_token,
    )
    app = create_app(settings)
    set_job_submitter(app, LocalStoreSubmitter(store))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        client = MetadataClient(url, service_token=keys.service_token)
        link = ServiceMetadata(client, token_secret=keys.token_secret)
        try:
            yield url, link
        finally:
            await link.close()
    finally:
        await runner.cleanup()
