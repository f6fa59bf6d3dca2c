"""The official Kubernetes client's connection, shared by the operator and the console."""

from __future__ import annotations

from typing import Any

import kubernetes


def api_client(host: str | None) -> Any:
    """An API client for ``host`` (tests, a proxy), else the pod's ServiceAccount, else kubeconfig."""
    if host:
        conf = kubernetes.client.Configuration()
        conf.host = host
        return kubernetes.client.ApiClient(conf)
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()
