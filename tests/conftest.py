"""Shared fixtures: real servers on loopback (nx-27017, moto S3, kmock's Kubernetes emulator)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import k8s, servers

# The operator's re-check timer interval is read when cryokube.operator.handlers is first
# imported, and several test modules import it while they are collected: set it before them.
os.environ.setdefault("CRYOKUBE_RECHECK_INTERVAL_S", "0.3")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real and reference data, read-only); skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.MongoServer]:
    """One nx-27017 server for the session; tests isolate themselves by database name."""
    with servers.mongo_server(tmp_path_factory.mktemp("nx-27017")) as server:
        yield server


@pytest.fixture
def mongo_db_name() -> str:
    """A database name no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.S3Server]:
    """One moto S3 server for the session; tests isolate themselves by bucket name."""
    with servers.s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_client(s3_server: servers.S3Server) -> Any:
    """A boto3 S3 client for the moto server, with dummy credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh, empty bucket."""
    name = f"cryokube-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def k8s_emulator(kmock: Any) -> Any:
    """kmock's Kubernetes emulator over real HTTP, serving CryoKube's resources."""
    k8s.declare_resources(kmock)
    return kmock
