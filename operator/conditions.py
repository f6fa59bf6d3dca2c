"""The one helper that edits a Kubernetes-style ``conditions`` list.

Follows the Kubernetes API conventions for conditions (``type``, ``status``, ``reason``,
``message``, ``observedGeneration``, ``lastTransitionTime``) and cert-manager's and kueue's
rule that ``lastTransitionTime`` moves only when ``status`` changes, so ``kubectl`` shows how
long a Job has really been pending or running.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

MAX_MESSAGE_CHARS = 1024
"""Messages are truncated to this length: a status is no log (validation errors can be long)."""


def rfc3339(now: dt.datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with second precision (``2026-11-24T05:00:00Z``)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: dt.datetime,
) -> bool:
    """Insert or update the condition ``type_`` in place.

    Parameters
    ----------
    conditions : list of dict
        The ``status.conditions`` list (camelCase keys), edited in place.
    type_ : str
        Condition type (``"Ready"``, ``"Succeeded"``, ``"Failed"``).
    status : {"True", "False", "Unknown"}
        Condition status, as the Kubernetes strings.
    reason : str
        CamelCase reason from :mod:`cryokube.operator.reasons`.
    message : str
        Human-readable detail, truncated to :data:`MAX_MESSAGE_CHARS`.
    generation : int or None
        ``metadata.generation`` this condition was computed from.
    now : datetime.datetime
        Aware current time, used only when ``status`` changes (or the condition is new).

    Returns
    -------
    bool
        Whether anything in the list changed.
    """
    if status not in {"True", "False", "Unknown"}:
        raise ValueError(f"status must be 'True', 'False' or 'Unknown', got {status!r}")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    wanted: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now),
    }
    if generation is not None:
        wanted["observedGeneration"] = generation
    for index, old in enumerate(conditions):
        if old.get("type") != type_:
            continue
        if old.get("status") == status and "lastTransitionTime" in old:
            wanted["lastTransitionTime"] = old["lastTransitionTime"]
        if old == wanted:
            return False
        conditions[index] = wanted
        return True
    conditions.append(wanted)
    return True


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """Return the condition of type ``type_``, or ``None`` when absent."""
    return next((c for c in conditions if c.get("type") == type_), None)
