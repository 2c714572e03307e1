"""Aborting a real node replacement from Airflow ("Mark as failed") while its drain is blocked."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from airflow_processes import AirflowApi
from browser_stack import LOCK, Staging
from trigger_ui import AirflowUi

from sandbox.resources import NODES, PDBS, PODS

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(600)]

DAG_ID = "node_replacement__staging"


def wait_for(what: str, check: Callable[[], Any], timeout: float, describe: Callable[[], Any] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; {describe()}")
        time.sleep(0.5)


def pdb_protected_node(staging: Staging) -> str:
    """Block a PodDisruptionBudget for ever; the node carrying one of its pods (its drain never ends)."""
    store = staging.store
    pdb = next(iter(store.iter(PDBS)))
    namespace, selector = pdb["metadata"]["namespace"], pdb["spec"]["selector"]["matchLabels"]
    victim = next(
        p["spec"]["nodeName"] for p in store.iter(PODS, namespace) if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    )
    staging.cluster.faults.configure({"blocked_pdbs": [f"{namespace}/{pdb['metadata']['name']}"]})
    return victim


def start_blocked_drain(ui: AirflowUi, api: AirflowApi, staging: Staging, victim: str) -> str:
    """A real replacement of ``victim`` from the browser form; returns once its drain is stuck."""
    run_id = ui.trigger(
        DAG_ID,
        {"dry_run": False, "ignore_window": True, "node_names": [victim], "force_unmanaged_pods": True, "delete_emptydir_data": True},
    )
    conf = api.dag_run(DAG_ID, run_id)["conf"]
    assert conf.get("dry_run") is False and conf.get("ignore_window") is True and conf.get("node_names") == [victim], conf
    wait_for(f"node {victim} to be cordoned", lambda: is_cordoned(staging, victim), 90, lambda: api.task_states(DAG_ID, run_id))
    wait_for(
        "batch 1 to be draining (running, or deferred between drain passes)",
        lambda: api.task_states(DAG_ID, run_id).get("batch[0]") in ("running", "deferred"),
        60,
        lambda: api.task_states(DAG_ID, run_id),
    )
    assert lock_held_by(staging, run_id), f"the run holds the cluster lock while it drains: {staging.lease()}"
    return run_id


def is_cordoned(staging: Staging, node_name: str) -> bool:
    node = staging.node(node_name)
    return bool(node and node["spec"].get("unschedulable"))


def lock_held_by(staging: Staging, run_id: str | None) -> bool:
    lease = staging.lease()
    return bool(lease and run_id and run_id in str(lease["spec"].get("holderIdentity", "")))


def problems_after_abort(api: AirflowApi, staging: Staging, victim: str, run_id: str, instances: dict[str, str], expected_state: str = "failed") -> list[str]:
    """Wait for the run to end; what it left that an aborted run must not leave."""
    run = api.wait_for_run(DAG_ID, run_id, timeout=90)
    settled = time.monotonic() + 30  # the run may end before its clean-up's effects show: allow a moment
    while time.monotonic() < settled and (is_cordoned(staging, victim) or lock_held_by(staging, run_id)):
        time.sleep(0.5)
    problems = []
    if is_cordoned(staging, victim):
        problems.append(f"node {victim} is still cordoned")
    if lock_held_by(staging, run_id):
        problems.append(f"the run still holds the lock {'/'.join(LOCK[1:])}: {staging.lease()}")
    if staging.instance_states() != instances:
        problems.append(f"EC2 instances changed: {instances} -> {staging.instance_states()}")
    if run["state"] != expected_state:
        problems.append(f"the run ended {run['state']!r}, not {expected_state!r}")
    return problems


@dataclass
class BlockedDrain:
    """A real node replacement, triggered from the form, whose drain a PodDisruptionBudget blocks."""

    staging: Staging
    victim: str
    run_id: str
    instances: dict[str, str]  # EC2 instance states before the run


@pytest.fixture
def blocked_drain(ui: AirflowUi, api: AirflowApi, clean_staging: Staging) -> Iterator[BlockedDrain]:
    victim = pdb_protected_node(clean_staging)
    instances = clean_staging.instance_states()
    run_id = None
    try:
        run_id = start_blocked_drain(ui, api, clean_staging, victim)
        yield BlockedDrain(clean_staging, victim, run_id, instances)
    finally:
        restore(api, clean_staging, victim, run_id)


@pytest.mark.parametrize("state", ["failed", "success"])
def test_marking_the_run_mid_drain_uncordons_the_node_and_releases_the_lock(api: AirflowApi, blocked_drain: BlockedDrain, state: str) -> None:
    drain = blocked_drain
    api.mark_run(DAG_ID, drain.run_id, state)  # what the UI's "Mark as failed" / "Mark as success" confirm sends
    problems = problems_after_abort(api, drain.staging, drain.victim, drain.run_id, drain.instances, expected_state=state)
    assert not problems, f"after 'Mark as {state}' mid-drain: {'; '.join(problems)}; task states: {api.task_states(DAG_ID, drain.run_id)}"


def test_marking_a_batch_successful_mid_drain_terminates_nothing_and_the_summary_says_so(api: AirflowApi, blocked_drain: BlockedDrain) -> None:
    drain = blocked_drain
    # The UI's "Mark as success" on the batch's task instance (map index 0), mid-drain.
    body = {"new_state": "success", "note": None, "include_upstream": False, "include_downstream": False, "include_future": False, "include_past": False}
    api.request("PATCH", f"/dags/{DAG_ID}/dagRuns/{drain.run_id}/taskInstances/batch/0", json=body)
    problems = problems_after_abort(api, drain.staging, drain.victim, drain.run_id, drain.instances, expected_state="success")
    states = api.task_states(DAG_ID, drain.run_id)
    assert not problems, f"after 'Mark as success' on a draining batch: {'; '.join(problems)}; task states: {states}"
    assert states.get("batch[0]") == "success" and states.get("cleanup") == "success", states
    cleanup_log = "\n".join(text for key, text in api.run_logs(DAG_ID, drain.run_id).items() if key.startswith("cleanup#"))
    assert f"batch 1 is marked successful but {drain.victim} not replaced" in cleanup_log, cleanup_log[-2000:]


def restore(api: AirflowApi, staging: Staging, victim: str, run_id: str | None) -> None:
    """Leave the sandbox as the other tests expect it, whatever the run left behind (never raising:
    the test's own failure is the one to report)."""
    staging.cluster.faults.clear()
    try:
        if run_id is not None and api.dag_run(DAG_ID, run_id)["state"] not in ("success", "failed"):
            api.mark_run(DAG_ID, run_id, "failed")
            api.wait_for_run(DAG_ID, run_id, timeout=60)
    except AssertionError as exc:
        print(f"restore: could not end run {run_id}: {exc}")
    node = staging.node(victim)
    if node and node["spec"].get("unschedulable"):
        staging.store.mutate(NODES, None, victim, lambda n: n["spec"].pop("unschedulable", None))
    if staging.lease() is not None:
        staging.store.delete(*LOCK)
