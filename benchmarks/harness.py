"""Benchmark harness: registry, timing, peak memory, and the report (JSON + Markdown table).

Every figure is reported against something measured in the same run: a machine limit from
:mod:`limits` (``ratio_to_limit`` = measured time / roofline time, so 1.0 is the limit) or a peer
tool on the same inputs (``ratio_to_peer`` = peer time / our time, so above 1 we are faster).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Record:
    """One benchmark figure."""

    name: str
    value: float
    unit: str
    ratio_to_limit: float | None = None
    limit: str | None = None
    peer: str | None = None
    ratio_to_peer: float | None = None
    accuracy: float | None = None
    accuracy_unit: str | None = None
    peak_memory_MB: float | None = None
    notes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


BenchFn = Callable[[dict[str, float]], list[Record]]
REGISTRY: dict[str, BenchFn] = {}


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn(limits) -> [Record, ...]`` under ``name``."""

    def register(fn: BenchFn) -> BenchFn:
        REGISTRY[name] = fn
        return fn

    return register


def best_time_s(fn: Callable[[], object], *, repeat: int = 3, min_time_s: float = 0.0) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    start_all = time.perf_counter()
    n = 0
    while n < repeat or time.perf_counter() - start_all < min_time_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Result, wall seconds and peak memory (MB) of one call of ``fn``.

    The peak is the growth of this process's resident set during the call: ``VmHWM`` after
    resetting it through ``/proc/self/clear_refs`` (Linux 4.0+), minus ``VmRSS`` before, with
    the free heap returned to the system first (glibc ``malloc_trim``), as otherwise buffers
    would reuse pages that earlier code left resident and go uncounted. Unlike
    tracemalloc it adds nothing to the timed call (tracemalloc made a 2048^2 pick 25% slower)
    and it counts what a pod must hold: touched pages, native threads' buffers included.
    """
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap that earlier code left resident
    Path("/proc/self/clear_refs").write_text("5")
    before_kB = _status_kB("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return result, seconds, (_status_kB("VmHWM") - before_kB) / 1024


def _status_kB(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def peak_traced_MB(fn: Callable[[], object]) -> float:
    """Peak Python + numpy heap allocation (MB) during ``fn()``, from tracemalloc (for figures
    timed separately by :func:`best_time_s`; small allocations that reuse freed heap, which a
    resident-set peak would miss, are counted)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


@dataclass
class ProcessResult:
    returncode: int
    wall_s: float
    peak_rss_MB: float
    output: str
    cpu_s: float
    """User plus system CPU seconds of the peer (and of the processes it waited for)."""


# A small intermediary forks the peer and reports the peer's own peak RSS. Linux carries a
# process's high-water mark across execve, so a peer forked straight from a large benchmark
# process would report the benchmark's memory as its own.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600,
) -> ProcessResult:
    """Run a peer command; its wall time, its own peak RSS and CPU time (``wait4`` of that
    child: not the benchmark's, nor that of an install run before it)."""
    with tempfile.TemporaryDirectory(prefix="cryokube-bench-") as tmp:
        usage_file = Path(tmp) / "maxrss_kB_cpu_s"
        t0 = time.perf_counter()
        with subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(usage_file), *argv], cwd=cwd,
            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        ) as proc:  # fmt: skip
            try:
                out, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the peer too, not only the intermediary
                out, _ = proc.communicate()
            code = proc.returncode
        wall = time.perf_counter() - t0
        peak_kB, cpu_s = usage_file.read_text().split() if usage_file.exists() else (0, 0)
    return ProcessResult(code, wall, int(peak_kB) / 1024, out, float(cpu_s))


def write_report(
    records: list[Record], limits: dict[str, float], out_dir: Path
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    md_path = out_dir / "results.md"
    payload = {
        "machine": {"cpus": os.cpu_count(), **limits},
        "records": [r.as_dict() for r in records],
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown_table(records, limits))
    return json_path, md_path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def markdown_table(records: list[Record], limits: dict[str, float]) -> str:
    lines = ["# Benchmark results", "", "Machine limits measured in this run:", ""]
    lines += [f"- `{k}`: {_fmt(v, 4)}" for k, v in limits.items()]
    lines += [
        "",
        (
            "| benchmark | value | unit | ratio to limit (1 = limit) | peer | peer time / ours "
            "| accuracy | peak MB |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        acc = "" if r.accuracy is None else f"{_fmt(r.accuracy)} {r.accuracy_unit or ''}".strip()
        limit = "" if r.ratio_to_limit is None else f"{_fmt(r.ratio_to_limit)} ({r.limit})"
        lines.append(
            f"| {r.name} | {_fmt(r.value, 4)} | {r.unit} | {limit} | {r.peer or ''} "
            f"| {_fmt(r.ratio_to_peer)} | {acc} | {_fmt(r.peak_memory_MB)} |"
        )
    return "\n".join(lines) + "\n"
