"""The wheel ships every subpackage, and the installed package imports without the source tree."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PACKAGE_DIRS = {"cryokube.operator": "operator", "cryokube.processing": "processing"}


def source_packages(root: Path) -> set[str]:
    """Every package (folder with ``__init__.py``) under the mapped source folders."""
    found = set()
    for name, folder in PACKAGE_DIRS.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([name, *rel.parts]))
    return found


def source_modules(root: Path) -> list[str]:
    modules = []
    for name, folder in PACKAGE_DIRS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and parts[-1] == "__main__":
                continue
            modules.append(".".join([name, *parts]))
    return modules


def test_pyproject_lists_every_subpackage(repo_root: Path) -> None:
    config = tomllib.loads((repo_root / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert setuptools["package-dir"] == PACKAGE_DIRS
    assert set(setuptools["packages"]) == source_packages(repo_root)


@pytest.mark.slow
def test_wheel_installs_and_imports_every_module(repo_root: Path, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    dist = tmp_path / "dist"
    subprocess.run(
        # sdist first, then the wheel from the sdist: checks both, and leaves no build/ behind
        [str(bin_dir / "uv"), "build", "--out-dir", str(dist), str(repo_root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("cryokube-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([str(bin_dir / "uv"), "venv", "--quiet", str(venv)], check=True)
    subprocess.run(
        [
            str(bin_dir / "uv"),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin/python"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    modules = source_modules(repo_root)
    script = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert 'site-packages' in mod.__file__, mod.__file__\n"
        "print(len(sys.argv))\n"
    )
    # Run outside the repository so the source folders cannot be imported by accident.
    result = subprocess.run(
        [str(venv / "bin/python"), "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for entry_point in ("cryokube", "cryokube-worker"):
        assert (venv / "bin" / entry_point).exists()
