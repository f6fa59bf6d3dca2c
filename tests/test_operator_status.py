"""Table-driven tests of the pure planner (``status.plan_job``) and the condition helper."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryokube.operator import reasons
from cryokube.operator.conditions import MAX_MESSAGE_CHARS, set_condition
from cryokube.operator.models import parse_job, parse_project
from cryokube.operator.status import Peer, invalid_plan, plan_job, plan_project

CASES = yaml.safe_load((Path(__file__).parent / "data/operator/status_cases.yaml").read_text())
NOW = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC)


def peer(p: dict[str, Any]) -> Peer:
    defaults = {"project": "apo", "phase": None, "gpus": 1, "priority": 0, "holds_gpus": False}
    return Peer(**{**defaults, **p, "inputs": tuple(p.get("inputs", ()))})


def run_case(case: dict[str, Any]) -> Any:
    spec = {"project": "apo", "type": "ctf_estimation", **case.get("job", {})}
    job = parse_job(
        {
            "metadata": {"name": "ctf", "namespace": "lab-a", "generation": 3},
            "spec": spec,
            "status": case.get("status", {}),
        }
    )
    project_spec = case.get("project", {})
    project = (
        None
        if project_spec is None
        else parse_project(
            {
                "metadata": {"name": "apo"},
                "spec": {"storage": {"pvc": {"claimName": "d"}}, **project_spec},
            }
        )
    )
    return plan_job(
        job,
        project=project,
        child=case.get("child"),
        pods=case.get("pods", []),
        peers={p["name"]: peer(p) for p in case.get("peers", [])},
        now=NOW,
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_plan_job(case: dict[str, Any]) -> None:
    plan = run_case(case)
    expect = case["expect"]
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert plan.action == expect["action"]
    assert plan.status["phase"] == expect["phase"]
    assert plan.status["observedGeneration"] == 3
    if "reason" in expect:
        assert conditions["Ready"]["reason"] == expect["reason"]
        assert conditions["Ready"]["status"] == expect.get("ready", "False")
        assert conditions["Ready"]["observedGeneration"] == 3
    if "message" in expect:
        assert expect["message"] in conditions["Ready"]["message"]
    if "gpus" in expect:
        assert plan.status["gpus"] == expect["gpus"]
    for terminal in ("succeeded", "failed"):
        if terminal in expect:
            assert conditions[terminal.capitalize()]["status"] == "True"
            assert conditions[terminal.capitalize()]["reason"] == expect[terminal]


def test_second_pass_changes_nothing_and_posts_no_event() -> None:
    case = {
        "child": {"spec": {}, "status": {"active": 1}},
        "pods": [{"status": {"phase": "Running"}}],
    }
    first = run_case(case)
    assert first.event == ("Normal", reasons.RUNNING, "1 pod(s) running")
    second = run_case({**case, "status": first.status})
    assert second.changed is False
    assert second.event is None


def test_invalid_plan_names_the_field() -> None:
    plan = invalid_plan({}, 2, "spec.params.res_max_align: Input should be greater than 0", NOW)
    ready = plan.status["conditions"][0]
    assert (plan.status["phase"], ready["reason"]) == ("Invalid", reasons.INVALID_SPEC)
    assert plan.event is not None
    assert plan.event[0] == "Warning"


@pytest.mark.parametrize(
    ("path", "cluster", "ready"),
    [(True, True, "False"), (True, False, "True"), (False, True, "True")],
)
def test_plan_project(path: bool, cluster: bool, ready: str) -> None:
    storage = {"path": "/data/apo"} if path else {"pvc": {"claimName": "d"}}
    project = parse_project({"metadata": {"name": "apo"}, "spec": {"storage": storage}})
    plan = plan_project(project, cluster=cluster, now=NOW)
    assert plan.status["conditions"][0]["status"] == ready


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conditions: list[dict[str, Any]] = []
    assert set_condition(conditions, "Ready", "False", "Pending", "a", 1, NOW)
    later = NOW + dt.timedelta(minutes=5)
    assert set_condition(conditions, "Ready", "False", "Unschedulable", "b", 1, later)
    assert conditions[0]["lastTransitionTime"] == "2026-11-24T05:00:00Z"
    assert not set_condition(conditions, "Ready", "False", "Unschedulable", "b", 1, later)
    assert set_condition(conditions, "Ready", "True", "Running", "c", 1, later)
    assert conditions[0]["lastTransitionTime"] == "2026-11-24T05:05:00Z"
    assert len(conditions) == 1


def test_set_condition_truncates_and_validates() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "InvalidSpec", "x" * 5000, None, NOW)
    assert len(conditions[0]["message"]) == MAX_MESSAGE_CHARS
    with pytest.raises(ValueError, match="status"):
        set_condition(conditions, "Ready", "Maybe", "X", "", None, NOW)
    with pytest.raises(ValueError, match="now"):
        set_condition(conditions, "Ready", "True", "X", "", None, dt.datetime(2026, 1, 1))
