"""The benchmark harness writes the documented record fields and a table; peers' memory is theirs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def harness(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    return importlib.import_module("harness")


def test_report_has_documented_fields(harness: ModuleType, tmp_path: Path) -> None:
    records = [
        harness.Record("io/read", 512.0, "MB/s", ratio_to_limit=3.2, limit="memory_bandwidth"),
        harness.Record(
            "ctf/fit",
            30.0,
            "micrographs/min",
            peer="ASPIRE",
            ratio_to_peer=2.5,
            accuracy=0.4,
            accuracy_unit="% defocus",
        ),
    ]
    json_path, md_path = harness.write_report(records, {"memory_bandwidth_GBps": 10.0}, tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["machine"]["memory_bandwidth_GBps"] == 10.0
    first, second = payload["records"]
    assert first == {
        "name": "io/read",
        "value": 512.0,
        "unit": "MB/s",
        "ratio_to_limit": 3.2,
        "limit": "memory_bandwidth",
    }
    assert second["peer"] == "ASPIRE"
    assert second["ratio_to_peer"] == 2.5
    assert second["accuracy_unit"] == "% defocus"
    table = md_path.read_text()
    assert "| io/read | 512 | MB/s | 3.2 (memory_bandwidth) |" in table
    assert "| ctf/fit | 30 | micrographs/min |  | ASPIRE | 2.5 | 0.4 % defocus |" in table


def test_peer_process_peak_memory_is_its_own(harness: ModuleType) -> None:
    alloc_MB = 200
    code = (
        f"b = bytearray({alloc_MB} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('ok')"
    )
    result = harness.run_process([sys.executable, "-c", code])
    assert result.returncode == 0
    assert result.output.strip() == "ok"
    assert alloc_MB <= result.peak_rss_MB < alloc_MB + 100
    small = harness.run_process([sys.executable, "-c", "print('small')"])
    assert small.peak_rss_MB < alloc_MB  # not the maximum over every child so far


def test_peer_process_cpu_time_is_its_own(harness: ModuleType) -> None:
    busy = "import time\nwhile time.process_time() < 0.5: pass"
    result = harness.run_process([sys.executable, "-c", busy])
    assert result.returncode == 0
    assert 0.5 <= result.cpu_s < 5.0
    idle = harness.run_process([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert idle.cpu_s < 0.5 <= idle.wall_s  # sleeping costs wall time, not CPU time


def test_timed_returns_the_result_and_its_resident_peak(harness: ModuleType) -> None:
    import numpy as np

    held = np.ones(10_000_000)  # touched before the call: not part of its peak
    result, seconds, peak_MB = harness.timed(lambda: float(np.ones(5_000_000).sum()))
    assert result == 5_000_000.0
    assert seconds > 0
    # the 40e6-byte float64 buffer (38.1 MiB), freed before the call returns
    assert 37.0 <= peak_MB < 43
    del held
    assert harness.peak_traced_MB(lambda: np.zeros(1_000_000)) >= 8
