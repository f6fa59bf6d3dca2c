"""Declarations that make kmock's Kubernetes emulator serve the resources CryoKube uses.

kopf only watches resources that API discovery lists as watchable, so each one is declared
with its kind, scope, verbs (list and watch included) and the ``status`` subresource.
"""

from __future__ import annotations

from typing import Any

import kmock

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

RESOURCES: dict[str, dict[str, Any]] = {
    "cryokube.io/v1alpha1/projects": {
        "kind": "Project",
        "singular": "project",
        "namespaced": True,
        "shortnames": ["cproj"],
        "categories": ["cryokube"],
        "subresources": ["status"],
    },
    "cryokube.io/v1alpha1/jobs": {
        "kind": "Job",
        "singular": "job",
        "namespaced": True,
        "shortnames": ["cjob"],
        "categories": ["cryokube"],
        "subresources": ["status"],
    },
    "batch/v1/jobs": {
        "kind": "Job",
        "singular": "job",
        "namespaced": True,
        "subresources": ["status"],
    },
    "v1/pods": {"kind": "Pod", "singular": "pod", "namespaced": True, "subresources": ["status"]},
    "v1/secrets": {"kind": "Secret", "singular": "secret", "namespaced": True},
    "v1/events": {"kind": "Event", "singular": "event", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "singular": "namespace", "namespaced": False},
}


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Register every CryoKube resource in the emulator's discovery."""
    for key, info in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
