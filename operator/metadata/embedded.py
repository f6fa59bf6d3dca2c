"""Embedded mode: run and supervise an nx-27017 server (MongoDB wire protocol over SQLite).

On a workstation the service needs no MongoDB: it starts ``nx-27017 --data-dir DIR -p PORT
--host 127.0.0.1`` with its data, log and pid files under the persistent ``DIR``, restarts it with
backoff if it exits, and stops it with the app. The pid file must be per data folder: nx-27017's
default (``/tmp/nx_27017.pid``) makes a second server on the same machine refuse to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
MAX_RESTART_DELAY_S = 30.0


def nx_27017_executable() -> str:
    """The ``nx-27017`` console script beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("nx-27017")
    if beside.exists():
        return str(beside)
    found = shutil.which("nx-27017")
    if found is None:
        raise FileNotFoundError("nx-27017 is not installed (pip install nx-27017)")
    return found


class EmbeddedMongo:
    """A supervised nx-27017 process on ``127.0.0.1:port`` storing into ``data_dir``.

    Parameters
    ----------
    data_dir : Path
        Persistent folder: one SQLite file per database, plus ``nx-27017.log`` and ``.pid``.
    port : int
        TCP port on loopback.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.data_dir = Path(data_dir)
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def uri(self) -> str:
        """Connection string of the embedded server (standalone: a direct connection)."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "nx-27017.pid").unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(
            nx_27017_executable(),
            "--data-dir", str(self.data_dir / "db"),
            "-p", str(self.port),
            "--host", "127.0.0.1",
            "--log-file", str(self.data_dir / "nx-27017.log"),
            "--pid-file", str(self.data_dir / "nx-27017.pid"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if proc.returncode is not None:
                break
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return proc
            await asyncio.sleep(0.05)
        await self._terminate(proc)
        msg = f"nx-27017 did not listen on port {self.port}; see {self.data_dir / 'nx-27017.log'}"
        raise RuntimeError(msg)

    async def _supervise(self) -> None:
        delay_s = 0.5
        while True:
            if self._proc is None:
                raise RuntimeError("supervisor started before the server")
            code = await self._proc.wait()
            log.warning("nx-27017 exited with %s; restarting in %.1f s", code, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, MAX_RESTART_DELAY_S)
            try:
                self._proc = await self._spawn()
                self.restarts += 1
            except RuntimeError:
                log.exception("nx-27017 restart failed")

    async def start(self) -> None:
        """Start the server, wait until it listens, and supervise it."""
        self._proc = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="nx-27017-supervisor")

    @staticmethod
    async def _terminate(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def stop(self) -> None:
        """Stop supervising, then terminate the server (SIGTERM, SIGKILL after 10 s)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._proc is not None:
            await self._terminate(self._proc)
