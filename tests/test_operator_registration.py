"""The operator's metadata link against the real metadata service (nx-27017 on loopback)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryokube.operator.metadata.app import create_app
from cryokube.operator.metadata.client import MetadataClient
from cryokube.operator.metadata.models import ProjectCreate
from cryokube.operator.metadata.tokens import verify_job_token
from cryokube.operator.models import parse_job, parse_project
from cryokube.operator.registration import NoMetadata, ServiceMetadata, storage_root
from support.metadata_app import SERVICE_TOKEN, TOKEN_SECRET, make_settings

pytestmark = pytest.mark.mongo


async def test_registers_mints_a_verifiable_token_and_cancels(
    aiohttp_server: Any, mongo_server: Any, mongo_db_name: str
) -> None:
    server = await aiohttp_server(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    client = MetadataClient(str(server.make_url("/")), service_token=SERVICE_TOKEN)
    link = ServiceMetadata(client, token_secret=TOKEN_SECRET)
    project = parse_project(
        {
            "metadata": {"name": "apoferritin", "namespace": "lab-a"},
            "spec": {
                "storage": {"pvc": {"claimName": "cryo-data"}},
                "members": [{"kind": "Group", "name": "lab-a"}, {"kind": "User", "name": "ada"}],
            },
        }
    )
    uid = str(uuid.uuid4())
    job = parse_job(
        {
            "metadata": {"name": "ctf", "namespace": "lab-a", "uid": uid},
            "spec": {
                "project": "apoferritin",
                "type": "ctf_estimation",
                "params": {"res_max_align": 4},
                "inputs": [{"job": "motion", "output": "micrographs"}],
            },
        }
    )
    try:
        await link.register_project(project)
        await link.register_project(project)  # idempotent on restart
        token = await link.register_job(job)
        await link.register_job(job)  # a replay keyed by the UID
        assert verify_job_token(TOKEN_SECRET, token, job=uid).project == "apoferritin"
        assert await link.progress_percent(job) == 0
        await link.mark_job(job, "Cancelled")
        assert (await client.get_job(uid)).status == "Cancelled"
    finally:
        await link.close()


async def test_without_a_service_tokens_are_random_and_nothing_is_recorded() -> None:
    link = NoMetadata()
    job = parse_job({"metadata": {"name": "a"}, "spec": {"project": "p", "type": "export"}})
    tokens = {await link.register_job(job) for _ in range(3)}
    assert len(tokens) == 3
    assert all(len(t) >= 43 for t in tokens)  # 32 random bytes, base64url
    assert await link.progress_percent(job) is None


async def test_an_s3_project_is_recorded_with_its_root_and_namespace(
    aiohttp_server: Any, mongo_server: Any, mongo_db_name: str
) -> None:
    server = await aiohttp_server(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    client = MetadataClient(str(server.make_url("/")), service_token=SERVICE_TOKEN)
    link = ServiceMetadata(client, token_secret=TOKEN_SECRET)
    s3 = {"bucket": "cryo", "prefix": "labs/ribo", "secretRef": "s3-keys"}
    project = parse_project(
        {"metadata": {"name": "ribo", "namespace": "lab-b"}, "spec": {"storage": {"s3": s3}}}
    )
    try:
        await link.register_project(project)
        # An identical replay returns the stored record (a different one would be a 409).
        replay = ProjectCreate(name="ribo", storage_root="s3://cryo/labs/ribo", namespace="lab-b")
        stored = await client.register_project(replay)
        assert (stored.storage_root, stored.namespace) == ("s3://cryo/labs/ribo", "lab-b")
    finally:
        await link.close()


@pytest.mark.parametrize(
    ("storage", "root"),
    [
        (
            {"pvc": {"claimName": "cryo-data", "subPath": "labs/apo/"}},
            "pvc://lab-a/cryo-data/labs/apo",
        ),
        ({"pvc": {"claimName": "cryo-data"}}, "pvc://lab-a/cryo-data/"),
        ({"s3": {"bucket": "cryo", "prefix": "labs/apo", "secretRef": "k"}}, "s3://cryo/labs/apo"),
        ({"path": "/data/apo"}, "/data/apo"),
        ({"path": "relative/apo"}, None),
    ],
)
def test_storage_root_names_the_claim_and_its_namespace(
    storage: dict[str, Any], root: str | None
) -> None:
    project = parse_project(
        {"metadata": {"name": "apo", "namespace": "lab-a"}, "spec": {"storage": storage}}
    )
    assert storage_root(project) == root


async def test_a_pvc_project_registered_without_a_root_gets_it_on_replay(
    aiohttp_server: Any, mongo_server: Any, mongo_db_name: str
) -> None:
    server = await aiohttp_server(create_app(make_settings(mongo_server.uri, mongo_db_name)))
    client = MetadataClient(str(server.make_url("/")), service_token=SERVICE_TOKEN)
    link = ServiceMetadata(client, token_secret=TOKEN_SECRET)
    pvc = {"claimName": "cryo-data", "subPath": "apo"}
    project = parse_project(
        {"metadata": {"name": "apo", "namespace": "lab-a"}, "spec": {"storage": {"pvc": pvc}}}
    )
    try:
        # What an operator before PVC roots recorded: the project without a root.
        await client.register_project(ProjectCreate(name="apo", namespace="lab-a"))
        await link.register_project(project)
        # An identical replay returns the stored record (a different root would be a 409).
        replay = ProjectCreate(name="apo", namespace="lab-a", storage_root=storage_root(project))
        stored = await client.register_project(replay)
        assert stored.storage_root == "pvc://lab-a/cryo-data/apo"
    finally:
        await link.close()
