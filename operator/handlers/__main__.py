"""``python -m cryokube.operator.handlers``: run the operator with settings from the environment.

The operator pod's command. It serves the namespaces in ``CRYOKUBE_WATCH_NAMESPACES`` (every
namespace when unset) and stops on SIGTERM (kopf finishes the handlers in flight first).
"""

from __future__ import annotations

import asyncio

from . import OperatorConfig, run

if __name__ == "__main__":
    asyncio.run(run(OperatorConfig.from_env()))
