"""A project root in an S3 bucket under a prefix (boto3), read through the node-local cache.

Uploads stream in parts (multipart above ``multipart_threshold_bytes``) with a SHA-256 of the
whole file stored in the object's metadata; downloads verify it. boto3's adaptive retry mode
retries throttling and transient errors. Each PUT is atomic in S3: readers never see a partial
object. Every call that fails raises :class:`StorageError` naming the object's ``s3://`` URL and
the reason (no such bucket, no such object, access denied, or S3's own code and message).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryokube.processing.storage.base import StorageError
from cryokube.processing.storage.cache import LocalCache
from cryokube.processing.storage.paths import confine_key

CHUNK_BYTES = 8 * 1024 * 1024
SHA256_METADATA_KEY = "sha256"
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
"""Error codes of a missing object (a HEAD answers a bare 404, without a body)."""


S3_SCHEME = "s3://"
"""Scheme of a project root in a bucket: ``s3://<bucket>/<prefix>``."""


def split_s3_root(root: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of an ``s3://bucket/prefix`` root (prefix may be empty)."""
    bucket, _, prefix = root.removeprefix(S3_SCHEME).partition("/")
    return bucket, prefix


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def make_client(
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    max_attempts: int = 10,
) -> Any:
    """A boto3 S3 client with adaptive retries (credentials from the arguments or the env)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": max_attempts, "mode": "adaptive"})
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


class S3Storage:
    """Objects are ``s3://bucket/prefix/<key>``."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        cache: LocalCache | None = None,
        multipart_threshold_bytes: int = 64 * 1024 * 1024,
        max_concurrency: int = 4,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise ValueError("bucket must not be empty")
        self.client = client
        self.bucket = bucket
        self.prefix = confine_key(prefix, allow_root=True)
        self.cache = cache
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=max(multipart_threshold_bytes, 5 * 1024 * 1024),
            max_concurrency=max_concurrency,
        )

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    @property
    def namespace(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str, *, allow_root: bool = False) -> str:
        clean = confine_key(key, allow_root=allow_root)
        return "/".join(p for p in (self.prefix, clean) if p)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key, allow_root=True)}"

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Raise boto3's errors about ``key`` as :class:`StorageError` naming its URL."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"{self._url(key)}: {_reason(exc)}") from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self._errors(key):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=self._key(key)))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                    return None
                raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix, allow_root=True)
        full = f"{full}/" if full else ""
        strip = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(strip) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        with self.local_copy(key) as path:
            return path.read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                Metadata={SHA256_METADATA_KEY: digest},
            )

    def put_file(self, local_path: Path, key: str) -> None:
        digest = sha256_file(Path(local_path))
        with self._errors(key):
            self.client.upload_file(
                str(local_path),
                self.bucket,
                self._key(key),
                ExtraArgs={"Metadata": {SHA256_METADATA_KEY: digest}},
                Config=self.transfer,
            )

    def _download(self, key: str, expected_sha256: str | None, dest: Path) -> None:
        with self._errors(key):
            self.client.download_file(self.bucket, self._key(key), str(dest), Config=self.transfer)
        if expected_sha256 and sha256_file(dest) != expected_sha256:
            msg = f"{self._url(key)}: checksum mismatch after download (corrupt transfer)"
            raise StorageError(msg)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        head = self._head(key)
        if head is None:
            raise StorageError(f"{self._url(key)}: no such object")
        expected = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        size = int(head["ContentLength"])
        if self.cache is not None:
            # The ETag names the version, so a replaced object is fetched again.
            versioned = f"{self.namespace}@{head.get('ETag', '')}"
            with self.cache.get(
                versioned,
                key,
                size=size,
                fetch=lambda dest: self._download(key, expected, dest),
            ) as path:
                yield path
            return
        with tempfile.TemporaryDirectory(prefix="cryokube-s3-") as tmp:
            dest = Path(tmp) / Path(key).name
            self._download(key, expected, dest)
            yield dest

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def discard_partial(self, key: str) -> None:
        """Abort the incomplete multipart uploads of ``key``: S3 keeps (and bills) their parts."""
        full = self._key(key)
        with self._errors(key):
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=full):
                for upload in page.get("Uploads", []):
                    if upload["Key"] == full:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=full, UploadId=upload["UploadId"]
                        )


def _reason(exc: Exception) -> str:
    """Why an S3 call failed, in words, from the ClientError's code and HTTP status.

    ``upload_file`` raises ``S3UploadFailedError`` while handling the ClientError, so the
    ClientError is looked for in the exception's context too.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        if not isinstance(exc.__context__, ClientError):
            return f"{type(exc).__name__}: {exc}"
        exc = exc.__context__
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return "no such bucket"
    if code in MISSING_CODES:
        return "no such object"
    if code == "AccessDenied" or status == 403:
        return f"access denied ({code})"
    return f"{code}: {error.get('Message') or exc}"
