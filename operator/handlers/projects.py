"""kopf handlers of cryokube.io Projects: validate, register, write ``Ready``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import kopf

from ..models import GROUP, VERSION, InvalidSpecError, parse_project
from ..status import Plan, invalid_plan, plan_project

PROJECTS = (GROUP, VERSION, "projects")


@kopf.index(*PROJECTS)
def projects(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Index Project bodies by ``(namespace, name)`` for the Job handlers."""
    return {(namespace, name): {"metadata": dict(body.metadata), "spec": dict(body.spec)}}


# The metadata service may be briefly down: retry with backoff, and give up after 10 minutes.
@kopf.on.resume(*PROJECTS, retries=20, backoff=30, timeout=600)
@kopf.on.create(*PROJECTS, retries=20, backoff=30, timeout=600)
@kopf.on.update(*PROJECTS, retries=20, backoff=30, timeout=600)
async def reconcile_project(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Validate the Project, write its ``Ready`` condition and register it."""
    now = dt.datetime.now(dt.UTC)
    try:
        project = parse_project(body)
    except InvalidSpecError as exc:
        plan = invalid_plan(dict(body.status), body.metadata.get("generation"), str(exc), now)
        _apply(body, patch, plan)
        raise kopf.PermanentError(str(exc)) from None
    _apply(body, patch, plan_project(project, cluster=memo.config.cluster, now=now))
    await memo.metadata.register_project(project)


def _apply(body: kopf.Body, patch: kopf.Patch, plan: Plan) -> None:
    if plan.changed:
        patch.status.update(plan.status)
    if plan.event is not None:
        kopf.event(body, type=plan.event[0], reason=plan.event[1], message=plan.event[2])
