"""The three DAGs, end to end, on a distributed Airflow: PostgreSQL and Redis started by the test,
api-server, scheduler, dag-processor, one Celery worker and a triggerer as separate processes
(CeleryExecutor), against the staging sandbox cluster.

Each DAG is triggered through the REST API with a real (not dry) small run; the test waits for the
run, reads every task log back through the REST API, checks what the audit lines say changed and the
cluster's end state, and that every task ran in the Celery worker process.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import boto3
import pytest
from airflow_stack.airflow_processes import AirflowApi, parse_audit, trigger_log_jobs
from airflow_stack.deployment import Deployment
from airflow_stack.sandbox_stack import Staging
from test_cronjob_refresh import pods_slow_to_go, seeded_stale_jobs

from sandbox.resources import DEPLOYMENTS, JOBS, NODES, PDBS, PODS

pytestmark = [pytest.mark.distributed, pytest.mark.integration, pytest.mark.timeout(900)]

CLUSTER = "staging"
RUN_TIMEOUT = 300


# ------------------------------------------------------------------------------------------ helpers
@dataclass
class Finished:
    """A run triggered through the REST API and ended, with every task's audit records (read back
    through the REST API, in log order) and what the test noted around it."""

    dag_id: str
    run_id: str
    run: dict[str, Any]
    audit: list[dict[str, Any]]
    noted: dict[str, Any] = field(default_factory=dict)


def run_and_read(api: AirflowApi, dag_id: str, conf: dict[str, Any], during: Callable[[str], None] | None = None) -> Finished:
    """Trigger through the REST API, (call ``during(run_id)``,) wait for the run to end and read every
    task log back through the REST API. The run must succeed."""
    run_id = api.trigger(dag_id, conf)
    if during is not None:
        during(run_id)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    logs = api.run_logs(dag_id, run_id)
    audit = [record for text in logs.values() for record in parse_audit(text)]
    if run["state"] != "success":
        states = api.task_states(dag_id, run_id)
        unsuccessful = {task for task, state in states.items() if state != "success"}
        # The end of every log of a task that did not succeed: what it said last is why.
        raise AssertionError(f"run {run_id} ended {run['state']}: {states}\n" + "\n".join(f"--- {key}\n{text[-4000:]}" for key, text in logs.items() if key.split("#")[0] in unsuccessful))
    return Finished(dag_id, run_id, run, audit)


def done(audit: list[dict[str, Any]], action: str) -> set[str]:
    return {r["target"] for r in audit if r["action"] == action and r["outcome"] == "done"}


def check_common(finished: Finished) -> None:
    """Every line belongs to this run on staging, none is a dry run's, and there is one summary."""
    audit = finished.audit
    assert audit, f"{finished.dag_id}: no audit line in any task log read through the REST API"
    assert {(r["cluster"], r["dag"], r["run"], r["dry_run"]) for r in audit} == {(CLUSTER, finished.dag_id, finished.run_id, False)}
    summaries = [r for r in audit if r["action"] == "summary"]
    assert len(summaries) == 1, summaries


def node_under_a_budget(staging: Staging) -> tuple[str, str, str]:
    """A node in an Auto Scaling group carrying a pod that a PodDisruptionBudget covers: the node,
    its EC2 instance id, and the budget (``namespace/name``, for the sandbox's ``blocked_pdbs`` fault)."""
    asg = boto3.client(
        "autoscaling", region_name=staging.world.region(CLUSTER), endpoint_url=staging.world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    in_groups = {i["InstanceId"] for i in asg.describe_auto_scaling_instances()["AutoScalingInstances"]}
    instances = {n["metadata"]["name"]: n["spec"].get("providerID", "").rsplit("/", 1)[-1] for n in staging.store.iter(NODES)}
    for pdb in sorted(staging.store.iter(PDBS), key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        namespace, selector = pdb["metadata"]["namespace"], pdb["spec"]["selector"]["matchLabels"]
        for pod in staging.store.iter(PODS, namespace):
            node = pod["spec"].get("nodeName")
            if node and instances.get(node) in in_groups and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()):
                return node, instances[node], f"{namespace}/{pdb['metadata']['name']}"
    raise AssertionError(f"no node in an Auto Scaling group carries a pod under a PodDisruptionBudget: {staging.node_names()}")


def worker_workloads(deployment: Deployment) -> str:
    """What the Celery worker logged of the workloads it executed (one line each)."""
    text = deployment.processes.log_path("celery-worker").read_text(errors="replace")
    return "\n".join(line for line in text.splitlines() if "Executing workload in Celery" in line)


def triggerer_log(deployment: Deployment) -> str:
    """The triggerer process's own log (every start of it, appended). The hook for deferrable waits
    (issue 9, item 2): once tasks defer, a test reads here that their triggers ran in this process."""
    return deployment.processes.log_path("triggerer").read_text(errors="replace")


def triggerer_heartbeat(deployment: Deployment) -> tuple[str, str | None]:
    """The triggerer's health and latest heartbeat, as the api-server reports them."""
    body = deployment.api.session.get(f"{deployment.base_url}/api/v2/monitor/health", timeout=10).json()["triggerer"]
    return body["status"], body.get("latest_triggerer_heartbeat")


def kill_triggerer_during_a_blocked_drain(deployment: Deployment, staging: Staging, dag_id: str, budget: str, noted: dict[str, Any]) -> Callable[[str], None]:
    """A ``during`` for ``run_and_read`` (the budget already refuses every eviction): SIGKILL the
    triggerer as the run starts, wait until the drain is stuck waiting (up for reschedule, or
    deferred: the batch defers between drain passes, and with no triggerer it stays deferred), start a
    new triggerer, let the drain wait a few pokes more with it, then let the budget allow evictions
    again: the batch's deferred wait survives the triggerer's death."""

    def during(run_id: str) -> None:
        api = deployment.api
        deployment.processes.stop_component("triggerer")
        noted["triggerer_killed_at"] = time.time()
        try:
            drain = "batch[0]"
            deadline = time.monotonic() + 120
            while (state := api.task_states(dag_id, run_id).get(drain)) != "deferred":
                if time.monotonic() > deadline or api.dag_run(dag_id, run_id)["state"] in ("success", "failed"):
                    raise AssertionError(f"{drain} never waited on the blocked budget {budget}: {api.task_states(dag_id, run_id)}")
                time.sleep(0.5)
            noted["drain_when_triggerer_restarted"] = state
            deployment.processes.start_component("triggerer")
            time.sleep(5)
            noted["drain_after_restart"] = api.task_states(dag_id, run_id).get(drain)
        finally:
            staging.cluster.faults.clear()
            if "triggerer" not in deployment.processes.processes:
                deployment.processes.start_component("triggerer")

    return during


# ----------------------------------------------------------------------------------------- the runs
# One real run of each DAG for the module, in this order, each right after the previous one ended
# (they would otherwise wait on each other's cluster lock).
@pytest.fixture(scope="module")
def node_replaced(deployment: Deployment, staging: Staging) -> Finished:
    """A node under a PodDisruptionBudget replaced; the budget refuses the drain's evictions for a
    while, and the triggerer is killed meanwhile and a new one started."""
    dag_id = f"node_replacement__{CLUSTER}"
    victim, instance, budget = node_under_a_budget(staging)
    noted: dict[str, Any] = {"victim": victim, "instance": instance, "nodes_before": set(staging.node_names())}
    staging.cluster.faults.configure({"blocked_pdbs": [budget]})
    conf = {"dry_run": False, "ignore_window": True, "node_names": [victim], "force_unmanaged_pods": True, "delete_emptydir_data": True}
    finished = run_and_read(deployment.api, dag_id, conf, during=kill_triggerer_during_a_blocked_drain(deployment, staging, dag_id, budget, noted))
    finished.noted.update(noted)
    return finished


def hold_pods_until_the_waits_defer(deployment: Deployment, dag_id: str, release: Callable[[], None], waits: int, noted: dict[str, Any]) -> Callable[[str], None]:
    """A ``during`` for ``run_and_read``: the deleted Jobs' pods stay terminating until each group's
    ``wait_for_pods_gone`` (``waits`` of them) is deferred, then go (their going wakes the waits)."""

    def during(run_id: str) -> None:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and api_run_state(deployment.api, dag_id, run_id) not in ("success", "failed"):
                states = {t: s for t, s in deployment.api.task_states(dag_id, run_id).items() if t.startswith("refresh.wait_for_pods_gone")}
                if sum(1 for s in states.values() if s == "deferred") >= waits:
                    noted["waits_deferred"] = states
                    break
                time.sleep(0.2)
        finally:
            release()

    return during


def api_run_state(api: AirflowApi, dag_id: str, run_id: str) -> str:
    return str(api.dag_run(dag_id, run_id)["state"])


@pytest.fixture(scope="module")
def cronjobs_refreshed(deployment: Deployment, staging: Staging, node_replaced: Finished) -> Finished:
    """The demo's two Jobs still on an old image refreshed; their pods take a while to go, so each
    group's wait for them defers to the triggerer (and is woken as they go)."""
    dag_id = f"cronjob_refresh__{CLUSTER}"
    stale = {ref: job["metadata"]["uid"] for ref, job in seeded_stale_jobs(staging.store).items()}
    noted: dict[str, Any] = {"stale": stale}
    patches = pytest.MonkeyPatch()
    try:
        release = pods_slow_to_go(staging.store, patches, set(stale.values()))
        waits = len({ref.split("/")[0] for ref in stale})
        conf = {"dry_run": False, "ignore_window": True, "pods_gone_timeout_seconds": 120}
        finished = run_and_read(deployment.api, dag_id, conf, during=hold_pods_until_the_waits_defer(deployment, dag_id, release, waits, noted))
    finally:
        patches.undo()
    finished.noted.update(noted)
    return finished


@pytest.fixture(scope="module")
def rollout_restarted(deployment: Deployment, staging: Staging, cronjobs_refreshed: Finished) -> Finished:
    """Every workload of the "shop" namespace restarted."""
    namespace = "shop"
    deployments = sorted(d["metadata"]["name"] for d in staging.store.iter(DEPLOYMENTS, namespace))
    assert deployments, f"no Deployment in {namespace}"
    started = time.time()
    finished = run_and_read(deployment.api, f"rollout_restart__{CLUSTER}", {"dry_run": False, "ignore_window": True, "namespaces": [namespace]})
    finished.noted.update(namespace=namespace, deployments=deployments, started=started)
    return finished


# -------------------------------------------------------------------------------------------- tests
def test_node_replacement_replaces_the_node_its_audit_names(node_replaced: Finished, staging: Staging) -> None:
    victim, instance = node_replaced.noted["victim"], node_replaced.noted["instance"]
    audit = node_replaced.audit
    assert node_replaced.run["conf"]["node_names"] == [victim] and node_replaced.run["conf"]["dry_run"] is False
    check_common(node_replaced)
    assert done(audit, "cordon") == {f"node/{victim}"}, audit
    assert done(audit, "terminate") and all(instance in t for t in done(audit, "terminate")), done(audit, "terminate")
    evicted = done(audit, "evict")
    assert evicted and all(t.startswith("pod/") for t in evicted)
    # The cluster: the node is gone, its instance terminated, a replacement joined (same count), the lock released.
    before, after = node_replaced.noted["nodes_before"], set(staging.node_names())
    assert victim not in after and len(after) == len(before), (before, after)
    assert staging.instance_states()[instance] in ("shutting-down", "terminated")
    assert not any(p["spec"].get("nodeName") == victim for p in staging.store.iter(PODS))
    assert staging.lease() is None


def test_cronjob_refresh_deletes_the_stale_jobs_its_audit_names(cronjobs_refreshed: Finished, staging: Staging) -> None:
    stale, audit = cronjobs_refreshed.noted["stale"], cronjobs_refreshed.audit
    check_common(cronjobs_refreshed)
    assert done(audit, "delete-job") == {f"job/{ref}" for ref in stale}
    for line in (r for r in audit if r["action"] == "delete-job"):
        assert line["detail"]["old_images"] and line["detail"]["new_images"] and line["detail"]["old_images"] != line["detail"]["new_images"], line
    for ref, uid in stale.items():
        job = staging.store.try_get(JOBS, *ref.split("/"))
        assert job is None or job["metadata"]["uid"] != uid, f"{ref} still there"
    assert staging.lease() is None


def test_rollout_restart_restarts_the_namespace_its_audit_names(rollout_restarted: Finished, staging: Staging) -> None:
    namespace, deployments, started = (rollout_restarted.noted[k] for k in ("namespace", "deployments", "started"))
    check_common(rollout_restarted)
    restarted = done(rollout_restarted.audit, "restart")
    assert {f"deployment/{namespace}/{name}" for name in deployments} <= {t.lower() for t in restarted}, restarted
    assert all(f"/{namespace}/" in t for t in restarted), restarted
    for name in deployments:
        annotations = staging.store.get(DEPLOYMENTS, namespace, name)["spec"]["template"]["metadata"].get("annotations") or {}
        restarted_at = annotations.get("kubectl.kubernetes.io/restartedAt")
        assert restarted_at, f"{namespace}/{name} has no restartedAt"
        assert datetime.fromisoformat(restarted_at.replace("Z", "+00:00")).timestamp() >= started - 5, f"{namespace}/{name} restarted before the run: {restarted_at}"
    assert staging.lease() is None


def test_every_task_ran_in_the_celery_worker(deployment: Deployment, node_replaced: Finished, cronjobs_refreshed: Finished, rollout_restarted: Finished) -> None:
    """Each task instance of the three runs was executed by the Celery worker process (its own log
    names it), from the default queue, on this host, and none by the scheduler."""
    executed = worker_workloads(deployment)
    for finished in (node_replaced, cronjobs_refreshed, rollout_restarted):
        instances = [ti for ti in deployment.api.task_instances(finished.dag_id, finished.run_id) if ti["state"] not in ("skipped", "removed", None)]
        assert instances
        for ti in instances:
            assert ti["queue"] == "default" and ti["hostname"], ti
            assert ti["id"] in executed, f"{finished.dag_id}/{finished.run_id} {ti['task_id']}[{ti['map_index']}] ({ti['id']}) is not in the Celery worker's log"
    scheduler = deployment.processes.log_path("scheduler").read_text(errors="replace")
    assert "CeleryExecutor" in scheduler and not re.search(r"LocalExecutor", scheduler)


def test_the_triggerer_killed_mid_wait_comes_back_and_the_run_still_succeeds(deployment: Deployment, node_replaced: Finished) -> None:
    """The node replacement had its triggerer SIGKILLed as it started, and a new one started while
    its drain waited on the budget: the run succeeded (``run_and_read`` checks it), the drain went on
    waiting with the new triggerer, which heartbeats (a triggerer job younger than the kill)."""
    noted = node_replaced.noted
    assert noted["drain_when_triggerer_restarted"] == "deferred", noted
    assert noted["drain_after_restart"] in ("deferred", "running", "scheduled", "queued"), noted

    def healthy_again() -> bool:
        status, heartbeat = triggerer_heartbeat(deployment)
        return status == "healthy" and heartbeat is not None and datetime.fromisoformat(heartbeat).timestamp() > noted["triggerer_killed_at"]

    deployment.processes.wait_until("a new triggerer's heartbeat", healthy_again, timeout=120)
    assert triggerer_log(deployment).count("Starting log server on") == 2, "two triggerer processes wrote to its log, one after the other"


def test_deferred_waits_run_in_the_triggerer(deployment: Deployment, node_replaced: Finished) -> None:
    """The node replacement's batch deferred between its looks at the cluster, and its triggers ran
    in the triggerer started after the kill: the batch's log read through the REST API holds the
    triggers' lines, merged from trigger logs of that triggerer's job (Airflow writes a trigger's log
    beside the task's, named by the triggerer job that ran it, not in the triggerer's own output)."""
    api = deployment.api
    triggerers = api.jobs("TriggererJob")
    assert len(triggerers) == 2, f"the first triggerer and the one started after the kill: {triggerers}"
    after_kill = [j["id"] for j in triggerers if datetime.fromisoformat(j["start_date"]).timestamp() > node_replaced.noted["triggerer_killed_at"]]
    assert len(after_kill) == 1, triggerers
    batches = {key: text for key, text in api.run_logs(node_replaced.dag_id, node_replaced.run_id).items() if key.startswith("batch[")}
    assert batches, "no batch task log"
    text = "\n".join(batches.values())
    assert "Trigger fired event" in text and " starting" in text, text[-3000:]
    assert trigger_log_jobs(text) == set(after_kill), (trigger_log_jobs(text), triggerers)


def test_the_rollout_and_cronjob_waits_ran_in_the_triggerer(deployment: Deployment, node_replaced: Finished, cronjobs_refreshed: Finished, rollout_restarted: Finished) -> None:
    """The rollout restart's shard and each CronJob refresh group's wait for the deleted Jobs' pods
    deferred, and their triggers ran in the triggerer (the one started after the kill): their logs,
    read back through the REST API, hold the triggers' own lines, merged from trigger logs of that
    triggerer's job; on disk those lines are in the trigger logs, never in the worker's."""
    api = deployment.api
    assert sum(1 for s in cronjobs_refreshed.noted.get("waits_deferred", {}).values() if s == "deferred") == 2, cronjobs_refreshed.noted
    after_kill = {j["id"] for j in api.jobs("TriggererJob") if datetime.fromisoformat(j["start_date"]).timestamp() > node_replaced.noted["triggerer_killed_at"]}
    assert after_kill, api.jobs("TriggererJob")
    for finished, task_id, watching in (
        (rollout_restarted, "restart", f"RolloutProgressTrigger on {CLUSTER}: watching deployments in shop"),
        (cronjobs_refreshed, "refresh.wait_for_pods_gone", f"JobPodsGoneTrigger on {CLUSTER}: watching pods in "),
    ):
        logs = {key: text for key, text in api.run_logs(finished.dag_id, finished.run_id).items() if key.startswith(task_id + "[")}
        text = "\n".join(logs.values())
        assert watching in text and "woke by change" in text and "Trigger fired event" in text, text[-3000:]
        assert "resumed: woke by change" in text, "the task resumed in the worker on the trigger's event"
        assert trigger_log_jobs(text) and trigger_log_jobs(text) <= after_kill, (trigger_log_jobs(text), after_kill)
        folder = deployment.processes.home / "logs" / f"dag_id={finished.dag_id}" / f"run_id={finished.run_id}" / f"task_id={task_id}"
        files = [f for f in folder.rglob("*.log") if f.is_file()]
        trigger_files = [f for f in files if ".log.trigger." in f.name]
        assert trigger_files and all(int(f.name.rsplit(".", 2)[-2]) in after_kill for f in trigger_files), [f.name for f in files]
        assert any(watching in f.read_text(errors="replace") for f in trigger_files), [f.name for f in trigger_files]
        assert not any(watching in f.read_text(errors="replace") for f in files if f not in trigger_files), "a trigger line in a worker's log"

