"""Approval for production: the registry setting, the plan a person approves (in order, bounded),
the DAG shapes with and without it, and what the approval task does with each answer."""
from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from kube_maintenance.core.approval import (
    MAX_LINES,
    PlanApprovalOperator,
    approval_gate,
    bounded,
    cronjob_refresh_summary,
    node_replacement_summary,
    rollout_restart_summary,
)
from kube_maintenance.core.audit import AUDIT_MARKER, parse_audit_lines
from kube_maintenance.core.registry import DEFAULT_APPROVAL_TIMEOUT_HOURS, RegistryError, parse_registry
from kube_maintenance.cronjob_refresh.decisions import CronJobVerdict, StaleJob, fresh_job_name

ENTRY = {
    "name": "production",
    "kubernetes_conn_id": "k8s_production",
    "aws_conn_id": "aws_production",
    "region": "us-east-1",
    "timezone": "UTC",
    "maintenance_window": {"start": "02:00", "duration_minutes": 180},
}


def registry(**changes: Any) -> dict[str, Any]:
    return {"version": 1, "clusters": [{**copy.deepcopy(ENTRY), **changes}]}


# ----------------------------------------------------------------------------------------- registry
def test_requires_approval_is_off_unless_set_and_read_when_set() -> None:
    plain = parse_registry(registry()).clusters[0]
    assert (plain.requires_approval, plain.approval_timeout_hours) == (False, DEFAULT_APPROVAL_TIMEOUT_HOURS)
    gated = parse_registry(registry(requires_approval=True, approval_timeout_hours=8)).clusters[0]
    assert (gated.requires_approval, gated.approval_timeout_hours) == (True, 8.0)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"requires_approval": "yes"}, "clusters[0] (production).requires_approval: expected true or false, got 'yes'"),
        ({"requires_approval": 1}, "clusters[0] (production).requires_approval: expected true or false, got 1"),
        ({"requires_approval": True, "approval_timeout_hours": 0}, "clusters[0] (production).approval_timeout_hours: expected hours, more than 0 and at most 168"),
        ({"requires_approval": True, "approval_timeout_hours": 169}, "approval_timeout_hours: expected hours"),
        ({"requires_approval": True, "approval_timeout_hours": True}, "approval_timeout_hours: expected hours"),
        ({"requires_approval": True, "approval_timeout_hours": "1d"}, "approval_timeout_hours: expected hours"),
        ({"approval_timeout_hours": 4}, "clusters[0] (production).approval_timeout_hours: only meaningful with requires_approval: true"),
    ],
)
def test_bad_approval_settings_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_registry(registry(**changes))
    assert message in str(err.value)


def test_the_production_example_requires_approval() -> None:
    from pathlib import Path

    from kube_maintenance.core.registry import load_registry

    clusters = {c.name: c for c in load_registry(Path(__file__).resolve().parents[2] / "config" / "clusters.yaml").clusters}
    assert clusters["production"].requires_approval and not clusters["staging"].requires_approval


# ------------------------------------------------------------------------------------- DAG shapes
def _dags(requires_approval: bool) -> dict[str, Any]:
    from kube_maintenance.cronjob_refresh.dag import cronjob_refresh_dag
    from kube_maintenance.node_replacement.dag import node_replacement_dag
    from kube_maintenance.rollout_restart.dag import rollout_restart_dag

    cluster = parse_registry(registry(requires_approval=True) if requires_approval else registry()).clusters[0]
    return {d.dag_id.split("__")[0]: d for d in (node_replacement_dag(cluster), cronjob_refresh_dag(cluster), rollout_restart_dag(cluster))}


def _upstream(dag: Any) -> dict[str, set[str]]:
    return {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}


def test_without_requires_approval_the_dags_have_no_approval_task() -> None:
    shapes = {op: _upstream(d) for op, d in _dags(False).items()}
    assert all("approval" not in s for s in shapes.values())
    assert shapes["node_replacement"]["preflight"] == {"plan"}
    assert shapes["rollout_restart"]["preflight"] == {"plan"}
    assert shapes["cronjob_refresh"]["refresh.judge"] == {"plan", "preflight"}


def test_with_requires_approval_the_approval_stands_between_the_plan_and_the_lock() -> None:
    dags = _dags(True)
    shapes = {op: _upstream(d) for op, d in dags.items()}
    assert shapes["node_replacement"]["approval"] == {"plan"} and shapes["node_replacement"]["preflight"] == {"approval"}
    assert shapes["rollout_restart"]["approval"] == {"plan"} and shapes["rollout_restart"]["preflight"] == {"approval"}
    # CronJob refresh: what is approved is the judges' plan, so they come first; the lock after the answer.
    cron = shapes["cronjob_refresh"]
    assert cron["refresh.judge"] == {"plan"} and cron["approval"] == {"refresh.judge"} and cron["preflight"] == {"approval"}
    assert cron["refresh.delete_stale_jobs"] == {"refresh.judge", "preflight"}
    for op, dag in dags.items():
        approval = dag.get_task("approval")
        assert isinstance(approval, PlanApprovalOperator) and approval.operation == op
        assert approval.response_timeout == dt.timedelta(hours=DEFAULT_APPROVAL_TIMEOUT_HOURS) and approval.defaults == ["Reject"]
        assert "approval" in shapes[op]["cleanup"], "the cleanup teardown waits for the approval too"
        assert dag.get_task("cleanup").is_teardown


def test_approval_gate_is_empty_for_a_cluster_without_it() -> None:
    assert approval_gate(parse_registry(registry()).clusters[0], "node_replacement") == []


# -------------------------------------------------------------------------------------- summaries
def node(name: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "instance_id": instance, "zone": "us-east-1a", "created": "2026-01-01T00:00:00Z", "cordoned_before_run": False, "asg": "workers", "drift": "", **extra}


def test_node_replacement_plan_lists_nodes_batch_by_batch_in_order() -> None:
    xcom = {
        "plan": {
            "batches": [[node("ip-10-0-1-1.ec2.internal", "i-1"), node("ip-10-0-1-2.ec2.internal", "i-2")], [node("ip-10-0-1-3.ec2.internal", "i-3", drift="AMI ami-old -> ami-new", cordoned_before_run=True)]],
            "skipped": {"ip-10-0-9-9.ec2.internal": "instance i-9 is not running in an Auto Scaling group: nothing would replace it"},
        },
        "dry_run": False,
    }
    summary = node_replacement_summary("production", xcom, {"surge": False})
    text = summary.markdown()
    assert summary.changes == 3
    assert summary.subject == "Approve: replace 3 nodes in 2 batches on production"
    order = [text.index(s) for s in ("### Batch 1 of 2", "ip-10-0-1-1.ec2.internal", "ip-10-0-1-2.ec2.internal", "### Batch 2 of 2", "ip-10-0-1-3.ec2.internal", "Left alone: 1 node")]
    assert order == sorted(order), text
    assert "instance `i-3`" in text and "drifted: AMI ami-old -> ami-new" in text and "already cordoned before the run" in text
    assert "in place" in text and "terminated in their Auto Scaling groups" in text
    assert "with surge" in node_replacement_summary("production", xcom, {"surge": True}).markdown()
    assert node_replacement_summary("production", {"plan": {"batches": []}, "dry_run": False}, {}).changes == 0


def test_rollout_restart_plan_lists_workloads_by_shard_and_namespace_in_kind_order() -> None:
    xcom = {
        "namespaces": ["shop", "search", "payments"],
        "kinds": ["Deployment", "DaemonSet", "StatefulSet"],
        "restart": ["statefulset/shop/db", "deployment/shop/web", "daemonset/search/agent", "deployment/payments/api"],
        "rolling": ["deployment/search/indexer"],
        "complete": [],
        "failed": {},
        "skipped": {"deployment/shop/paused": "paused"},
        "dry_run": False,
    }
    shards = [{"index": 0, "namespaces": ["search", "shop"], "max_in_flight": 2}, {"index": 1, "namespaces": ["payments"], "max_in_flight": 1}]
    summary = rollout_restart_summary("production", xcom, shards)
    text = summary.markdown()
    assert summary.changes == 4 and summary.subject == "Approve: restart 4 workloads in 3 namespaces on production"
    order = [
        text.index(s)
        for s in (
            "### Shard 1 of 2 (at most 2 rolling at once): search, shop",
            "namespace `search`",
            "daemonset `agent`",
            "namespace `shop`",
            "deployment `web`",
            "statefulset `db`",
            "### Shard 2 of 2 (at most 1 rolling at once): payments",
            "deployment `api`",
            "Left alone: 1 workload",
        )
    ]
    assert order == sorted(order), text
    assert "deployment `indexer` (already restarted by this run" in text
    assert "`deployment/shop/paused`: paused" in text
    nothing = dict(xcom, restart=[], rolling=[])
    assert rollout_restart_summary("production", nothing, []).changes == 0


def verdict(namespace: str, name: str, stale: list[str], **extra: Any) -> dict[str, Any]:
    """A judged CronJob as the judge hands it on (its compact XCom record)."""
    jobs = [StaleJob(namespace, job, f"uid-{job}", {"main": "app:1"}, {"main": "app:2"}) for job in stale]
    base = {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": 3, "suspended": False, "images": {"main": "app:2"}, "concurrency_policy": "Allow", "next_run": "at 03:00 UTC"}
    return CronJobVerdict(**{**base, **extra}, stale=jobs).to_xcom()


def test_cronjob_refresh_plan_lists_deletions_then_fresh_jobs_cronjob_by_cronjob() -> None:
    judged = [
        {"index": 1, "label": "search", "verdicts": [verdict("search", "reindex", ["reindex-1"], concurrency_policy="Forbid")]},
        {
            "index": 0,
            "label": "payments, shop",
            "verdicts": [
                verdict("payments", "settle", ["settle-1", "settle-2"]),
                verdict("shop", "paused", ["paused-1"], suspended=True),
                verdict("shop", "report", [], left_alone={"report-7": "it has completed work"}),
            ],
        },
    ]
    summary = cronjob_refresh_summary("production", judged, {"create_fresh_job": True})
    text = summary.markdown()
    fresh = fresh_job_name("settle", "uid-settle", 3)
    assert summary.changes == 4, text  # three deletions, one fresh Job (Forbid gets none)
    assert summary.subject == "Approve: delete 3 stale Jobs, start 1 fresh Job on production"
    order = [
        text.index(s)
        for s in (
            "### Group 1: payments, shop",
            "1. delete Job `payments/settle-1`",
            "2. delete Job `payments/settle-2`",
            f"then start fresh Job `payments/{fresh}`",
            "### Group 2: search",
            "delete Job `search/reindex-1`",
            "no fresh Job: concurrencyPolicy Forbid",
            "Left alone: 2",
        )
    ]
    assert order == sorted(order), text
    assert "main: app:1 -> app:2" in text
    assert "CronJob `shop/paused` (suspended): 1 stale Job left" in text and "Job `shop/report-7` of `shop/report`: it has completed work" in text
    assert "paused-1" not in text.split("Left alone")[0], "a suspended CronJob's Job is not to be deleted"
    off = cronjob_refresh_summary("production", judged, {"create_fresh_job": False})
    assert off.changes == 3 and "create_fresh_job is off" in off.markdown()
    assert cronjob_refresh_summary("production", [{"index": 0, "label": "shop", "verdicts": []}], {}).changes == 0


def test_a_long_plan_is_cut_and_says_how_many_more_of_what() -> None:
    batches = [[node(f"ip-10-1-{i}-{j}.ec2.internal", f"i-{i}-{j}") for j in range(5)] for i in range(100)]
    summary = node_replacement_summary("production", {"plan": {"batches": batches}, "dry_run": False}, {})
    lines = summary.markdown().splitlines()
    assert summary.changes == 500
    assert len(lines) < MAX_LINES + 20
    assert "ip-10-1-0-0.ec2.internal" in lines[len(summary.intro) + 3], "the plan starts at its first batch"
    last = lines[-1]
    shown_nodes = sum(1 for line in lines if line.startswith("- `ip-"))
    hidden_batches = 100 - sum(1 for line in lines if line.startswith("### Batch"))
    assert f"{500 - shown_nodes} nodes" in last and f"{hidden_batches} batches" in last and "more lines not shown" in last, last
    assert bounded([("x" * 1000, None)])[0].endswith("...") and len(bounded([("x" * 1000, None)])[0]) == 400
    assert bounded([("a", None), ("b", "node")], max_lines=5) == ["a", "b"]


# ------------------------------------------------------------------------------------ the task
class FakeTI:
    dag_id = "node_replacement__production"
    run_id = "manual__2026-01-01"
    task_id = "approval"
    map_index = -1
    try_number = 1
    id = "0193a1b2-0000-7000-8000-000000000000"

    def __init__(self, xcoms: dict[tuple[str, str | None], Any]) -> None:
        self.xcoms = xcoms
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


class FakeRun:
    dag_id = FakeTI.dag_id
    run_id = FakeTI.run_id
    run_type = "manual"
    triggering_user_name = "alice"


@pytest.fixture
def gated_registry(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import json

    path = tmp_path / "clusters.json"
    path.write_text(json.dumps(registry(requires_approval=True)))
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(path))
    return parse_registry(registry(requires_approval=True)).clusters[0]


def _task(cluster: Any) -> Any:
    from airflow.sdk import DAG

    with DAG("node_replacement__production", schedule=None) as dag:
        from airflow.providers.standard.operators.empty import EmptyOperator

        (approval,) = approval_gate(cluster, "node_replacement")
        preflight = EmptyOperator(task_id="preflight")
        batch = EmptyOperator(task_id="batch")
        cleanup = EmptyOperator(task_id="cleanup")
        approval >> preflight >> batch >> cleanup.as_teardown()
    return dag, approval


def _context(dag: Any, task: Any, ti: Any, dry_run: bool) -> dict[str, Any]:
    return {"ti": ti, "task_instance": ti, "task": task, "dag_run": FakeRun(), "params": {"dry_run": dry_run}}


PLAN = {("plan", "plan"): {"plan": {"batches": [[node("ip-10-0-1-1.ec2.internal", "i-1")]]}, "dry_run": False}}


def test_a_dry_run_and_a_plan_changing_nothing_pass_without_asking(gated_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.providers.standard.operators.hitl as hitl

    asked: list[Any] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kw: asked.append(kw))
    dag, task = _task(gated_registry)
    ti = FakeTI(PLAN)
    assert task.execute(_context(dag, task, ti, dry_run=True)) == {"approval": "not needed", "why": "dry run"}
    empty = FakeTI({("plan", "plan"): {"plan": {"batches": []}, "dry_run": False}})
    assert task.execute(_context(dag, task, empty, dry_run=False)) == {"approval": "not needed", "why": "the plan changes nothing"}
    assert asked == []


def test_a_real_run_asks_with_the_plan_as_body_and_waits(gated_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.providers.standard.operators.hitl as hitl
    from airflow.sdk.exceptions import TaskAwaitingInput

    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kw: asked.append(kw))
    dag, task = _task(gated_registry)
    with pytest.raises(TaskAwaitingInput):
        task.execute(_context(dag, task, FakeTI(PLAN), dry_run=False))
    (request,) = asked
    assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"]
    assert request["subject"] == "Approve: replace 1 node in 1 batch on production"
    assert "### Batch 1 of 1" in request["body"] and "`ip-10-0-1-1.ec2.internal` (instance `i-1`" in request["body"]


def _answer(user: dict[str, str] | None, option: str, timedout: bool = False) -> dict[str, Any]:
    return {"chosen_options": [option], "params_input": {}, "responded_at": dt.datetime(2026, 1, 1, 3, tzinfo=dt.timezone.utc), "responded_by_user": user, "timedout": timedout}


def _audit(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return parse_audit_lines("\n".join(r.getMessage() for r in caplog.records if AUDIT_MARKER in r.getMessage()))


def test_approve_goes_on_and_names_who_approved(gated_registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    dag, task = _task(gated_registry)
    caplog.set_level("INFO", logger="kube_maintenance.audit")
    result = task.execute_complete(_context(dag, task, FakeTI(PLAN), dry_run=False), _answer({"id": "7", "name": "bob"}, "Approve"))
    assert result["chosen_options"] == ["Approve"]
    (line,) = _audit(caplog)
    assert (line["action"], line["cluster"], line["after"], line["outcome"], line["triggered_by"]) == ("approve", "production", "approved by bob", "done", "user:alice")
    assert line["detail"]["by"] == "bob" and line["detail"]["by_id"] == "7" and line["detail"]["operation"] == "node_replacement"
    assert line["detail"]["plan"] == "Approve: replace 1 node in 1 batch on production" and line["detail"]["responded_at"] == "2026-01-01T03:00:00+00:00"


def test_reject_skips_every_later_step_but_the_cleanup_and_names_who_rejected(gated_registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    dag, task = _task(gated_registry)
    caplog.set_level("INFO", logger="kube_maintenance.audit")
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        task.execute_complete(_context(dag, task, FakeTI(PLAN), dry_run=False), _answer({"id": "9", "name": "carol"}, "Reject"))
    assert sorted(skipped.value.tasks) == ["batch", "preflight"], "every later step, however its trigger rule reads, but not the teardown"
    (line,) = _audit(caplog)
    assert (line["action"], line["after"], line["detail"]["by"], line["detail"]["operation"]) == ("reject", "rejected by carol", "carol", "node_replacement")
    assert line["dry_run"] is False and "timed_out" not in line["detail"]


def test_no_answer_in_time_is_a_rejection_by_nobody(gated_registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    dag, task = _task(gated_registry)
    caplog.set_level("INFO", logger="kube_maintenance.audit")
    with pytest.raises(DownstreamTasksSkipped):
        task.execute_complete(_context(dag, task, FakeTI(PLAN), dry_run=False), _answer(None, "Reject", timedout=True))
    (line,) = _audit(caplog)
    assert (line["action"], line["after"], line["detail"]["by"], line["detail"]["timed_out"]) == ("reject", "rejected: no answer in time", "nobody", True)
