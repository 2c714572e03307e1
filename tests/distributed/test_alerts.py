"""Failure alerts on the distributed stack (conftest.py), where Airflow runs each part of them:
the DAG's failure notifiers in the dag-processor, its deadline alert's callback in the triggerer
(queued by the scheduler), each task's failure record in the Celery worker. Every cluster's alerts
go to a local SMTP server and HTTP receiver started by the test (``alert_receivers``).

On ``staging_overrun`` (the staging cluster again, with a maintenance window of one minute):

- a dry run that ends within the minute sends nothing (and its deadline, pruned, never fires);
- a real rollout restart whose Deployment never becomes Ready is still going a minute after it
  was queued: one "outlasted its maintenance window" message to each destination; then it is
  marked failed through the REST API as the UI's *Mark run as failed* does (PATCH state=failed): the
  cleanup teardown runs and fails, and each destination gets one failure message naming the
  cluster, the operation, the step that was running (``restart[0]``, no error recorded: it was marked
  failed), the teardown's own failure, and a link to the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import quote

import pytest
from alert_receivers import WEBHOOK_PATH, Mail, Post, Receivers
from airflow_stack.deployment import Deployment
from airflow_stack.sandbox_stack import Staging

from kube_maintenance.core.alerts import NO_RECORD
from sandbox.config import NEVER_READY_ANNOTATION
from sandbox.resources import DEPLOYMENTS

pytestmark = [pytest.mark.distributed, pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE, BROKEN = "payments", "payments-api"  # the other distributed tests restart shop and search


@dataclass
class Alerted:
    """A run on the overrun cluster, ended, with the messages that name it."""

    dag_id: str
    run_id: str
    run: dict[str, Any]
    mails: list[Mail] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    noted: dict[str, Any] = field(default_factory=dict)

    def posts_of(self, event: str) -> list[Post]:
        return [p for p in self.posts if p.body.get("event") == event]

    def mails_about(self, words: str) -> list[Mail]:
        return [m for m in self.mails if words in m.subject]


def about(receivers: Receivers, run_id: str) -> tuple[list[Mail], list[Post]]:
    return [m for m in receivers.smtp.received if run_id in m.body()], [p for p in receivers.http.received if p.body.get("run_id") == run_id]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, explain: Callable[[], Any] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {explain()}")
        time.sleep(1)
    return value


def received(receivers: Receivers, run_id: str) -> tuple[int, int]:
    mails, posts = about(receivers, run_id)
    return len(mails), len(posts)


def what_happened(deployment: Deployment, receivers: Receivers, dag_id: str, run_id: str) -> str:
    """For a timeout's message: the run, its tasks, what the receivers got, and the dag-processor's callback lines."""
    home = deployment.processes.home
    callbacks = [line[:400] for path in sorted((home / "logs" / "dag_processor").rglob("rollout_restart.py.log")) for line in path.read_text(errors="replace").splitlines()
                 if "allback" in line or "alert" in line or "rror" in line]
    return (
        f"run {deployment.api.dag_run(dag_id, run_id)['state']}, tasks {deployment.api.task_states(dag_id, run_id)}; "
        f"mails {[m.subject for m in receivers.smtp.received]}; posts {[(p.body.get('event'), p.body.get('run_id')) for p in receivers.http.received]}; "
        f"dag-processor: {callbacks[-20:]}"
    )


def set_never_ready(staging: Staging, broken: bool) -> None:
    def edit(obj: dict[str, Any]) -> None:
        annotations = obj["spec"]["template"]["metadata"].setdefault("annotations", {})
        if broken:
            annotations[NEVER_READY_ANNOTATION] = "true"
        else:
            annotations.pop(NEVER_READY_ANNOTATION, None)

    staging.store.mutate(DEPLOYMENTS, NAMESPACE, BROKEN, edit)


def available_again(staging: Staging) -> bool:
    d = staging.store.get(DEPLOYMENTS, NAMESPACE, BROKEN)
    status, want = d.get("status") or {}, d["spec"].get("replicas", 1)
    return status.get("observedGeneration") == d["metadata"].get("generation") and status.get("updatedReplicas") == want and status.get("availableReplicas") == want and status.get("replicas") == want


# ----------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def dry_run_in_time(deployment: Deployment, alert_receivers: Receivers, overrun_cluster: str) -> Alerted:
    dag_id = f"rollout_restart__{overrun_cluster}"
    run_id = deployment.api.trigger(dag_id, {"dry_run": True, "namespaces": [NAMESPACE]})
    run = deployment.api.wait_for_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success", deployment.api.task_states(dag_id, run_id)
    return Alerted(dag_id, run_id, run)


@pytest.fixture(scope="module")
def overrun_then_marked_failed(deployment: Deployment, staging: Staging, alert_receivers: Receivers, overrun_cluster: str, dry_run_in_time: Alerted) -> Alerted:
    api, dag_id = deployment.api, f"rollout_restart__{overrun_cluster}"
    set_never_ready(staging, True)
    try:
        run_id = api.trigger(dag_id, {"dry_run": False, "ignore_window": True, "namespaces": [NAMESPACE], "kinds": ["Deployment"]})
        # A minute after it was queued the run is still rolling (its new pods never become Ready):
        # the scheduler finds the deadline passed, the triggerer runs its callback.
        explain = lambda: what_happened(deployment, alert_receivers, dag_id, run_id)  # noqa: E731
        wait_for("the window overrun's messages", lambda: min(received(alert_receivers, run_id)) >= 1, timeout=300, explain=explain)
        noted = {"tasks_at_overrun": api.task_states(dag_id, run_id), "run_at_overrun": api.dag_run(dag_id, run_id)["state"]}
        # What the UI's "Mark run as failed" sends; the cleanup teardown still runs, then the run fails.
        api.mark_run(dag_id, run_id, "failed")
        run = api.wait_for_run(dag_id, run_id, timeout=300)
        wait_for("the failure's messages", lambda: min(received(alert_receivers, run_id)) >= 2, timeout=300, explain=explain)
        time.sleep(5)  # anything more (a duplicate) would have come by now
    finally:
        set_never_ready(staging, False)
    staging.cluster.wait_for(lambda: available_again(staging), timeout=180)
    mails, posts = about(alert_receivers, run_id)
    return Alerted(dag_id, run_id, run, mails, posts, noted)


# -------------------------------------------------------------------------------------------- tests
def test_a_run_still_going_when_its_window_closed_is_reported_once_to_each_destination(overrun_then_marked_failed: Alerted, deployment: Deployment, overrun_cluster: str) -> None:
    alerted = overrun_then_marked_failed
    assert alerted.noted["run_at_overrun"] == "running", alerted.noted
    [post] = alerted.posts_of("window_overrun")
    [mail] = alerted.mails_about("outlasted its maintenance window")
    assert mail.subject == f"[kube-maintenance] rollout_restart on {overrun_cluster} outlasted its maintenance window"
    assert post.path == WEBHOOK_PATH and post.body["cluster"] == overrun_cluster and post.body["operation"] == "rollout_restart"
    assert post.body["url"] == f"{deployment.base_url}/dags/{alerted.dag_id}/runs/{quote(alerted.run_id)}"
    # Started outside its one-minute window (ignore_window), unless the test ran at 00:00 UTC.
    assert "still running at" in post.body["detail"] and ("started outside its maintenance window" in post.body["detail"] or "which closed at" in post.body["detail"]), post.body


def test_a_run_marked_failed_in_the_ui_is_reported_once_to_each_destination(overrun_then_marked_failed: Alerted, deployment: Deployment, overrun_cluster: str) -> None:
    alerted = overrun_then_marked_failed
    assert alerted.run["state"] == "failed"
    [post] = alerted.posts_of("run_failed")
    [mail] = alerted.mails_about(" failed at ")
    link = f"{deployment.base_url}/dags/{alerted.dag_id}/runs/{quote(alerted.run_id)}"
    payload = post.body
    assert {k: payload[k] for k in ("cluster", "operation", "dag_id", "run_id", "url")} == {
        "cluster": overrun_cluster, "operation": "rollout_restart", "dag_id": alerted.dag_id, "run_id": alerted.run_id, "url": link,
    }
    # The step that was running when the run was marked failed: no error of its own, so it says so.
    step = payload["failed_step"]
    assert (step["task_id"], step["map_index"]) == ("restart", 0) and step["reason"] == NO_RECORD, step
    # The teardown's failure, recorded in the Celery worker, read back in the dag-processor.
    [cleanup] = payload["also_failed"]
    assert cleanup["task_id"] == "cleanup" and cleanup["reason"].startswith("the run did not complete: restart_0 failed"), cleanup
    assert mail.subject.startswith(f"[kube-maintenance] rollout_restart on {overrun_cluster} failed at restart[0]")
    body = " ".join(mail.body().split())
    assert f"Cluster {overrun_cluster}" in body and f"Run {alerted.run_id}" in body and f"Link {link}" in body and "Failed step restart[0]" in body


def test_a_run_that_ended_within_its_window_sends_nothing(dry_run_in_time: Alerted, overrun_then_marked_failed: Alerted, alert_receivers: Receivers) -> None:
    """Checked once the other run has waited past this one's deadline (a minute after it was queued)."""
    run = dry_run_in_time.run
    took = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["queued_at"])
    mails, posts = about(alert_receivers, dry_run_in_time.run_id)
    if took.total_seconds() < 60:
        assert mails == [] and posts == [], (mails, [p.body for p in posts])
    else:  # a machine this slow made the dry run outlast its one-minute window: that alone is reported
        assert [p.body["event"] for p in posts] == ["window_overrun"] and len(mails) == 1
