"""Contract tests: every repository against the real nx-27017 server on loopback.

The same tests run against a real ``mongod`` by pointing ``mongo_server`` at one (``-m mongo``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryokube.operator.metadata.errors import Conflict, SchemaTooNew
from cryokube.operator.metadata.models import (
    EventKind,
    ExposureIn,
    JobCreate,
    JobStatus,
    OutputIn,
    ProjectCreate,
)
from cryokube.operator.metadata.repositories import Repositories
from cryokube.operator.metadata.repositories.base import RetryPolicy, Store
from cryokube.operator.metadata.repositories.changefeed import (
    ChangeFeed,
    ChangeStreamFeed,
    PollingFeed,
    open_change_feed,
)
from cryokube.operator.metadata.repositories.schema import SCHEMA_VERSION

pytestmark = pytest.mark.mongo


@pytest.fixture
async def repos(mongo_server: Any, mongo_db_name: str) -> AsyncIterator[Repositories]:
    store = Store(
        mongo_server.uri,
        mongo_db_name,
        retry=RetryPolicy(attempts=2, backoff_s=0.05, retry_after_s=1),
        server_selection_timeout_ms=1000,
    )
    repositories = Repositories.on(store)
    await repositories.prepare()
    yield repositories
    await store.close()


def _job(uid: str, project: str = "apo", **extra: Any) -> JobCreate:
    return JobCreate(uid=uid, name=f"n-{uid}", project=project, job_type="ctf", **extra)


async def test_indexes_are_declared_and_unique_where_needed(repos: Repositories) -> None:
    info = await repos.store.collection("events").index_information()
    unique = [v for v in info.values() if v.get("unique")]
    assert [list(dict(v["key"])) for v in unique] == [["job", "seq"]]
    await repos.prepare()  # idempotent: ensuring again changes nothing
    assert await repos.store.collection("events").index_information() == info


async def test_projects_replay_conflict_and_visibility(repos: Repositories) -> None:
    p = ProjectCreate(name="apo", members=["mia", "mia"], groups=["lab"])
    created, new = await repos.projects.create(p)
    assert new
    assert created.members == ["mia"]
    assert created.created_at.tzinfo is not None
    again, new = await repos.projects.create(p)
    assert (again, new) == (created, False)
    with pytest.raises(Conflict):
        await repos.projects.create(ProjectCreate(name="apo", members=["olga"]))
    await repos.projects.create(ProjectCreate(name="zeta", groups=["other"]))
    mine, total = await repos.projects.page(user="mia", groups=[], offset=0, limit=10)
    assert ([x.name for x in mine], total) == (["apo"], 1)
    by_group, _ = await repos.projects.page(user="gus", groups=["other"], offset=0, limit=10)
    assert [x.name for x in by_group] == ["zeta"]
    every, total = await repos.projects.page(user=None, groups=[], offset=1, limit=1)
    assert ([x.name for x in every], total) == (["zeta"], 2)


async def test_a_replay_records_the_root_and_namespace_an_older_registration_lacked(
    repos: Repositories,
) -> None:
    older = ProjectCreate(name="ribo", members=["mia"])  # before roots on S3 and namespaces
    created, _ = await repos.projects.create(older)
    now = older.model_copy(update={"storage_root": "s3://cryo/ribo", "namespace": "lab-b"})
    filled, new = await repos.projects.create(now)
    assert not new
    assert (filled.storage_root, filled.namespace) == ("s3://cryo/ribo", "lab-b")
    assert filled.created_at == created.created_at
    assert await repos.projects.get("ribo") == filled
    with pytest.raises(Conflict):  # once recorded, a different namespace is another project
        await repos.projects.create(now.model_copy(update={"namespace": "lab-c"}))


async def test_jobs_create_list_and_conditional_update(repos: Repositories) -> None:
    job, new = await repos.jobs.create(_job("a", lane="gpu"))
    assert new
    assert job.status is JobStatus.QUEUED
    assert list(job.status_times) == [JobStatus.QUEUED]
    assert (await repos.jobs.create(_job("a", lane="gpu")))[1] is False
    with pytest.raises(Conflict):
        await repos.jobs.create(_job("a", project="other"))
    for uid in "bcd":
        await repos.jobs.create(_job(uid))
    items, total = await repos.jobs.page(
        project="apo", status=None, job_type=None, lane=None, offset=0, limit=2
    )
    assert total == 4
    assert [j.uid for j in items] == ["d", "c"]
    gpu, total = await repos.jobs.page(
        project="apo", status=None, job_type="ctf", lane="gpu", offset=0, limit=10
    )
    assert ([j.uid for j in gpu], total) == (["a"], 1)
    moved = await repos.jobs.update(
        "a", {"status": "Running", "attempts": 1}, expect_status=JobStatus.QUEUED
    )
    assert moved is not None
    assert (moved.status, moved.attempts) == (JobStatus.RUNNING, 1)
    stale = await repos.jobs.update("a", {"status": "Failed"}, expect_status=JobStatus.QUEUED)
    assert stale is None
    assert await repos.jobs.heartbeat("a", node="n7")
    assert not await repos.jobs.heartbeat("missing", node=None)
    await repos.jobs.set_progress("a", seq=5, fraction=0.5, message="half")
    await repos.jobs.set_progress("a", seq=4, fraction=0.1, message="late")
    stored = await repos.jobs.get("a")
    assert stored is not None
    assert (stored.progress, stored.progress_message, stored.node) == (0.5, "half", "n7")
    assert stored.heartbeat_at is not None
    assert abs((stored.heartbeat_at - datetime.now(UTC)).total_seconds()) < 60


async def test_events_ordered_and_idempotent_by_seq(repos: Repositories) -> None:
    for seq in (3, 1, 2):
        assert await repos.events.add(
            job="j", seq=seq, kind=EventKind.LOG, fields={"message": f"m{seq}"}
        )
    assert not await repos.events.add(job="j", seq=2, kind=EventKind.LOG, fields={"message": "dup"})
    assert await repos.events.add(
        job="k", seq=2, kind=EventKind.LOG, fields={"message": "other job"}
    )
    events = await repos.events.page(job="j", after_seq=-1, limit=10)
    assert [(e.seq, e.message) for e in events] == [(1, "m1"), (2, "m2"), (3, "m3")]
    assert [e.seq for e in await repos.events.page(job="j", after_seq=1, limit=1)] == [2]


async def test_outputs_checksums_and_lineage(repos: Repositories) -> None:
    files = [{"path": "a/b.mrc", "sha256": "0" * 64, "size_bytes": 10}]
    parent = OutputIn(name="mics", kind="micrographs", files=files)
    child = OutputIn(name="parts", kind="particles", files=files, parents=["j1/mics"])
    stored, new = await repos.outputs.register(job="j1", project="apo", output=parent)
    assert (stored.id, new) == ("j1/mics", True)
    assert (await repos.outputs.register(job="j1", project="apo", output=parent))[1] is False
    with pytest.raises(Conflict):
        await repos.outputs.register(
            job="j1", project="apo", output=parent.model_copy(update={"kind": "x"})
        )
    assert await repos.outputs.missing(["j1/mics", "j9/none"], project="apo") == ["j9/none"]
    assert await repos.outputs.missing(["j1/mics"], project="other") == ["j1/mics"]
    await repos.outputs.register(job="j2", project="apo", output=child)
    assert [o.id for o in await repos.outputs.children("j1/mics")] == ["j2/parts"]
    assert [o.name for o in await repos.outputs.list_for_job("j1")] == ["mics"]


async def test_exposures_upsert_and_filter(repos: Repositories) -> None:
    first = ExposureIn(name="e1", movie_path="raw/e1.tif", defocus_u_A=12000.0)
    await repos.exposures.upsert(project="apo", job="j", exposure=first)
    await repos.exposures.upsert(
        project="apo", job="j", exposure=first.model_copy(update={"accepted": True})
    )
    await repos.exposures.upsert(
        project="apo",
        job="j",
        exposure=ExposureIn(name="e2", movie_path="raw/e2.tif", accepted=False),
    )
    _, total = await repos.exposures.page(project="apo", accepted=None, offset=0, limit=10)
    assert total == 2
    accepted, total = await repos.exposures.page(project="apo", accepted=True, offset=0, limit=10)
    assert ([e.name for e in accepted], total) == (["e1"], 1)
    assert accepted[0].defocus_u_A == 12000.0
    motion = ExposureIn(name="e2", movie_path="raw/e2.tif", drift_total_px=4.5)
    await repos.exposures.upsert(project="apo", job="j2", exposure=motion)
    rejected, _ = await repos.exposures.page(project="apo", accepted=False, offset=0, limit=10)
    assert (rejected[0].drift_total_px, rejected[0].accepted, rejected[0].job) == (4.5, False, "j2")


async def test_users_and_api_tokens(repos: Repositories) -> None:
    await repos.users.record(name="mia", email="m@x", groups=["lab"])
    await repos.users.record(name="mia", email="m@x", groups=["lab", "b"])
    assert await repos.users.groups("mia") == ["lab", "b"]
    assert await repos.users.groups("nobody") is None
    soon = datetime.now(UTC) + timedelta(hours=1)
    await repos.api_tokens.add(digest="d1", user="mia", expires_at=soon)
    await repos.api_tokens.add(
        digest="d2", user="mia", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert await repos.api_tokens.owner("d1") == "mia"
    assert await repos.api_tokens.owner("d2") is None


async def test_schema_migrates_forward_and_refuses_newer(repos: Repositories) -> None:
    assert await repos.schema.version() == SCHEMA_VERSION
    jobs = repos.store.collection("jobs")
    await jobs.insert_one({"_id": "old", "project": "apo"})
    await repos.store.collection("schema").update_one({"_id": "schema"}, {"$set": {"version": 1}})
    assert await repos.schema.migrate() == SCHEMA_VERSION
    old = await jobs.find_one({"_id": "old"})
    assert old is not None
    assert (old["attempts"], old["progress_seq"]) == (0, -1)
    await repos.store.collection("schema").update_one({"_id": "schema"}, {"$set": {"version": 99}})
    with pytest.raises(SchemaTooNew):
        await repos.schema.migrate()


async def _take(feed: ChangeFeed, token: str | None, n: int) -> list[Any]:
    stop = asyncio.Event()
    got = []
    async for change in feed.changes(token, stop=stop):
        got.append(change)
        if len(got) == n:
            stop.set()
            break
    return got


@pytest.mark.parametrize("kind", ["stream", "polling"])
async def test_change_feeds_deliver_and_resume(repos: Repositories, kind: str) -> None:
    store = repos.store
    feed: ChangeFeed = (
        ChangeStreamFeed(store, "events", interval_s=0.05)
        if kind == "stream"
        else PollingFeed(store, "events", order_field="time_ms", interval_s=0.05)
    )
    stop = asyncio.Event()
    changes = feed.changes(None, stop=stop)
    first_task = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.3)  # the feed starts "from now"
    await repos.events.add(job="j", seq=1, kind=EventKind.LOG, fields={})
    first = await asyncio.wait_for(first_task, 10)
    stop.set()
    await changes.aclose()
    assert first.document["seq"] == 1
    for seq in (2, 3):
        await repos.events.add(job="j", seq=seq, kind=EventKind.LOG, fields={})
    resumed = await asyncio.wait_for(_take(feed, first.token, 2), 10)
    assert [c.document["seq"] for c in resumed] == [2, 3]
    await repos.feed_state.save("events", resumed[-1].token)
    assert await repos.feed_state.load("events") == resumed[-1].token


async def test_open_change_feed_prefers_streams_on_nx_27017(repos: Repositories) -> None:
    feed = await open_change_feed(repos.store, "events", order_field="time_ms", poll_interval_s=0.1)
    assert isinstance(feed, ChangeStreamFeed)
