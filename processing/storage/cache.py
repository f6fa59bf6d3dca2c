"""A node-local SSD cache for input files, shared by the worker processes of one node.

Files are kept under ``root/<namespace>/<key>`` up to ``quota_bytes``; the least recently used
are evicted first. A file in use holds a shared ``flock``; eviction takes an exclusive,
non-blocking lock, so a file that a running job reads is never evicted (also across processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from cryokube.processing.storage.base import StorageError
from cryokube.processing.storage.paths import confine_key

TEMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"


class LocalCache:
    """An LRU cache of whole files with a size quota (bytes)."""

    def __init__(self, root: Path | str, *, quota_bytes: int) -> None:
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes

    def _path(self, namespace: str, key: str) -> Path:
        ns = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        return self.root / ns / confine_key(key)

    def _entries(self) -> list[Path]:
        files = []
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                if not name.startswith(TEMP_PREFIX) and not name.endswith(LOCK_SUFFIX):
                    files.append(Path(dirpath, name))
        return files

    def used_bytes(self) -> int:
        """Bytes held by cached files."""
        total = 0
        for path in self._entries():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def _make_room(self, size: int) -> None:
        if size > self.quota_bytes:
            raise StorageError(f"file of {size} bytes exceeds the cache quota {self.quota_bytes}")
        entries = []
        for path in self._entries():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                entries.append((st.st_mtime_ns, st.st_size, path))
        used = sum(e[1] for e in entries)
        for _mtime, nbytes, path in sorted(entries):
            if used + size <= self.quota_bytes:
                return
            if self._try_evict(path):
                used -= nbytes
        if used + size > self.quota_bytes:
            msg = (
                f"cannot fit {size} bytes in the cache at {self.root}: {used} of "
                f"{self.quota_bytes} bytes are held by running jobs"
            )
            raise StorageError(msg)

    @staticmethod
    def _try_evict(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing releases the lock
        return True

    @staticmethod
    def _lock_shared(path: Path) -> int | None:
        """Open ``path`` with a shared lock; None if it vanished meanwhile (evicted)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def get(
        self, namespace: str, key: str, *, size: int, fetch: Callable[[Path], None]
    ) -> Iterator[Path]:
        """Yield a local path holding ``key``, fetching it with ``fetch(dest)`` on a miss.

        ``namespace`` separates sources (for example ``s3://bucket/prefix``); ``size`` is the
        object's size in bytes, used to make room before fetching.
        """
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._lock_shared(path)
        if fd is None:
            # One process fetches a key at a time; the others wait on the key's lock file.
            with open(path.with_name(path.name + LOCK_SUFFIX), "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                fd = self._lock_shared(path)
                if fd is None:
                    self._make_room(size)
                    tmp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
                    try:
                        fetch(tmp)
                        fd = os.open(tmp, os.O_RDONLY)
                        fcntl.flock(fd, fcntl.LOCK_SH)
                        os.replace(tmp, path)
                    finally:
                        tmp.unlink(missing_ok=True)
        try:
            os.utime(path)  # most recently used
            yield path
        finally:
            os.close(fd)
