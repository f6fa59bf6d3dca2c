"""Durable, ordered, idempotent reporting from a worker to the metadata service.

Every report (log line, progress, image, output registration, exposure, completion) is first
appended to a spool file with a sequence number, then sent by a background thread in order,
with exponential backoff while the service is unreachable. The service treats a replayed
sequence number as a no-op, so a report is never lost (it is on disk before it is sent) and
never duplicated (a resend after a crash or a retried pod carries the same number). The spool
lives in the job's folder, so a retried pod continues the numbering and resends what its
predecessor had not delivered.

The wire contract is the metadata service's worker RPC (``docs/metadata.md``):
``POST {url}/rpc/v1/jobs/{uid}/{endpoint}`` with ``Authorization: Bearer <job token>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPOOL_NAME = "events.jsonl"
ACKED_NAME = "events.acked"
ENDPOINTS = ("heartbeat", "progress", "events", "images", "outputs", "exposures", "complete")
SEQ_ENDPOINTS = {"progress", "events", "images"}
"""Endpoints whose body carries ``seq`` (the others are idempotent by name or outcome)."""


class PermanentReportError(RuntimeError):
    """The service refused a report for good (4xx other than 408/429): resending cannot help."""


@dataclass
class _Entry:
    seq: int
    endpoint: str
    body: dict[str, Any]


class Reporter:
    """Spool reports to ``spool_dir`` and deliver them to ``url`` (no URL: spool only).

    Parameters
    ----------
    spool_dir : Path
        Folder for the spool (the job's folder on project storage, or a local folder).
    url : str or None
        Base URL of the metadata service, e.g. ``http://cryokube-metadata:8080``.
    job_uid, token : str
        The job's id in the service and its job token.
    max_backoff_s : float
        Longest wait between delivery attempts while the service is down.
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        url: str | None,
        job_uid: str,
        token: str | None,
        max_backoff_s: float = 10.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.url = url.rstrip("/") if url else None
        self.job_uid = job_uid
        self.token = token
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._spool = self.spool_dir / SPOOL_NAME
        self._acked_path = self.spool_dir / ACKED_NAME
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries = self._load()
        self._next_seq = self._entries[-1].seq + 1 if self._entries else 0
        self._acked = self._load_acked()
        self._closed = False
        self._failed: PermanentReportError | None = None
        self._thread: threading.Thread | None = None
        if self.url:
            self._thread = threading.Thread(target=self._deliver_loop, daemon=True)
            self._thread.start()

    # -- spool ---------------------------------------------------------------------------
    def _load(self) -> list[_Entry]:
        entries: list[_Entry] = []
        if not self._spool.exists():
            return entries
        with self._spool.open() as f:
            for line in f:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a crash: it was never acknowledged, drop it
                entries.append(_Entry(raw["seq"], raw["endpoint"], raw["body"]))
        return entries

    def _load_acked(self) -> int:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self._acked_path.read_text().strip())
        return -1

    def _store_acked(self, seq: int) -> None:
        tmp = self._acked_path.with_suffix(".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self._acked_path)

    def report(self, endpoint: str, body: dict[str, Any]) -> int:
        """Spool one report and return its sequence number (delivery is asynchronous)."""
        if endpoint not in ENDPOINTS or endpoint == "heartbeat":
            raise ValueError(f"endpoint must be one of {ENDPOINTS[1:]}, got {endpoint!r}")
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            if endpoint in SEQ_ENDPOINTS:
                body = {**body, "seq": seq}
            entry = _Entry(seq, endpoint, body)
            line = json.dumps({"seq": seq, "endpoint": endpoint, "body": body}) + "\n"
            with self._spool.open("a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._entries.append(entry)
            self._wake.notify_all()
        return seq

    # -- convenience ---------------------------------------------------------------------
    def log(self, message: str, *, level: str = "info") -> int:
        """Spool a log line; it also goes to stderr, so ``kubectl logs`` shows it."""
        log.log(logging.getLevelName(level.upper()), "%s", message)
        return self.report("events", {"kind": "log", "level": level, "message": message})

    def progress(self, fraction: float, message: str = "") -> int:
        return self.report(
            "progress", {"fraction": min(max(fraction, 0.0), 1.0), "message": message}
        )

    def heartbeat(self, node: str | None = None) -> bool:
        """Send one heartbeat now (not spooled: only the latest matters); True if delivered."""
        if not self.url:
            return False
        try:
            self._post("heartbeat", {"node": node})
        except (OSError, PermanentReportError):
            return False
        return True

    @property
    def pending(self) -> int:
        """Reports spooled but not yet acknowledged."""
        with self._lock:
            return sum(1 for e in self._entries if e.seq > self._acked)

    # -- delivery ------------------------------------------------------------------------
    def _post(self, endpoint: str, body: dict[str, Any]) -> None:
        assert self.url is not None
        request = urllib.request.Request(
            f"{self.url}/rpc/v1/jobs/{self.job_uid}/{endpoint}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise OSError(f"{endpoint}: HTTP {exc.code} {detail}") from None
            raise PermanentReportError(f"{endpoint}: HTTP {exc.code} {detail}") from None

    def _deliver_loop(self) -> None:
        backoff = 0.1
        while True:
            with self._lock:
                while not self._closed and all(e.seq <= self._acked for e in self._entries):
                    self._wake.wait()
                todo = [e for e in self._entries if e.seq > self._acked]
                if not todo and self._closed:
                    return
            for entry in todo:
                try:
                    self._post(entry.endpoint, entry.body)
                except PermanentReportError as exc:
                    log.error("metadata service refused report %d: %s", entry.seq, exc)
                    with self._lock:
                        self._failed = exc
                        self._closed = True
                        self._wake.notify_all()
                    return
                except OSError as exc:
                    log.warning(
                        "metadata service unreachable (%s); retrying in %.1fs", exc, backoff
                    )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    break
                backoff = 0.1
                with self._lock:
                    self._acked = entry.seq
                    self._store_acked(entry.seq)
                    self._wake.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every spooled report is delivered; False on timeout (nothing is lost)."""
        if not self.url:
            return True
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while any(e.seq > self._acked for e in self._entries):
                if self._failed is not None:
                    raise self._failed
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the delivery thread (undelivered reports stay in the spool)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
