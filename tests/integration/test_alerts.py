"""Failure alerts (issue 11, item 4), whole DAG runs against the sandbox with a local SMTP server and a
local HTTP receiver as the registry's destinations: a failed run sends exactly one message to each,
naming the cluster, the operation, the failed step, its reason and a link to the run; a successful
run sends none; a run past its maintenance window is reported (the deadline alert's callback,
through the providers' async notifiers, as the triggerer runs it).

The DAG failure callbacks run in ``dag.test()`` with the supervisor channel the dag-processor gives
them (``alert_receivers.dag_callbacks_like_the_dag_processor``); ``tests/distributed`` runs them in a
real dag-processor and the deadline in a real scheduler and triggerer, and marks a run failed as
the UI does.
"""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Iterator
from urllib.parse import quote

import pytest
from alert_receivers import RECIPIENTS, SENDER, WEBHOOK_PATH, Receivers, dag_callbacks_like_the_dag_processor, no_deadline_alerts_in_dag_test, with_alerts
from harness import DagRunner, registry_for

from kube_maintenance.core.alerts import window_overrun
from kube_maintenance.core.registry import parse_registry
from sandbox.config import NEVER_READY_ANNOTATION
from sandbox.resources import DEPLOYMENTS
from sandbox.scenario import World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BASE_URL = "http://airflow.example.test:8080"
DAG_FILE, DAG_ID = "rollout_restart.py", "rollout_restart__staging"


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    started = Receivers.start()
    for var, value in started.connections().items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def alerting(dag_runner: DagRunner, world: World, receivers: Receivers, monkeypatch: pytest.MonkeyPatch) -> DagRunner:
    dag_callbacks_like_the_dag_processor(monkeypatch)
    no_deadline_alerts_in_dag_test(monkeypatch)
    dag_runner.set_registry(with_alerts(registry_for(world)))
    return dag_runner


def words(text: str) -> str:
    return " ".join(text.split())


def never_ready(world: World, namespace: str, name: str) -> None:
    """The Deployment's next pods never become Ready, and it gives up after 2 s (progress deadline)."""

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"]["progressDeadlineSeconds"] = 2
        obj["spec"]["template"]["metadata"].setdefault("annotations", {})[NEVER_READY_ANNOTATION] = "true"

    world.clusters["staging"].cluster.store.mutate(DEPLOYMENTS, namespace, name, edit)


def test_a_failed_run_sends_one_message_to_each_destination_naming_the_step_its_reason_and_the_run(alerting: DagRunner, world: World, receivers: Receivers) -> None:
    never_ready(world, "shop", "cart-api")
    result = alerting.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"], "max_concurrent_rollouts": 1})
    assert result.state == "failed" and result.failed_tasks() == ["cleanup", "restart[0]"], (result.failed_tasks(), result.errors())
    run_id = result.audit[0]["run"]
    link = f"{BASE_URL}/dags/{DAG_ID}/runs/{quote(run_id)}"
    reason = 'deployment/shop/cart-api: deployment "cart-api" exceeded its progress deadline'

    assert len(receivers.smtp.received) == 1 and len(receivers.http.received) == 1, [line for line in result.logs if "allback" in line or "alert" in line]
    [mail], [post] = receivers.smtp.received, receivers.http.received
    # The email: to the registry's recipients, from its sender; the subject says what failed where.
    assert sorted(mail.recipients) == sorted(RECIPIENTS) and mail.sender == SENDER
    assert mail.subject == "[kube-maintenance] rollout_restart on staging failed at restart[0] (shop)"
    body = words(mail.body())
    for expected in ("Cluster staging", f"Operation rollout_restart (DAG {DAG_ID})", f"Run {run_id}", "Failed step restart[0] (shop)", f"Reason rollout failed: {reason}", f"Link {link}"):
        assert expected in body, (expected, body)
    assert "Also failed cleanup: the run did not complete: restart_0 failed" in body, body
    # The webhook: a JSON POST to the connection's host at the registry's endpoint.
    assert post.path == WEBHOOK_PATH and post.headers.get("Content-Type") == "application/json"
    payload = post.body
    assert {k: payload[k] for k in ("event", "cluster", "operation", "dag_id", "run_id", "url")} == {
        "event": "run_failed", "cluster": "staging", "operation": "rollout_restart", "dag_id": DAG_ID, "run_id": run_id, "url": link,
    }
    step = payload["failed_step"]
    assert (step["task_id"], step["map_index"], step["label"], step["step"]) == ("restart", 0, "shop", "restart[0] (shop)")
    assert reason in step["reason"] and step["url"] == f"{link}/tasks/restart/mapped/0"
    assert [f["task_id"] for f in payload["also_failed"]] == ["cleanup"]
    assert payload["text"].startswith("rollout_restart on staging failed at restart[0] (shop)")


def test_bad_input_names_the_first_step_and_its_message(alerting: DagRunner, receivers: Receivers) -> None:
    result = alerting.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["Not_A_Namespace"]})
    assert result.state == "failed" and result.failed_tasks() == ["cleanup", "plan"], result.failed_tasks()
    [post] = receivers.http.received
    assert post.body["failed_step"]["step"] == "plan" and "Not_A_Namespace" in post.body["failed_step"]["reason"], post.body
    assert len(receivers.smtp.received) == 1


def test_a_successful_run_sends_nothing(alerting: DagRunner, receivers: Receivers) -> None:
    result = alerting.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert receivers.smtp.received == [] and receivers.http.received == []


def test_without_destinations_a_failed_run_sends_nothing(dag_runner: DagRunner, receivers: Receivers, monkeypatch: pytest.MonkeyPatch) -> None:
    dag_callbacks_like_the_dag_processor(monkeypatch)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["Not_A_Namespace"]})
    assert result.state == "failed"
    assert receivers.smtp.received == [] and receivers.http.received == []


# ----------------------------------------------------------------------------- window overrun
def overrun_kwargs(world: World, opens: dt.datetime, minutes: int) -> dict[str, Any]:
    """The deadline alert's callback arguments, as the DAG of a cluster with this window has them."""
    registry = with_alerts(registry_for(world))
    for entry in registry["clusters"]:
        entry["maintenance_window"] = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": opens.strftime("%H:%M"), "duration_minutes": minutes}
    from kube_maintenance.core.alerts import alert_arguments

    deadline = alert_arguments(parse_registry(registry).cluster("staging"), "rollout_restart").dag["deadline"]
    return dict(deadline.callback.kwargs)


def scheduler_context(state: str, queued: dt.datetime, deadline: dt.datetime, ended: dt.datetime | None = None) -> dict[str, Any]:
    """What the scheduler hands the callback when the deadline passes (``Deadline.handle_miss``)."""
    run = {"dag_id": DAG_ID, "dag_run_id": "scheduled__2026-01-01T00:00:00+00:00", "state": state, "run_type": "scheduled", "conf": {},
           "queued_at": queued.isoformat(), "start_date": (queued + dt.timedelta(seconds=2)).isoformat(), "end_date": ended.isoformat() if ended else None}
    return {"dag_run": run, "deadline": {"id": "d-1", "deadline_time": deadline}}


def test_a_run_still_going_after_its_window_closed_is_reported_to_each_destination(world: World, receivers: Receivers) -> None:
    opens = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=120)
    queued = opens + dt.timedelta(minutes=1)
    kwargs = overrun_kwargs(world, opens, 60)
    asyncio.run(window_overrun(context=scheduler_context("running", queued, queued + dt.timedelta(minutes=60)), **kwargs))
    assert len(receivers.smtp.received) == 1 and len(receivers.http.received) == 1
    [mail], [post] = receivers.smtp.received, receivers.http.received
    closed = (opens + dt.timedelta(minutes=60)).isoformat(timespec="seconds")
    assert mail.subject == "[kube-maintenance] rollout_restart on staging outlasted its maintenance window"
    body = words(mail.body())
    assert "Cluster staging" in body and f"which closed at {closed}: still running at" in body, body
    assert post.body["event"] == "window_overrun" and post.body["cluster"] == "staging" and post.body["operation"] == "rollout_restart"
    assert post.body["url"] == f"{BASE_URL}/dags/{DAG_ID}/runs/{quote('scheduled__2026-01-01T00:00:00+00:00')}"
    assert f"which closed at {closed}" in post.body["detail"]


def test_a_run_that_ended_before_its_deadline_or_is_still_inside_its_window_is_not_reported(world: World, receivers: Receivers) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    opens = now - dt.timedelta(minutes=120)
    queued = opens + dt.timedelta(minutes=1)
    # Failed runs keep their deadline (Airflow prunes only a successful run's): it still fires, later.
    ended = scheduler_context("failed", queued, queued + dt.timedelta(minutes=60), ended=queued + dt.timedelta(minutes=30))
    asyncio.run(window_overrun(context=ended, **overrun_kwargs(world, opens, 60)))
    # Windows back to back (every day, all day) are one: a day's length in, the run is still inside it.
    inside = scheduler_context("running", now - dt.timedelta(minutes=1440), now)
    asyncio.run(window_overrun(context=inside, **overrun_kwargs(world, (now - dt.timedelta(minutes=1441)).replace(hour=0, minute=0), 1440)))
    assert receivers.smtp.received == [] and receivers.http.received == []
