"""The ``cryokube-worker`` command that every job pod (and every local-runner process) runs.

``cryokube-worker run`` reads the job from the environment (see
:mod:`cryokube.processing.worker.settings`), runs it through
:func:`cryokube.processing.worker.runtime.run_worker`, and exits 0 (success), 2 (bad input:
do not retry) or 1 (transient: retry).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cryokube.processing.worker.runtime import EXIT_BAD_INPUT, run_worker
from cryokube.processing.worker.settings import SettingsError, settings_from_env


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cryokube-worker``."""
    parser = argparse.ArgumentParser(prog="cryokube-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the job described by the CRYOKUBE_* environment")
    run.add_argument("--job", help="job name (must match CRYOKUBE_JOB; shown in ps)")
    run.add_argument("--type", help="job type (must match CRYOKUBE_JOB_TYPE)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_env(os.environ)
        for flag, value, actual in (
            ("--job", args.job, settings.job),
            ("--type", args.type, settings.job_type),
        ):
            if value is not None and value != actual:
                raise SettingsError(f"{flag} {value!r} does not match the environment ({actual!r})")
    except SettingsError as exc:
        print(f"cryokube-worker: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
