"""Paths of the Go-built tools (helm, oauth2-proxy) that scripts/tools.sh installs.

Tests that need a tool fail, never skip, when it is missing: CI runs `make tools` before the
suite, so a missing binary is a broken setup that must be seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"


def tool(name: str) -> Path:
    """Return the path of the built tool ``name``, failing the test with the fix if absent."""
    path = TOOLS_BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not built at {path}: run `make tools` (scripts/tools.sh)")
    return path
