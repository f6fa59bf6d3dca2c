"""Project storage: path confinement, atomic POSIX writes, S3 (real moto server), SSD cache."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryokube.processing.storage import (
    LocalCache,
    PosixStorage,
    S3Storage,
    StorageError,
    StoragePathError,
    confine_key,
)
from support import servers


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b.mrc", "a/b.mrc"), ("a//b/./c", "a/b/c"), ("./x", "x")],
)
def test_confine_key_normalises(key: str, expected: str) -> None:
    assert confine_key(key) == expected


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "a\\b", "a\x00b", "a/.."])
def test_confine_key_rejects_escapes(key: str) -> None:
    with pytest.raises(StoragePathError) as err:
        confine_key(key)
    assert repr(key) in str(err.value)


def test_posix_round_trip_and_listing(tmp_path: Path) -> None:
    store = PosixStorage(tmp_path)
    store.write_bytes("motion/a.bin", b"abc")
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 1000)
    store.put_file(local, "motion/sub/b.bin")
    (tmp_path / "motion" / ".c.bin.x1y2.tmp").write_bytes(b"partial")
    assert store.list("motion") == ["motion/a.bin", "motion/sub/b.bin"]
    assert store.read_bytes("motion/a.bin") == b"abc"
    with store.local_copy("motion/sub/b.bin") as path:
        assert path.read_bytes() == b"x" * 1000
    store.delete("motion/a.bin")
    assert not store.exists("motion/a.bin")
    with pytest.raises(StorageError, match=r"motion/a\.bin"):
        store.read_bytes("motion/a.bin")


def test_posix_rejects_symlink_out_of_root(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_bytes(b"secret")
    (root / "link").symlink_to(outside)
    (root / "inside").mkdir()
    (root / "ok").symlink_to(root / "inside")
    store = PosixStorage(root)
    with pytest.raises(StoragePathError, match="outside the project root"):
        store.read_bytes("link/key")
    with pytest.raises(StoragePathError):
        store.write_bytes("link/new", b"x")
    assert not (outside / "new").exists()
    store.write_bytes("ok/file", b"fine")
    assert (root / "inside" / "file").read_bytes() == b"fine"


def test_posix_failed_write_leaves_old_object(tmp_path: Path) -> None:
    store = PosixStorage(tmp_path)
    store.write_bytes("a.bin", b"old")
    with pytest.raises(TypeError):
        store.write_bytes("a.bin", "not bytes")  # type: ignore[arg-type]
    assert store.read_bytes("a.bin") == b"old"
    assert store.list() == ["a.bin"]


def test_posix_discard_partial_that_cannot_remove_is_a_storage_error(tmp_path: Path) -> None:
    """What the checkpoint start logs as a warning: a StorageError naming the leftover."""
    store = PosixStorage(tmp_path)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / ".a.npz.q1w2e3.tmp").mkdir()  # unlink fails on it, as on a read-only share
    store.write_bytes("ck/.b.npz.r4t5y6.tmp", b"partial")  # another key's: not touched
    with pytest.raises(StorageError, match=r"^ck/a\.npz: cannot remove .*\.a\.npz\.q1w2e3\.tmp"):
        store.discard_partial("ck/a.npz")
    assert (tmp_path / "ck" / ".b.npz.r4t5y6.tmp").exists()


@pytest.mark.s3
def test_s3_multipart_round_trip_through_cache(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    cache = LocalCache(tmp_path / "ssd", quota_bytes=64 * 1024 * 1024)
    store = S3Storage(
        s3_client,
        s3_bucket,
        "lab-a/apoferritin",
        cache=cache,
        multipart_threshold_bytes=5 * 1024 * 1024,
    )
    data = os.urandom(12 * 1024 * 1024 + 17)
    local = tmp_path / "movie.tif"
    local.write_bytes(data)
    store.put_file(local, "import/movie.tif")
    head = s3_client.head_object(Bucket=s3_bucket, Key="lab-a/apoferritin/import/movie.tif")
    assert "-" in head["ETag"]  # a multipart ETag: the upload really went in parts
    with store.local_copy("import/movie.tif") as path:
        assert path.is_relative_to(tmp_path / "ssd")
        assert path.read_bytes() == data
    store.write_bytes("import/notes.txt", b"hello")
    assert store.list("import") == ["import/movie.tif", "import/notes.txt"]
    assert store.read_bytes("import/notes.txt") == b"hello"
    assert cache.used_bytes() == len(data) + 5
    store.delete("import/notes.txt")
    assert not store.exists("import/notes.txt")


@pytest.mark.s3
def test_s3_detects_corrupt_object_and_confines_keys(s3_client: Any, s3_bucket: str) -> None:
    store = S3Storage(s3_client, s3_bucket, "p")
    s3_client.put_object(
        Bucket=s3_bucket, Key="p/bad.bin", Body=b"data", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(StorageError, match="checksum mismatch"), store.local_copy("bad.bin"):
        pass
    with pytest.raises(StoragePathError):
        store.write_bytes("../other-project/x", b"x")
    with pytest.raises(StorageError, match="no such object"), store.local_copy("missing.bin"):
        pass


@pytest.mark.s3
def test_s3_missing_bucket_or_object_is_a_storage_error_naming_the_url(
    s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Every call fails with StorageError naming the s3:// URL, never a raw botocore error."""
    local = tmp_path / "a.bin"
    local.write_bytes(b"a")
    gone = S3Storage(s3_client, f"{s3_bucket}-gone", "p")
    url = re.escape(f"s3://{s3_bucket}-gone/p/")
    calls = [
        lambda: gone.write_bytes("x/a.bin", b"a"),
        lambda: gone.put_file(local, "x/a.bin"),
        lambda: gone.list("x"),
        lambda: gone.delete("x/a.bin"),
        lambda: gone.discard_partial("x/a.bin"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match=f"^{url}x(/a\\.bin)?: no such bucket$"):
            call()
    store = S3Storage(s3_client, s3_bucket, "p")
    s3_client.put_object(Bucket=s3_bucket, Key="p/a.bin", Body=b"a")
    s3_client.delete_object(Bucket=s3_bucket, Key="p/a.bin")
    with pytest.raises(StorageError, match=f"^s3://{s3_bucket}/p/a\\.bin: no such object$"):
        store.read_bytes("a.bin")
    # the object goes between the HEAD and the GET: the download's own 404
    with pytest.raises(StorageError, match=f"^s3://{s3_bucket}/p/a\\.bin: no such object$"):
        store._download("a.bin", None, tmp_path / "b.bin")


@pytest.mark.s3
def test_s3_discard_partial_aborts_the_key_s_incomplete_uploads(
    s3_client: Any, s3_bucket: str
) -> None:
    """A writer killed during a multipart upload leaves parts that S3 keeps (and bills)."""
    store = S3Storage(s3_client, s3_bucket, "p")
    for key in ("p/job/checkpoints/iteration.npz", "p/job/checkpoints/iteration.npz.old"):
        upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=key)
        s3_client.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100
        )
    store.discard_partial("job/checkpoints/iteration.npz")
    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["p/job/checkpoints/iteration.npz.old"]
    assert store.list() == []


@contextlib.contextmanager
def s3_with_iam(workdir: Path, allowed_actions: list[str]) -> Iterator[tuple[Any, str]]:
    """A bucket holding ``p/a.bin`` on a moto server of its own that enforces IAM, and a client
    of a user allowed only ``allowed_actions`` (``s3:GetObject``, ...); the shared server stays
    open."""
    import boto3

    with servers.s3_server(workdir) as server:

        def client(service: str, key_id: str = "testing", secret: str = "testing") -> Any:
            return boto3.client(
                service,
                endpoint_url=server.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )

        client("s3").create_bucket(Bucket="locked")
        client("s3").put_object(Bucket="locked", Key="p/a.bin", Body=b"a")
        iam = client("iam")
        iam.create_user(UserName="worker")
        if allowed_actions:
            statement = {"Effect": "Allow", "Action": allowed_actions, "Resource": "*"}
            iam.put_user_policy(
                UserName="worker",
                PolicyName="worker",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
            )
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        request = urllib.request.Request(
            f"{server.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
        yield client("s3", key["AccessKeyId"], key["SecretAccessKey"]), "locked"


@pytest.fixture
def s3_denied(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """:func:`s3_with_iam` for a user with no policy."""
    with s3_with_iam(tmp_path / "moto-auth", []) as denied:
        yield denied


@pytest.mark.s3
def test_s3_denied_access_is_a_storage_error_naming_the_url(
    s3_denied: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = s3_denied
    store = S3Storage(client, bucket, "p")
    local = tmp_path / "a.bin"
    local.write_bytes(b"a")
    calls = [
        store.exists,
        store.read_bytes,
        lambda key: store.write_bytes(key, b"b"),
        lambda key: store.put_file(local, key),
        store.delete,
    ]
    for call in calls:
        with pytest.raises(StorageError, match=r"^s3://locked/p/a\.bin: access denied \("):
            call("a.bin")
    with pytest.raises(StorageError, match=r"^s3://locked/p/x: access denied \("):
        store.list("x")


def _fill(n: int) -> Any:
    return lambda dest: dest.write_bytes(b"x" * n)


def test_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path, quota_bytes=300)
    for key in ("a", "b", "c"):
        with cache.get("ns", key, size=100, fetch=_fill(100)):
            pass
        time.sleep(0.01)
    with cache.get("ns", "a", size=100, fetch=_fill(100)):  # hit: a becomes most recent
        pass
    with cache.get("ns", "d", size=100, fetch=_fill(100)):
        pass
    cached = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "lock" not in p.name)
    assert cached == ["a", "c", "d"]
    assert cache.used_bytes() == 300


def test_cache_never_evicts_a_file_in_use(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path, quota_bytes=200)
    with cache.get("ns", "in-use", size=100, fetch=_fill(100)) as held:
        with cache.get("ns", "other", size=100, fetch=_fill(100)):
            pass
        with cache.get("ns", "third", size=100, fetch=_fill(100)):  # evicts "other"
            pass
        assert held.exists()
        with (
            pytest.raises(StorageError, match="held by running jobs"),
            cache.get("ns", "big", size=150, fetch=_fill(150)),
        ):
            pass


def test_cache_lock_holds_across_processes(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path, quota_bytes=100)
    with cache.get("ns", "a", size=100, fetch=_fill(100)) as path:
        held_path = path
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(held_path)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with (
            pytest.raises(StorageError, match="held by running jobs"),
            cache.get("ns", "b", size=100, fetch=_fill(100)),
        ):
            pass
        assert held_path.exists()
    finally:
        proc.communicate("")
    with cache.get("ns", "b", size=100, fetch=_fill(100)):
        pass
    assert not held_path.exists()
