"""Operator start-up and clean-up: kopf settings, configuration and clients in ``memo``.

The operator owns its identity: its finalizer and its progress and diff-base annotations live
under ``cryokube.io`` (not kopf's default ``kopf.zalando.org``), so they read as ours in
``kubectl get -o yaml`` and never collide with another kopf operator on the same objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import prometheus_client
import yaml
from pydantic import ValidationError

from ..kubeclient import api_client
from ..manifests import WorkerConfig
from ..metadata.client import MetadataClient
from ..models import format_validation_error
from ..registration import MetadataLink, NoMetadata, ServiceMetadata


@dataclass(frozen=True)
class OperatorConfig:
    """Settings read once at start-up.

    Attributes
    ----------
    kube_host : str or None
        API server URL to use instead of the in-cluster service account or kubeconfig
        (tests point it at the kmock emulator).
    metadata_url : str or None
        Metadata-service base URL; ``None`` runs without it (:class:`NoMetadata`).
    service_token : str or None
        The metadata service's operator token (``CRYOKUBE_SERVICE_TOKEN``).
    token_secret : str or None
        The metadata service's HMAC key for job tokens (``CRYOKUBE_TOKEN_SECRET``).
    metrics_port : int
        Port of the Prometheus ``/metrics`` endpoint; 0 disables it.
    cluster : bool
        Whether this runs against a real cluster (a Project's local ``storage.path`` is invalid).
    watch_namespaces : tuple of str
        Namespaces (kopf globs) to serve (``CRYOKUBE_WATCH_NAMESPACES``, comma-separated);
        empty: the whole cluster.
    workers : WorkerConfig
        Defaults of every worker pod, read from the YAML file ``CRYOKUBE_WORKER_DEFAULTS``
        names (the chart's ConfigMap); built-in defaults without one.
    """

    kube_host: str | None = None
    metadata_url: str | None = None
    service_token: str | None = field(default=None, repr=False)
    token_secret: str | None = field(default=None, repr=False)
    metrics_port: int = 0
    cluster: bool = True
    watch_namespaces: tuple[str, ...] = ()
    workers: WorkerConfig = field(default_factory=WorkerConfig)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """Read the ``CRYOKUBE_*`` variables named in the attributes (and the defaults file)."""
        port = os.environ.get("CRYOKUBE_METRICS_PORT", "9090")
        path = os.environ.get("CRYOKUBE_WORKER_DEFAULTS")
        if not port.isdigit():
            raise ValueError(f"CRYOKUBE_METRICS_PORT must be a port number, got {port!r}")
        return cls(
            kube_host=os.environ.get("CRYOKUBE_KUBE_HOST") or None,
            metadata_url=os.environ.get("CRYOKUBE_METADATA_URL") or None,
            service_token=os.environ.get("CRYOKUBE_SERVICE_TOKEN") or None,
            token_secret=os.environ.get("CRYOKUBE_TOKEN_SECRET") or None,
            metrics_port=int(port),
            watch_namespaces=tuple(
                ns.strip()
                for ns in os.environ.get("CRYOKUBE_WATCH_NAMESPACES", "").split(",")
                if ns.strip()
            ),
            workers=load_worker_defaults(Path(path)) if path else WorkerConfig(),
        )


def load_worker_defaults(path: Path) -> WorkerConfig:
    """Read and validate the worker defaults file.

    Raises
    ------
    ValueError
        Naming the file and each offending key (``tolerations.0.operator: ...``).
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"CRYOKUBE_WORKER_DEFAULTS {path}: {exc}") from None
    try:
        return WorkerConfig.model_validate(document or {})
    except ValidationError as exc:
        raise ValueError(
            f"CRYOKUBE_WORKER_DEFAULTS {path}: {format_validation_error(exc)}"
        ) from None


def _metadata_link(config: OperatorConfig) -> MetadataLink:
    """The metadata-service link the config asks for; :class:`NoMetadata` without a URL."""
    if config.metadata_url is None:
        return NoMetadata()
    if not config.service_token or not config.token_secret:
        raise ValueError(
            "CRYOKUBE_METADATA_URL needs CRYOKUBE_SERVICE_TOKEN and CRYOKUBE_TOKEN_SECRET"
        )
    client = MetadataClient(config.metadata_url, service_token=config.service_token)
    return ServiceMetadata(client, token_secret=config.token_secret)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Set kopf's storage, timeouts and posting; put config and clients into ``memo``."""
    settings.persistence.finalizer = "cryokube.io/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cryokube.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cryokube.io", key="last-handled-configuration"
    )
    # Without a server timeout a watch can hang silently behind load balancers that drop idle
    # connections (kopf issue #204); reconnecting every 5 minutes bounds that. The client timeout
    # is a little longer so the server, not the client, ends the normal case.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Events carry our reasons (kopf.event); kopf's own per-handler events would only add noise.
    settings.posting.level = 30  # logging.WARNING
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    memo.config = config
    memo.api = api_client(config.kube_host)
    # Workers report to the URL the defaults name, else to the operator's own.
    memo.worker_config = (
        config.workers
        if config.workers.metadata_url
        else config.workers.model_copy(update={"metadata_url": config.metadata_url})
    )
    memo.metadata = _metadata_link(config)
    # Per-Job facts the kopf indexes may not show yet (see handlers.jobs): GPUs reserved by a
    # create, children created, and the last Event reason posted.
    memo.reserved = {}
    memo.created = set()
    memo.posted = {}
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in to ``kube_host`` when configured, else the service account or kubeconfig."""
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    if config.kube_host:
        return kopf.ConnectionInfo(server=config.kube_host)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the Kubernetes and metadata-service clients."""
    await memo.metadata.close()
    memo.api.close()
