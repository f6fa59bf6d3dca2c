"""Atomic file output: write under a temporary name in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """True for the name of a file :func:`atomic_path` has not published yet."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def temporaries_of(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files :func:`atomic_path` left beside ``path`` (a killed writer's)."""
    target = Path(path)
    prefix = f".{target.name}."
    if not target.parent.is_dir():
        return []
    return sorted(
        tmp
        for tmp in target.parent.iterdir()
        if tmp.name.startswith(prefix)
        and tmp.name.endswith(TEMP_SUFFIX)
        # mkstemp's random part has no dot: ".a.npz.x1y2.tmp" is not a temporary of "a"
        and "." not in tmp.name[len(prefix) : -len(TEMP_SUFFIX)]
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Readers never see a half-written file: the data are flushed to disk and the
    temporary file replaces ``path`` with :func:`os.replace` (atomic on POSIX within one
    file system, which is why the temporary name lives in the same folder). On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
