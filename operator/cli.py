"""The ``cryokube`` command line: local runner, manifests and the demo."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cryokube`` command."""
    parser = argparse.ArgumentParser(prog="cryokube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the main pipeline on simulated data")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(
            "cryokube demo: the local runner and the pipeline jobs are not built yet "
            "(see the local-runner issue); nothing was run."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
