"""The storage interface shared by the POSIX and S3 back ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """A storage operation failed (the message names the object)."""


class StoragePathError(ValueError):
    """A path escapes the project root or is not a plain relative path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"path {path!r} is not allowed: {reason}")
        self.path = path


class Storage(Protocol):
    """A project root. Keys are relative POSIX-style paths such as ``motion/mic_0001.mrc``."""

    def exists(self, key: str) -> bool:
        """True if an object (file) exists at ``key``."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys of all objects under ``prefix`` (a folder key), sorted."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key``."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Publish ``data`` at ``key`` atomically: readers see the old object or the new one."""
        ...

    def put_file(self, local_path: Path, key: str) -> None:
        """Publish the local file at ``key`` atomically (large files stream)."""
        ...

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local file holding ``key`` for reading, valid inside the ``with`` block."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (no error if it is absent)."""
        ...

    def discard_partial(self, key: str) -> None:
        """Remove what an interrupted write of ``key`` left behind (the object itself stays).

        Only while no other writer of ``key`` runs, such as a retried pod at its start.
        """
        ...


@contextlib.contextmanager
def as_context(path: Path) -> Iterator[Path]:
    """Wrap a path that needs no cleanup as a context manager."""
    yield path
