"""The web console: server-rendered pages over the metadata service's services.

:func:`setup_console` adds the console's routes (under ``/console``) and its static files to the
service's application; the app factory calls it. Pages authenticate like the API (proxy headers,
:func:`~cryokube.operator.metadata.auth.user_identity`) and read through the same services, so a
user sees exactly the projects the API shows them.
"""

from cryokube.operator.console.submit import (
    JobSubmitter,
    KubernetesSubmitter,
    LocalStoreSubmitter,
    set_job_submitter,
    setup_kubernetes_submitter,
)
from cryokube.operator.console.views import setup_console

__all__ = [
    "JobSubmitter",
    "KubernetesSubmitter",
    "LocalStoreSubmitter",
    "set_job_submitter",
    "setup_console",
    "setup_kubernetes_submitter",
]
