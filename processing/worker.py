"""The ``cryokube-worker`` command that every job pod runs."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cryokube-worker``."""
    parser = argparse.ArgumentParser(prog="cryokube-worker", description=__doc__)
    parser.add_subparsers(dest="command", required=True).add_parser("run", help="run one job")
    parser.parse_args(argv)
    print("cryokube-worker: the worker runtime is not built yet (job-catalog issue)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
