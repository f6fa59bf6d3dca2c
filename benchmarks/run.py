"""``make bench``: measure this machine's limits, run every registered benchmark, write the report.

Usage: ``python benchmarks/run.py [-k SUBSTRING] [--out DIR]`` with ``benchmarks/`` on the path.
Benchmark modules are the ``bench_*.py`` files beside this one; each registers functions with
``@harness.benchmark(name)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

import harness
import limits

HERE = Path(__file__).resolve().parent


def load_modules() -> None:
    for path in sorted(HERE.glob("bench_*.py")):
        importlib.import_module(path.stem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", dest="pattern", default="", help="run benchmarks whose name has it")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.json/.md")
    args = parser.parse_args(argv)

    load_modules()
    print("measuring machine limits ...", flush=True)
    machine = limits.measure()
    records: list[harness.Record] = []
    failed = []
    for name, fn in harness.REGISTRY.items():
        if args.pattern not in name:
            continue
        print(f"running {name} ...", flush=True)
        try:
            records.extend(fn(machine))
        except Exception:  # noqa: BLE001 - a broken benchmark is reported, the others still run
            traceback.print_exc()
            failed.append(name)
    json_path, md_path = harness.write_report(records, machine, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    if failed:
        print(f"FAILED benchmarks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
