"""A project root on a POSIX file system (a ReadWriteMany volume shared by all pods)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from cryokube.processing.io.atomic import atomic_path, is_temporary, temporaries_of
from cryokube.processing.storage.base import StorageError, as_context
from cryokube.processing.storage.paths import confine_path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` (kernel-side copy where available), published by a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


class PosixStorage:
    """Objects are files under ``root``; writes are atomic renames within the same folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise StorageError(f"project root {self.root} does not exist or is not a folder")

    def __repr__(self) -> str:
        return f"PosixStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The confined absolute path of ``key``."""
        return confine_path(self.root, key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = confine_path(self.root, prefix, allow_root=True)
        if not base.is_dir():
            return []
        root = self.root.resolve()
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not is_temporary(name):
                    keys.append(Path(dirpath, name).relative_to(root).as_posix())
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{key}: no such object in {self.root}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        atomic_write(self.path(key), data)

    def put_file(self, local_path: Path, key: str) -> None:
        target = self.path(key)
        if Path(local_path).resolve() == target:
            return
        atomic_copy(Path(local_path), target)

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"{key}: no such object in {self.root}")
        return as_context(path)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def discard_partial(self, key: str) -> None:
        """Remove the temporary files of a killed atomic write beside ``key``."""
        try:
            for tmp in temporaries_of(self.path(key)):
                tmp.unlink(missing_ok=True)
        except OSError as error:  # e.g. a read-only or permission-denied share
            raise StorageError(f"{key}: cannot remove {error.filename}: {error.strerror}") from None
