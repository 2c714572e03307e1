from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace

from kube_maintenance.core.audit import AUDIT_MARKER, AuditTrail, parse_audit_lines
from kube_maintenance.node_replacement.health import preflight_report, validation_report

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


def obj(name: str, age_s: float = 3600, **body: object) -> dict:
    created = (NOW - dt.timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created}, **body}


def ready(name: str, ok: bool = True, unschedulable: bool = False) -> dict:
    return obj(name, spec={"unschedulable": unschedulable}, status={"conditions": [{"type": "Ready", "status": "True" if ok else "False"}]})


def test_preflight_allows_planned_not_ready_nodes_but_not_others() -> None:
    nodes = [ready("a"), ready("b", ok=False), ready("c", unschedulable=True)]
    assert preflight_report(nodes, [], {"b"}, NOW, 300).healthy
    report = preflight_report(nodes, [], set(), NOW, 300)
    assert not report.healthy and "nodes not Ready: b" in report.summary()
    assert "cordoned outside this plan (left alone): c" in report.notes[0]


def test_pods_pending_only_briefly_are_fine() -> None:
    fresh = obj("p1", age_s=10, status={"phase": "Pending"})
    stuck = obj("p2", age_s=900, status={"phase": "Pending"})
    assert preflight_report([ready("a")], [fresh], set(), NOW, 300).healthy
    assert "ns/p2" in preflight_report([ready("a")], [fresh, stuck], set(), NOW, 300).summary()


def test_validation_counts_ready_nodes_without_the_replaced_ones() -> None:
    nodes = [ready("old", ok=False), ready("new"), ready("b")]
    deploy = obj("web", spec={"replicas": 3}, status={"availableReplicas": 3})
    assert validation_report(nodes, [], [deploy], 2, {"old"}, NOW, 60).healthy
    assert not validation_report(nodes, [], [deploy], 3, {"old"}, NOW, 60).healthy
    short = obj("api", spec={"replicas": 2}, status={"availableReplicas": 1})
    assert "deployment/ns/api (1/2 available)" in validation_report(nodes, [], [short], 2, {"old"}, NOW, 60).summary()


def test_audit_lines_are_one_greppable_json_form(caplog) -> None:
    context = {
        "ti": SimpleNamespace(task_id="batch_01.cordon", map_index=-1, try_number=2, dag_id="d", run_id="r"),
        "dag_run": SimpleNamespace(dag_id="node_replacement__staging", run_id="manual__1", run_type="manual", triggering_user_name="alice"),
    }
    trail = AuditTrail.from_context(context, "staging", dry_run=False)
    with caplog.at_level(logging.INFO, logger="kube_maintenance.audit"):
        trail.record("cordon", "node/n1", before="schedulable", after="unschedulable", batch=1)
        trail.with_dry_run(True).record("terminate", "instance/i-1", before="running", after="terminating")
    lines = parse_audit_lines(caplog.text)
    assert [l["action"] for l in lines] == ["cordon", "terminate"]
    first = lines[0]
    assert list(first)[:13] == ["ts", "cluster", "dag", "run", "task", "try", "triggered_by", "action", "target", "before", "after", "dry_run", "outcome"]
    assert first["triggered_by"] == "user:alice" and first["try"] == 2 and first["outcome"] == "done"
    assert lines[1]["dry_run"] is True and lines[1]["outcome"] == "planned"
    assert all(AUDIT_MARKER in r.getMessage() for r in caplog.records)
    scheduled = AuditTrail.from_context({"dag_run": SimpleNamespace(run_type="scheduled", triggering_user_name=None)}, "c", False)
    assert scheduled.triggered_by == "scheduled"


def test_validation_judges_daemonsets_statefulsets_and_system_pods_but_not_what_was_broken_before() -> None:
    nodes = [{"metadata": {"name": "n1", "creationTimestamp": "2026-11-21T11:00:00Z"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]
    ds = {"metadata": {"name": "logs", "namespace": "kube-system"}, "status": {"desiredNumberScheduled": 3, "numberAvailable": 2}}
    sts = {"metadata": {"name": "db", "namespace": "ns"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3, "availableReplicas": 3}}
    broken = {"metadata": {"name": "legacy", "namespace": "ns"}, "spec": {"replicas": 1}, "status": {}}
    report = validation_report(nodes, [], [broken], 1, set(), NOW, 60, daemonsets=[ds], statefulsets=[sts], unavailable_before=frozenset({"deployment/ns/legacy"}))
    assert report.problems == ["workloads not fully available: daemonset/kube-system/logs (2/3 available)"]
    assert "deployment/ns/legacy (0/1 available)" in report.notes[0]
    dns = {
        "metadata": {"name": "coredns-1", "namespace": "kube-system", "creationTimestamp": "2026-11-21T11:00:00Z"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-21T11:55:00Z"}]},
    }
    assert "kube-system pods not Ready for over 60s: kube-system/coredns-1" in validation_report(nodes, [], [], 1, set(), NOW, 60, system_pods=[dns]).summary()
    assert validation_report(nodes, [], [], 1, set(), NOW, 600, system_pods=[dns]).healthy, "not Ready for 5 minutes only: still starting"
