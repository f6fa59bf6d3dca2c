"""Path confinement: every key stays inside its project root.

Keys are relative POSIX paths. Rejected with :class:`StoragePathError`: empty keys, absolute
paths, ``..`` components, backslashes and NUL bytes, and (for POSIX roots) symbolic links that
resolve outside the root.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from cryokube.processing.storage.base import StoragePathError


def confine_key(key: str, *, allow_root: bool = False) -> str:
    """Validate and normalise a relative key (``a//b/./c`` -> ``a/b/c``)."""
    if not isinstance(key, str):
        raise TypeError(f"storage key must be a string, got {type(key).__name__}")
    if "\x00" in key or "\\" in key:
        raise StoragePathError(key, "contains a NUL byte or a backslash")
    pure = PurePosixPath(key)
    if pure.is_absolute():
        raise StoragePathError(
            key, "absolute paths are not allowed; use a path relative to the project"
        )
    parts = [p for p in pure.parts if p not in ("", ".")]
    if ".." in parts:
        raise StoragePathError(key, "'..' would leave the project root")
    if not parts and not allow_root:
        raise StoragePathError(key, "empty path")
    return "/".join(parts)


def confine_path(root: Path, key: str, *, allow_root: bool = False) -> Path:
    """The absolute path of ``key`` under ``root``, after resolving symbolic links."""
    clean = confine_key(key, allow_root=allow_root)
    root_resolved = root.resolve()
    path = (root_resolved / clean).resolve()
    if path != root_resolved and root_resolved not in path.parents:
        raise StoragePathError(key, f"resolves outside the project root {root} (symbolic link?)")
    return path
