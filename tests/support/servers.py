"""Start real servers on loopback on free ports, wait until they answer, stop them cleanly.

Each server is a child process (nx-27017, moto) with its log kept in the test's temporary folder;
a failure to start raises with the tail of that log so the cause is visible in the test report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Block until ``port`` accepts connections, or raise with the server's log tail."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    msg = f"server {proc.args!r} did not listen on port {port} (exit {proc.poll()}):\n{tail}"
    raise RuntimeError(msg)


def _executable(name: str) -> str:
    """The console script ``name`` installed beside the running interpreter."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        msg = f"{name} is not installed (run `make test`, which installs the dev extras)"
        raise RuntimeError(msg)
    return found


@contextlib.contextmanager
def run_server(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` as a server on ``port``; terminate (then kill) it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, log)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass(frozen=True)
class MongoServer:
    """An nx-27017 MongoDB-wire server."""

    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        # nx-27017 is a standalone server: no replica set, direct connection.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"


@contextlib.contextmanager
def mongo_server(workdir: Path) -> Iterator[MongoServer]:
    """nx-27017 with one SQLite file per logical database under ``workdir/data``."""
    port = free_port()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _executable("nx-27017"),
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-file",
        str(workdir / "nx-27017.log"),
        "--pid-file",
        str(workdir / "nx-27017.pid"),
    ]
    with run_server(argv, port, workdir / "stdout.log") as proc:
        yield MongoServer(port=port, data_dir=data_dir, proc=proc)


@dataclass(frozen=True)
class S3Server:
    """moto's standalone S3 server."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    """moto_server bound to loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [_executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with run_server(argv, port, workdir / "moto.log") as proc:
        yield S3Server(port=port, proc=proc)
