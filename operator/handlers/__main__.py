"""``python -m cryokube.operator.handlers``: run the operator with settings from the environment.

The operator pod's command. It serves every namespace and stops on SIGTERM (kopf finishes the
handlers in flight first).
"""

from __future__ import annotations

import asyncio

from . import OperatorConfig, run

if __name__ == "__main__":
    asyncio.run(run(OperatorConfig.from_env()))
