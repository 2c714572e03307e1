"""Batches go strictly one after another, and never while an earlier batch's node is still out."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from kube_maintenance.node_replacement import tasks as op
from kube_maintenance.node_replacement.plan import CORDONED_BY_ANNOTATION, Plan, PlannedNode

HOLDER = "node_replacement__staging/manual__1"


class FakeKube:
    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        self.nodes = nodes

    def get_or_none(self, ref: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.nodes.get(name)


def node(name: str, instance: str, cordoned_by: str | None = None, terminating: bool = False) -> dict[str, Any]:
    annotations = {CORDONED_BY_ANNOTATION: cordoned_by} if cordoned_by else {}
    if terminating:
        annotations[op.TERMINATING_ANNOTATION] = instance
    return {"metadata": {"name": name, "annotations": annotations}, "spec": {"unschedulable": bool(cordoned_by), "providerID": f"aws:///eu-west-1a/{instance}"}}


def test_a_batch_starts_after_the_one_before_and_never_while_its_node_is_still_out(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = Plan(batches=[[PlannedNode("node-a", "i-0a", "eu-west-1a", "t", False, "general")], [PlannedNode("node-b", "i-0b", "eu-west-1a", "t", False, "general")]])
    kube = FakeKube({"node-a": node("node-a", "i-0a", cordoned_by=HOLDER), "node-b": node("node-b", "i-0b")})
    monkeypatch.setattr(op, "_params", lambda cluster, context: (None, SimpleNamespace(kube=kube, holder=HOLDER)))
    monkeypatch.setattr(op, "_plan_from", lambda context: plan)
    states = {"batch_0": "deferred"}
    ti = SimpleNamespace(dag_id="node_replacement__staging", run_id="manual__1", task_id="batch", get_task_states=lambda **_: {"manual__1": dict(states)})
    context = {"ti": ti, "dag_run": SimpleNamespace(run_id="manual__1")}

    assert op.previous_batch_done("staging", 0, **context) is True, "the first batch waits for nothing"
    assert op.previous_batch_done("staging", 1, **context) is False, "batch 2 waits while batch 1 runs"
    states["batch_0"] = "success"  # e.g. marked successful by hand mid-drain: node-a is still out
    with pytest.raises(AirflowFailException, match="node-a, still cordoned by this run"):
        op.previous_batch_done("staging", 1, **context)
    kube.nodes["node-a"] = node("node-a", "i-0a", cordoned_by=HOLDER, terminating=True)
    assert op.previous_batch_done("staging", 1, **context) is True, "terminated: batch 2 may start"
    kube.nodes["node-a"] = node("node-a", "i-0c", cordoned_by=HOLDER)  # the name is another instance's now
    assert op.previous_batch_done("staging", 1, **context) is True
    for state in ("failed", "upstream_failed", "skipped"):
        states["batch_0"] = state
        with pytest.raises(AirflowSkipException, match="batch 1 did not complete"):
            op.previous_batch_done("staging", 1, **context)
