"""``python -m cryokube.operator.metadata``: serve the metadata service.

Settings come from the environment (see :class:`~.settings.Settings`); ``--host``/``--port`` pick
the listening address. Without ``MONGODB_URI`` the service runs embedded with its data under
``CRYOKUBE_EMBEDDED_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from .app import create_app
from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, read settings and run the app until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m cryokube.operator.metadata")
    parser.add_argument("--host", default="127.0.0.1", help="listening address")
    parser.add_argument("--port", type=int, default=8080, help="listening TCP port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    web.run_app(create_app(Settings.from_env()), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
