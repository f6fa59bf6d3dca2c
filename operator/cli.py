"""The ``cryokube`` command line: the workstation runner for the same manifests as a cluster.

``cryokube apply -f FILE --wait`` validates and stores Project and Job manifests and runs them
to the end with progress bars; ``cryokube up`` keeps a runner (and the metadata service with
its console) going for manifests applied later; ``get jobs``, ``logs``, ``cancel`` and ``demo``
do what their names say. State lives in ``--state`` (default ``$CRYOKUBE_STATE`` or
``./.cryokube``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from cryokube.operator.local.controller import LocalController
from cryokube.operator.local.store import ManifestError, ResourceStore, load_manifests
from cryokube.operator.status import TERMINAL_PHASES

BAR_WIDTH = 24


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state or os.environ.get("CRYOKUBE_STATE") or ".cryokube")


def _ready(body: dict[str, Any]) -> dict[str, Any]:
    for cond in body.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def job_rows(store: ResourceStore, namespace: str | None = None) -> list[dict[str, Any]]:
    """One row per Job: the printer columns of ``kubectl get cjob``, plus the Ready reason."""
    rows = []
    bodies = sorted(
        store.list("Job", namespace),
        key=lambda b: (b["metadata"].get("creationTimestamp", ""), b["metadata"]["name"]),
    )
    for body in bodies:
        status = body.get("status", {})
        ready = _ready(body)
        rows.append(
            {
                "namespace": body["metadata"]["namespace"],
                "name": body["metadata"]["name"],
                "type": body["spec"]["type"],
                "phase": status.get("phase") or "Unknown",
                "progress": status.get("progressPercent"),
                "gpus": status.get("gpus", 0),
                "reason": ready.get("reason", ""),
                "message": ready.get("message", ""),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]], *, wide: bool = False) -> str:
    """Rows as aligned columns (NAME TYPE PHASE PROGRESS GPUS [REASON MESSAGE])."""
    header = ["NAMESPACE", "NAME", "TYPE", "PHASE", "PROGRESS", "GPUS"]
    if wide:
        header += ["REASON", "MESSAGE"]
    table = [header]
    for r in rows:
        line = [r["namespace"], r["name"], r["type"], r["phase"],
                "" if r["progress"] is None else f"{r['progress']}%", str(r["gpus"])]  # fmt: skip
        if wide:
            line += [r["reason"], r["message"]]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def progress_bar(row: dict[str, Any]) -> str:
    """``name  [#####-----]  42%  Running`` (100% once Succeeded)."""
    pct = 100 if row["phase"] == "Succeeded" else int(row["progress"] or 0)
    filled = BAR_WIDTH * pct // 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    detail = (
        row["phase"]
        if row["phase"] not in {"Waiting", "Failed"}
        else (f"{row['phase']}: {row['reason']}")
    )
    return f"{row['name']:<20} [{bar}] {pct:>3}%  {detail}"


class ProgressDisplay:
    """Progress bars for every Job: redrawn in place on a terminal, else printed on change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._lines: list[str] = []

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        lines = [progress_bar(r) for r in rows]
        if self.tty:
            if self._lines:
                self.out.write(f"\x1b[{len(self._lines)}F")
            self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        else:
            old = set(self._lines)
            self.out.write("".join(f"{line}\n" for line in lines if line not in old))
        self.out.flush()
        self._lines = lines


async def run_until_idle(
    store: ResourceStore, state: Path, *, slots: int, out: TextIO, interval_s: float = 0.5
) -> list[dict[str, Any]]:
    """Run every stored Job to a final phase in this process; return the final rows."""
    controller = LocalController(store, slots=slots, log_dir=state / "logs")
    display = ProgressDisplay(out)
    try:
        while True:
            active = await controller.reconcile_once()
            display.update(job_rows(store))
            if not active:
                break
            await asyncio.sleep(interval_s)
    finally:
        await controller.stop()
    return job_rows(store)


def cmd_apply(args: argparse.Namespace) -> int:
    state = _state_dir(args)
    store = ResourceStore(state)
    try:
        documents = load_manifests([Path(f) for f in args.filename])
        for document in documents:
            body = store.apply(document)
            print(f"{body['kind'].lower()}.cryokube.io/{body['metadata']['name']} configured")
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.wait:
        return 0
    rows = asyncio.run(run_until_idle(store, state, slots=args.slots, out=sys.stdout))
    failed = [r for r in rows if r["phase"] != "Succeeded"]
    for r in failed:
        print(f"{r['name']}: {r['phase']} ({r['reason']}): {r['message']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_get(args: argparse.Namespace) -> int:
    rows = job_rows(ResourceStore(_state_dir(args)), args.namespace)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, wide=args.output == "wide"))
    return 0


def _job_body(store: ResourceStore, namespace: str, name: str) -> dict[str, Any] | None:
    return store.get("Job", namespace, name)


def cmd_logs(args: argparse.Namespace) -> int:
    state = _state_dir(args)
    store = ResourceStore(state)
    if _job_body(store, args.namespace, args.job) is None:
        print(f"error: job {args.namespace}/{args.job} not found", file=sys.stderr)
        return 1
    logs = sorted((state / "logs").glob(f"{args.job}-*.log"))
    offsets = dict.fromkeys(logs, 0)
    while True:
        for path in sorted((state / "logs").glob(f"{args.job}-*.log")):
            with path.open() as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
                offsets[path] = f.tell()
            sys.stdout.write(chunk)
        sys.stdout.flush()
        body = _job_body(store, args.namespace, args.job) or {}
        if not args.follow or body.get("status", {}).get("phase") in TERMINAL_PHASES:
            return 0
        time.sleep(0.5)


def cmd_cancel(args: argparse.Namespace) -> int:
    store = ResourceStore(_state_dir(args))
    try:
        store.patch_spec("Job", args.namespace, args.job, {"cancel": True})
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"job.cryokube.io/{args.job} cancel requested")
    return 0


async def serve(state: Path, *, port: int, mongo_port: int, slots: int) -> None:
    """The metadata service and the local controller, until cancelled."""
    from cryokube.operator.local.service import load_secrets, local_service

    store = ResourceStore(state)
    async with local_service(state, store, port=port, mongo_port=mongo_port) as (url, link):
        controller = LocalController(
            store, slots=slots, link=link, metadata_url=url, log_dir=state / "logs"
        )
        login = f"{url}/login?token={load_secrets(state).login_token}"
        print(f"cryokube up: console at {login} (state {state.resolve()})")
        print(f"apply manifests with `cryokube --state {state} apply -f FILE`; Ctrl-C stops")
        await controller.run(interval_s=0.5)


def cmd_up(args: argparse.Namespace) -> int:
    state = _state_dir(args)
    try:
        asyncio.run(serve(state, port=args.port, mongo_port=args.mongo_port, slots=args.slots))
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cryokube.operator.local import demo

    return demo.run(state=_state_dir(args), size=args.size, slots=args.slots, out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryokube", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--state", help="state folder (default $CRYOKUBE_STATE or ./.cryokube)")
    sub = parser.add_subparsers(dest="command", required=True)

    apply = sub.add_parser("apply", help="validate and store Project/Job manifests")
    apply.add_argument("-f", "--filename", action="append", required=True,
                       help="manifest file or folder of *.yaml (repeatable)")  # fmt: skip
    apply.add_argument("--wait", action="store_true",
                       help="run the Jobs here until all end; exit 1 if any did not succeed")  # fmt: skip
    apply.add_argument("--slots", type=int, default=1, help="Jobs that may run at once")

    get = sub.add_parser("get", help="list resources")
    get.add_argument("resource", choices=["jobs", "job", "cjob"])
    get.add_argument("-n", "--namespace", default=None)
    get.add_argument("-o", "--output", choices=["table", "wide", "json"], default="table")

    for name, text in (("logs", "print a Job's worker logs"), ("cancel", "cancel a Job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job")
        p.add_argument("-n", "--namespace", default="default")
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true", help="until the Job ends")

    up = sub.add_parser("up", help="serve the metadata service and run Jobs as they are applied")
    up.add_argument("--slots", type=int, default=1, help="Jobs that may run at once")
    up.add_argument("--port", type=int, default=8080, help="service and console port (loopback)")
    up.add_argument("--mongo-port", type=int, default=27817, help="embedded nx-27017 port")

    demo = sub.add_parser("demo", help="run the whole pipeline on simulated movies")
    demo.add_argument("--size", choices=["small", "default"], default="default")
    demo.add_argument("--slots", type=int, default=1, help="Jobs that may run at once")
    return parser


COMMANDS = {
    "apply": cmd_apply,
    "get": cmd_get,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "up": cmd_up,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cryokube`` command."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
