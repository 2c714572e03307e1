"""Approval for production, on the distributed stack (conftest.py), through the REST API as the UI
does it: the staging cluster, registered a second time as ``staging_approval`` with
``requires_approval: true``.

- A real rollout restart waits in its ``approval`` task (state ``awaiting_input``) having changed
  nothing, not even the lock; its human-in-the-loop details (``GET .../hitlDetails``) hold the plan;
  *Approve* sent as the UI's *Required actions* form sends it (``PATCH .../hitlDetails``) lets it
  go on, restart the namespace and write an ``approve`` audit line naming the user.
- A real CronJob refresh, rejected the same way, ends with nothing changed on the cluster (no write
  request at all during the run, the stale Jobs still there), its later steps skipped, its cleanup
  run, and a ``reject`` audit line naming the user.
- A dry run (beside the approved one) asks no one: it ends without an answer, and its approval task
  has no HITL request.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from airflow_stack.airflow_processes import AirflowApi, parse_audit
from airflow_stack.deployment import Deployment
from airflow_stack.sandbox_stack import USERNAME, Staging
from test_cronjob_refresh import seeded_stale_jobs

from sandbox.resources import DEPLOYMENTS

pytestmark = [pytest.mark.distributed, pytest.mark.integration, pytest.mark.timeout(900)]

RUN_TIMEOUT = 300
APPROVAL = "approval"
NAMESPACE = "search"  # restarted by the approved run; the other distributed tests restart "shop"


# ------------------------------------------------------------------------------------------ helpers
def hitl_path(dag_id: str, run_id: str, task_id: str = APPROVAL, map_index: int = -1) -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"


def wait_until_awaiting_input(api: AirflowApi, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> None:
    """Until the approval task waits for a person (``awaiting_input``); fail if the run or the task ends first."""
    deadline = time.monotonic() + timeout
    while (state := api.task_states(dag_id, run_id).get(APPROVAL)) != "awaiting_input":
        run = api.dag_run(dag_id, run_id)
        if state in ("success", "failed", "skipped", "upstream_failed") or run["state"] in ("success", "failed") or time.monotonic() > deadline:
            raise AssertionError(f"{dag_id}/{run_id}: the approval never waited (approval {state}, run {run['state']}): {api.task_states(dag_id, run_id)}")
        time.sleep(0.5)


def respond(api: AirflowApi, dag_id: str, run_id: str, option: str) -> dict[str, Any]:
    """What the UI's *Required actions* form sends for the task: the chosen option, no params."""
    return api.request("PATCH", hitl_path(dag_id, run_id), json={"chosen_options": [option], "params_input": {}}).json()


@dataclass
class Answered:
    """A real run that waited for approval and was answered through the REST API, then ended."""

    dag_id: str
    run_id: str
    waiting: dict[str, Any]  # the HITL details read while it waited
    writes_while_waiting: list[Any]  # write requests to the cluster from the trigger until the answer
    response: dict[str, Any]
    run: dict[str, Any]
    states: dict[str, Any]
    audit: list[dict[str, Any]]
    logs: dict[str, str]
    writes: list[Any]  # write requests to the cluster from the trigger to the run's end
    noted: dict[str, Any] = field(default_factory=dict)


def run_and_answer(api: AirflowApi, staging: Staging, dag_id: str, conf: dict[str, Any], option: str) -> Answered:
    """Trigger a real run, wait until it waits for approval, read its request, answer ``option`` as
    the UI does, and wait for the run to end."""
    seq = staging.request_seq()
    run_id = api.trigger(dag_id, conf)
    wait_until_awaiting_input(api, dag_id, run_id)
    writes_while_waiting = staging.writes_since(seq)
    waiting = api.get(hitl_path(dag_id, run_id))
    response = respond(api, dag_id, run_id, option)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    logs = api.run_logs(dag_id, run_id)
    audit = [record for text in logs.values() for record in parse_audit(text)]
    return Answered(dag_id, run_id, waiting, writes_while_waiting, response, run, api.task_states(dag_id, run_id), audit, logs, staging.writes_since(seq))


def lines(audit: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [r for r in audit if r["action"] == action]


# ----------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def approved_restart(deployment: Deployment, staging: Staging, approval_cluster: str) -> Answered:
    """A real rollout restart of one namespace, approved; beside it (to save the stack's time: a dry
    run takes no lock and writes nothing) a dry run of node replacement, which nobody answers."""
    api = deployment.api
    deployments = sorted(d["metadata"]["name"] for d in staging.store.iter(DEPLOYMENTS, NAMESPACE))
    assert deployments, f"no Deployment in {NAMESPACE}"
    dry: dict[str, Any] = {"dag_id": f"node_replacement__{approval_cluster}"}
    dry["run_id"] = api.trigger(dry["dag_id"], {"dry_run": True})
    started = time.time()
    answered = run_and_answer(api, staging, f"rollout_restart__{approval_cluster}", {"dry_run": False, "ignore_window": True, "namespaces": [NAMESPACE]}, "Approve")
    dry["run"] = api.wait_for_run(dry["dag_id"], dry["run_id"], timeout=RUN_TIMEOUT)  # nobody answered it: it ended on its own
    answered.noted.update(deployments=deployments, started=started, answered_later=api.get(hitl_path(answered.dag_id, answered.run_id)), dry_run=dry)
    return answered


@pytest.fixture(scope="module")
def rejected_refresh(deployment: Deployment, staging: Staging, approval_cluster: str, approved_restart: Answered) -> Answered:
    """A real CronJob refresh of the seeded stale Jobs, rejected."""
    stale = {ref: job["metadata"]["uid"] for ref, job in seeded_stale_jobs(staging.store).items()}
    answered = run_and_answer(deployment.api, staging, f"cronjob_refresh__{approval_cluster}", {"dry_run": False, "ignore_window": True}, "Reject")
    answered.noted.update(stale=stale, after={ref: job["metadata"]["uid"] for ref, job in seeded_stale_jobs(staging.store).items()})
    return answered


# -------------------------------------------------------------------------------------------- tests
def test_an_approved_run_waits_with_its_plan_then_goes_on_and_names_who_approved(approved_restart: Answered, staging: Staging, approval_cluster: str) -> None:
    a = approved_restart
    deployments = a.noted["deployments"]
    # Waiting, it had changed nothing on the cluster: not even the lock was taken.
    assert a.writes_while_waiting == [], a.writes_while_waiting
    # The request a person sees: the two options, and the plan.
    waiting = a.waiting
    assert waiting["options"] == ["Approve", "Reject"] and waiting["response_received"] is False and waiting["multiple"] is False
    assert waiting["subject"] == f"Approve: restart {len(deployments)} workload{'s' if len(deployments) > 1 else ''} in 1 namespace on {approval_cluster}"
    body = waiting["body"]
    assert f"## Namespace-wide rollout restart on `{approval_cluster}`" in body and f"namespace `{NAMESPACE}`" in body
    for name in deployments:
        assert f"deployment `{name}`" in body, body
    # Approved as the admin user: the run went on and succeeded, and restarted the namespace.
    assert a.response["chosen_options"] == ["Approve"] and a.response["responded_by"]["name"] == USERNAME
    assert a.run["state"] == "success", a.states
    assert a.states[APPROVAL] == "success" and a.states["preflight"] == "success" and a.states["cleanup"] == "success", a.states
    later = a.noted["answered_later"]
    assert later["response_received"] is True and later["chosen_options"] == ["Approve"] and later["responded_by_user"]["name"] == USERNAME
    (approve,) = lines(a.audit, "approve")
    assert (approve["cluster"], approve["dag"], approve["run"], approve["after"], approve["outcome"]) == (approval_cluster, a.dag_id, a.run_id, f"approved by {USERNAME}", "done")
    assert approve["detail"]["by"] == USERNAME and approve["detail"]["operation"] == "rollout_restart" and approve["detail"]["plan"] == waiting["subject"]
    assert not lines(a.audit, "reject")
    restarted = {r["target"].lower() for r in lines(a.audit, "restart") if r["outcome"] == "done"}
    assert restarted == {f"deployment/{NAMESPACE}/{name}" for name in deployments}, restarted
    for name in deployments:
        annotations = staging.store.get(DEPLOYMENTS, NAMESPACE, name)["spec"]["template"]["metadata"].get("annotations") or {}
        restarted_at = annotations.get("kubectl.kubernetes.io/restartedAt")
        assert restarted_at and datetime.fromisoformat(restarted_at.replace("Z", "+00:00")).timestamp() >= a.noted["started"] - 5, (name, restarted_at)
    assert staging.lease() is None


def test_a_rejected_run_changes_nothing_ends_and_names_who_rejected(rejected_refresh: Answered, staging: Staging, approval_cluster: str) -> None:
    r = rejected_refresh
    stale = r.noted["stale"]
    # The plan shown: the judges' stale Jobs, to be deleted.
    assert r.waiting["subject"] == f"Approve: delete {len(stale)} stale Jobs, start 0 fresh Jobs on {approval_cluster}", r.waiting["subject"]
    for ref in stale:
        assert f"delete Job `{ref}`" in r.waiting["body"], r.waiting["body"]
    assert r.response["chosen_options"] == ["Reject"] and r.response["responded_by"]["name"] == USERNAME
    # The run ended; every step after the approval skipped; the cleanup teardown ran.
    assert r.run["state"] == "success", r.states
    assert r.states[APPROVAL] == "success" and r.states["cleanup"] == "success", r.states
    later = [k for k in r.states if k == "preflight" or k.startswith(("refresh.delete_stale_jobs", "refresh.wait_for_pods_gone", "refresh.create_fresh_jobs"))]
    assert "preflight" in later and any(k.startswith("refresh.delete_stale_jobs") for k in later), r.states
    assert {r.states[k] for k in later} == {"skipped"}, r.states
    # Nothing changed on the cluster: no write request at all from the trigger to the end, the stale Jobs all there.
    assert r.writes == [], r.writes
    assert r.noted["after"] == stale
    assert staging.lease() is None
    # One reject line naming the user and the operation; no change, no lock in the audit trail.
    (reject,) = lines(r.audit, "reject")
    assert (reject["cluster"], reject["dag"], reject["run"], reject["after"], reject["dry_run"]) == (approval_cluster, r.dag_id, r.run_id, f"rejected by {USERNAME}", False)
    assert reject["detail"]["by"] == USERNAME and reject["detail"]["operation"] == "cronjob_refresh" and "timed_out" not in reject["detail"]
    assert not [x for x in r.audit if x["action"] in ("approve", "lock", "delete-job", "create-job")], r.audit
    assert len(lines(r.audit, "summary")) == 1


def test_a_dry_run_asks_no_one(deployment: Deployment, approved_restart: Answered) -> None:
    """Triggered beside the approved run, it ended with nobody answering it."""
    api, dry = deployment.api, approved_restart.noted["dry_run"]
    dag_id, run_id = dry["dag_id"], dry["run_id"]
    states = api.task_states(dag_id, run_id)
    assert dry["run"]["state"] == "success" and states[APPROVAL] == "success", states
    # The dry run went on past the approval: preflight ran (logged the lock it would take, then ended the dry run).
    assert [(x["action"], x["outcome"]) for x in parse_audit(api.task_log(dag_id, run_id, "preflight", 1)) if x["action"] == "lock"] == [("lock", "planned")]
    assert api.request("GET", hitl_path(dag_id, run_id), expect=(404,)).status_code == 404, "no human-in-the-loop request was made"
    log = api.task_log(dag_id, run_id, APPROVAL, 1)
    assert "dry run: nothing will change, so no approval is asked for" in log, log[-2000:]
    # Its lines are all a dry run's, and it takes no lock.
    audit = [x for text in api.run_logs(dag_id, run_id).values() for x in parse_audit(text)]
    assert audit and {x["dry_run"] for x in audit} == {True} and not [x for x in audit if x["action"] in ("approve", "reject")], audit
