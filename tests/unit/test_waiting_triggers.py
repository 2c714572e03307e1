"""Rollout restart's and CronJob refresh's deferred waits: their triggers (a round trip gives an equal
trigger, the deadline is absolute), the list-then-watch they share (``core.watches``) against a
sandbox cluster over HTTP through an Airflow connection and the registry as the triggerer runs
them, the operators deferring with their state and resuming from the event, and the decisions that
say when a shard must look again at the latest."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from kube_maintenance.core.k8s import DEPLOYMENTS as DEPLOYMENTS_REF
from kube_maintenance.core.k8s import PODS as PODS_REF
from kube_maintenance.core.k8s import KubeClient
from kube_maintenance.core.watches import first_relevant_change, watch_target
from kube_maintenance.cronjob_refresh.triggers import JobPodsGoneTrigger
from kube_maintenance.rollout_restart import decisions as rules
from kube_maintenance.rollout_restart.triggers import RolloutProgressTrigger
from sandbox.cluster import SandboxCluster
from sandbox.resources import DEPLOYMENTS, NAMESPACES, PODS
from sandbox.testing import add_ready_node

FAR = 60.0  # a deadline no test waits for: an event before it was fired by what the test did
UID_LABEL = "batch.kubernetes.io/controller-uid"


def moment(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).isoformat()


def first_event(trigger: Any, during: Any = None) -> tuple[dict[str, Any], dt.datetime]:
    """Run the trigger as the triggerer does (its first event ends it), calling ``during()`` in a
    thread meanwhile; the event's payload and when it came."""

    async def go() -> dict[str, Any]:
        if during is not None:
            threading.Thread(target=during, daemon=True).start()
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    payload = asyncio.run(go())
    return payload, dt.datetime.now(dt.timezone.utc)


def once_watching(cluster: SandboxCluster, key: str, change: Any) -> Any:
    """``change()`` once a watch on ``key`` (the sandbox's type key) in "shop" is open: the change can
    then only reach the waiter through that watch."""

    def go() -> None:
        watching = lambda: any(not w.closed and w.namespace == "shop" for w in list(cluster.store._watchers[key]))  # noqa: E731
        assert cluster.wait_for(watching, timeout=30, interval=0.01), f"nothing ever watched {key}"
        change()

    return go


def round_trip(trigger: Any) -> Any:
    """What the triggerer gets back: the classpath imported, the kwargs through Airflow's encryption."""
    from airflow._shared.module_loading import import_string  # as the triggerer imports a trigger
    from airflow.models.trigger import Trigger

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**Trigger._decrypt_kwargs(Trigger.encrypt_kwargs(kwargs)))


@pytest.fixture
def cluster(api_cluster: SandboxCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxCluster:
    """The sandbox cluster named "api" in a registry, reached through a ``kubernetes`` connection,
    with a rolled-out Deployment shop/web."""
    monkeypatch.setenv("AIRFLOW_CONN_K8S_API", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(api_cluster.kubeconfig_path)}}))  # type: ignore[attr-defined]
    registry = {
        "version": 1,
        "clusters": [
            {
                "name": "api", "kubernetes_conn_id": "k8s_api", "aws_conn_id": "aws_api", "region": "eu-west-1", "timezone": "UTC",
                "maintenance_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440},
                "protected_namespaces": [], "operations": {"rollout_restart": {}, "cronjob_refresh": {}},
            }
        ],
    }
    (tmp_path / "clusters.json").write_text(json.dumps(registry))
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(tmp_path / "clusters.json"))
    add_ready_node(api_cluster, "node-1")
    api_cluster.store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    labels = {"app": "web"}
    api_cluster.store.create(
        DEPLOYMENTS,
        {"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}},
        namespace="shop",
    )
    assert api_cluster.wait_for(lambda: rules.rollout_status(api_cluster.store.get(DEPLOYMENTS, "shop", "web"), rules.DEPLOYMENT).done, timeout=30)
    return api_cluster


@pytest.fixture
def kube(cluster: SandboxCluster) -> KubeClient:
    from kubernetes import config as kube_config

    return KubeClient(kube_config.new_client_from_config(str(cluster.kubeconfig_path)), "api")  # type: ignore[attr-defined]


def annotate(cluster: SandboxCluster, name: str, value: str) -> None:
    """Someone else changes shop's Deployment (not the waiting task)."""
    cluster.store.mutate(DEPLOYMENTS, "shop", name, lambda d: d["metadata"].setdefault("annotations", {}).update({"example.com/touched": value}))


def rollout_watch(kube: KubeClient, **seen_overrides: str) -> dict[str, Any]:
    """What a restart shard's look hands its trigger: the list's resourceVersion and what it saw."""
    items, rv = kube.list(DEPLOYMENTS_REF, "shop")
    seen = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in items} | seen_overrides
    return watch_target(DEPLOYMENTS_REF, "shop", rv, seen, only_seen=True)


# ---------------------------------------------------------------------------------------- round trip
STATE = {"began": "2026-11-30T10:00:00+00:00", "at": [1, 2], "patched": {"web": 7}, "restarted": 3}


def test_the_triggers_round_trip_to_equal_triggers_with_the_same_absolute_deadline() -> None:
    deadline = moment(30)
    rollout = RolloutProgressTrigger.for_workloads("staging", DEPLOYMENTS_REF, "shop", "1234", {"web": "1200", "api": "1201"}, "tier=web", deadline, STATE)
    pods = JobPodsGoneTrigger.for_pods(
        "staging", PODS_REF, [{"namespace": "payments", "label_selector": f"{UID_LABEL} in (u-1,u-2)", "resource_version": "99", "seen": {"export-1-abc": "98"}}], deadline, {}
    )
    for trigger in (rollout, pods):
        again = round_trip(trigger)
        assert type(again) is type(trigger) and again == trigger, (again.serialize(), trigger.serialize())
        assert again != round_trip(type(trigger)(trigger.cluster_name, trigger.watches, moment(31), trigger.state)), "the deadline is part of it"
        # Absolute: a time with its offset, carried as it is (not "so many seconds from now"), so a
        # triggerer that starts the trigger again later waits only for what is left of it.
        assert again.moment == deadline and dt.datetime.fromisoformat(again.moment).utcoffset() == dt.timedelta(0)
    assert round_trip(rollout).state == STATE and round_trip(rollout).watches[0]["seen"] == {"web": "1200", "api": "1201"}
    assert round_trip(pods).watches[0]["wake_on"] == ["DELETED"], "the pods of deleted Jobs wake the task only by going"


def test_a_trigger_started_again_after_its_deadline_fires_at_once_without_touching_the_cluster() -> None:
    """As after a triggerer restart that outlasted the deadline: nothing is waited for again. (The
    cluster is not even in the registry: any attempt to reach it would end as an error.)"""
    trigger = round_trip(RolloutProgressTrigger.for_workloads("nowhere", DEPLOYMENTS_REF, "shop", "1", {}, None, moment(-5), STATE))
    payload, _ = first_event(trigger)
    assert payload == {"state": STATE, "woke": "deadline", "why": f"deadline {trigger.moment} reached"}


# ------------------------------------------------------------------------------------ list then watch
def test_the_tasks_own_writes_and_workloads_it_does_not_wait_on_do_not_wake_it_a_change_does(cluster: SandboxCluster, kube: KubeClient) -> None:
    items, rv = kube.list(DEPLOYMENTS_REF, "shop")
    # The look patched web after its list (a restart or the rolled-out mark): that version is seen.
    ours = kube.patch(DEPLOYMENTS_REF, "web", {"metadata": {"annotations": {"kube-maintenance.io/rolled-out": "x"}}}, namespace="shop")
    watch = watch_target(DEPLOYMENTS_REF, "shop", rv, {"web": ours["metadata"]["resourceVersion"]}, only_seen=True)
    # Another Deployment of the namespace, not one the shard waits on, comes and changes.
    other = {"app": "other"}
    cluster.store.create(DEPLOYMENTS, {"metadata": {"name": "other"}, "spec": {"replicas": 1, "selector": {"matchLabels": other}, "template": {"metadata": {"labels": other}, "spec": {"containers": [{"name": "o", "image": "nginx:1.27"}]}}}}, namespace="shop")
    annotate(cluster, "other", "0")
    assert first_relevant_change(kube, watch, 1.5) is None, "the replayed own patch, or another workload, woke it"
    changed: list[str] = []
    thread = threading.Thread(target=once_watching(cluster, DEPLOYMENTS, lambda: annotate(cluster, "web", "1")), daemon=True)
    thread.start()
    changed.append(first_relevant_change(kube, watch, FAR) or "")
    assert changed == ["modified: deployments/shop/web"]


def test_a_change_between_the_look_and_the_trigger_is_not_missed(cluster: SandboxCluster, kube: KubeClient) -> None:
    watch = rollout_watch(kube)
    annotate(cluster, "web", "before the trigger starts")
    assert first_relevant_change(kube, watch, FAR) == "modified: deployments/shop/web", "resumed from the look's resourceVersion"


def test_a_compacted_resource_version_lists_again_and_compares_with_what_the_task_saw(cluster: SandboxCluster, kube: KubeClient) -> None:
    """A trigger started long after its task looked (a triggerer down for a while): the watch's
    resourceVersion is gone (410). Listed again, nothing changed: it goes on watching; something
    changed meanwhile: it fires at once."""
    looked = len(cluster.requests)
    watch = rollout_watch(kube)
    # (the server logs a request once it has answered it: wait for the look's own list to be logged)
    assert cluster.wait_for(lambda: any(r.verb == "list" and r.resource == "deployments" for r in cluster.requests.since(looked)), timeout=10)
    store = cluster.store
    store.mutate(NAMESPACES, None, "shop", lambda ns: ns["metadata"].setdefault("labels", {}).update(later="yes"))  # time passes
    with store.lock:
        store._compacted[DEPLOYMENTS] = store.resource_version  # etcd compacted everything before now
    seq = len(cluster.requests)
    assert first_relevant_change(kube, watch, 1.5) is None
    # (it was handed a resourceVersion: only the 410 makes it list; the request log is in order of completion)
    assert [r.verb for r in cluster.requests.since(seq) if r.resource == "deployments"].count("list") == 1, "410, then a list"
    annotate(cluster, "web", "while the triggerer was down")
    with store.lock:
        store._compacted[DEPLOYMENTS] = store.resource_version
    assert first_relevant_change(kube, watch, FAR) == "modified since the task looked: deployments web"
    # A resourceVersion that keeps expiring (not a real API server's way) ends the wait as an error.
    watch = rollout_watch(kube)
    with store.lock:
        store._compacted[DEPLOYMENTS] = store.resource_version + 10**6
    with pytest.raises(RuntimeError, match="keeps expiring"):
        first_relevant_change(kube, watch, FAR)


def test_a_rollout_progressing_does_not_wake_the_shard_its_settling_does(cluster: SandboxCluster, kube: KubeClient) -> None:
    """Each wake costs a worker slot for a look: the rollout trigger wakes the shard only when one of
    its rollouts settles (done, or failed), as kubectl rollout status would stop waiting on it."""
    from sandbox.config import NEVER_READY_ANNOTATION

    store = cluster.store
    watch = rollout_watch(kube)
    relevant = RolloutProgressTrigger("api", [watch], moment(FAR), {}).relevant(watch)
    before = store.get(DEPLOYMENTS, "shop", "web")["metadata"]["resourceVersion"]

    def template(**annotations: str) -> Any:
        return lambda: store.mutate(DEPLOYMENTS, "shop", "web", lambda d: d["spec"]["template"]["metadata"].setdefault("annotations", {}).update(annotations))

    # A new template whose pods never become Ready: the Deployment rolls (its status changes), never settles.
    threading.Thread(target=once_watching(cluster, DEPLOYMENTS, template(**{NEVER_READY_ANNOTATION: "true"})), daemon=True).start()
    assert first_relevant_change(kube, watch, 2, relevant) is None
    assert cluster.wait_for(lambda: store.get(DEPLOYMENTS, "shop", "web")["metadata"]["resourceVersion"] != before, timeout=5), "it changed meanwhile"
    assert not rules.rollout_settled(store.get(DEPLOYMENTS, "shop", "web"), rules.DEPLOYMENT)
    # The template fixed: the rollout completes, and that wakes the shard.
    threading.Thread(target=once_watching(cluster, DEPLOYMENTS, template(**{NEVER_READY_ANNOTATION: "false"})), daemon=True).start()
    assert first_relevant_change(kube, watch, FAR, relevant) == "modified: deployments/shop/web"
    assert rules.rollout_settled(store.get(DEPLOYMENTS, "shop", "web"), rules.DEPLOYMENT)


def test_the_pods_of_deleted_jobs_wake_the_wait_only_by_going(cluster: SandboxCluster, kube: KubeClient) -> None:
    store = cluster.store
    for name in ("export-1-a", "export-1-b"):
        store.create(PODS, {"metadata": {"name": name, "labels": {UID_LABEL: "u-1"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace="shop")
    items, rv = kube.list(PODS_REF, "shop", label_selector=f"{UID_LABEL} in (u-1)")
    watch = watch_target(PODS_REF, "shop", rv, {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in items}, f"{UID_LABEL} in (u-1)", wake_on=("DELETED",), only_seen=True)

    def change_then_delete() -> None:
        store.mutate(PODS, "shop", "export-1-a", lambda p: p["metadata"]["labels"].update(touched="yes"))  # not a wake
        # A pod the task never saw (made after its look) comes and goes: not a wake either.
        store.create(PODS, {"metadata": {"name": "export-1-c", "labels": {UID_LABEL: "u-1"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace="shop")
        store.remove_now(PODS, "shop", "export-1-c")
        store.remove_now(PODS, "shop", "export-1-b")

    threading.Thread(target=once_watching(cluster, PODS, change_then_delete), daemon=True).start()
    assert first_relevant_change(kube, watch, FAR) == "deleted: pods/shop/export-1-b"


# -------------------------------------------------------------------------- the triggers, end to end
def test_the_rollout_trigger_wakes_the_shard_at_its_workloads_first_change(cluster: SandboxCluster, kube: KubeClient) -> None:
    watch = rollout_watch(kube)
    trigger = round_trip(RolloutProgressTrigger("api", [watch], moment(FAR), STATE))
    payload, at = first_event(trigger, during=once_watching(cluster, DEPLOYMENTS, lambda: annotate(cluster, "web", "progress")))
    assert at < dt.datetime.fromisoformat(trigger.moment), "fired by the change, not the deadline"
    assert payload == {"state": STATE, "woke": "change", "why": "modified: deployments/shop/web"}


def test_a_watch_error_ends_the_wait_early_after_a_back_off_and_the_task_looks_again(cluster: SandboxCluster, kube: KubeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # A lasting error (here a watch the role does not grant) must not wake the task in a loop:
    # the trigger waits out the back-off first (never past its deadline).
    from kube_maintenance.core import triggers as core_triggers

    monkeypatch.setattr(core_triggers, "ERROR_BACKOFF_SECONDS", 0.5)
    watch = rollout_watch(kube)
    cluster.faults.configure({"errors": [{"code": 403, "verb": "watch", "resource": "deployments"}]})
    started = dt.datetime.now(dt.timezone.utc)
    try:
        trigger = round_trip(RolloutProgressTrigger("api", [watch], moment(FAR), STATE))
        payload, at = first_event(trigger)
    finally:
        cluster.faults.clear()
    assert payload["woke"] == "error" and "403" in payload["why"] and payload["state"] == STATE
    assert started + dt.timedelta(seconds=0.5) <= at < dt.datetime.fromisoformat(trigger.moment), "woke after the back-off, before the deadline"


# ----------------------------------------------------------------------------------------- operators
def test_a_restart_shard_defers_with_its_state_and_resumes_from_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from kube_maintenance.rollout_restart import tasks as op
    from kube_maintenance.rollout_restart.shards import RestartShardOperator

    looks: list[dict[str, Any]] = []
    wake_at = dt.datetime(2026, 11, 30, 12, 0, 30, tzinfo=dt.timezone.utc)

    def restart(cluster_name: str, shard: dict[str, Any], state: dict[str, Any], poke_interval: float, **context: Any) -> Any:
        looks.append(dict(state))
        if len(looks) == 1:
            wait = op.Wait(DEPLOYMENTS_REF, "shop", None, "1234", {"web": "1240"}, wake_at, "1 Deployment rollout(s) in shop")
            return op.ShardWaits(wait, wake_at, {**state, **STATE})
        return {"shard": 0, "restarted": state["restarted"]}

    monkeypatch.setattr(op, "restart", restart)
    task = RestartShardOperator(task_id="restart", cluster_name="staging", shard={"index": 0, "namespaces": ["shop"], "max_in_flight": 1}, poke_interval=15)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "resume" and isinstance(trigger, RolloutProgressTrigger)
    assert trigger.state == STATE and trigger.moment == wake_at.isoformat()
    assert trigger.watches == [watch_target(DEPLOYMENTS_REF, "shop", "1234", {"web": "1240"}, only_seen=True)]
    assert task.resume({}, event={"state": trigger.state, "woke": "change", "why": "modified: deployments/shop/web"}) == {"shard": 0, "restarted": 3}
    assert looks == [{}, STATE], "the first look starts afresh, the next one where the event says"


def test_the_wait_for_pods_gone_defers_with_the_pods_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from kube_maintenance.cronjob_refresh import tasks as op
    from kube_maintenance.cronjob_refresh.pods_gone import WaitForPodsGoneOperator

    waits = [{"namespace": "payments", "label_selector": f"{UID_LABEL} in (u-1)", "resource_version": "99", "seen": {"export-1-a": "98"}}]
    at = dt.datetime(2026, 11, 30, 12, 1, tzinfo=dt.timezone.utc)
    answers = iter([op.PodsWait(waits, at, {}), {"index": 0, "jobs": 1}])
    monkeypatch.setattr(op, "wait_for_pods_gone", lambda **kwargs: next(answers))
    task = WaitForPodsGoneOperator(task_id="wait_for_pods_gone", cluster_name="staging", deletion={"index": 0}, poke_interval=15)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, JobPodsGoneTrigger) and trigger.moment == at.isoformat()
    assert trigger.watches == [watch_target(PODS_REF, "payments", "99", {"export-1-a": "98"}, f"{UID_LABEL} in (u-1)", wake_on=("DELETED",), only_seen=True)]
    assert task.resume({}, event={"state": {}, "woke": "change"}) == {"index": 0, "jobs": 1}


# ----------------------------------------------------------------------------- when to look at the latest
T0 = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.timezone.utc)


def _pod(name: str, created: dt.datetime, ready: bool, owner: str = "u-db", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "ownerReferences": [{"uid": owner, "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_stuck_pod_check_is_due_when_the_first_new_unready_pod_reaches_the_limit() -> None:
    sts = {"metadata": {"name": "db", "uid": "u-db"}}
    now = T0 + dt.timedelta(seconds=100)
    pods = [
        _pod("db-0", T0 - dt.timedelta(seconds=50), ready=False),  # older than the restart: not ours
        _pod("db-2", T0 + dt.timedelta(seconds=40), ready=False),
        _pod("db-1", T0 + dt.timedelta(seconds=70), ready=False),
        _pod("db-3", T0 + dt.timedelta(seconds=10), ready=True),  # Ready: never stuck
        _pod("other", T0 + dt.timedelta(seconds=5), ready=False, owner="u-x"),
        _pod("db-4", T0 + dt.timedelta(seconds=5), ready=False, deleting=True),
    ]
    assert rules.next_stuck_check(sts, pods, T0, now, 300) == T0 + dt.timedelta(seconds=340)
    assert rules.next_stuck_check(sts, [], T0, now, 300) == now + dt.timedelta(seconds=300), "a pod made from now on"
    assert rules.next_stuck_check(sts, [], T0, T0 - dt.timedelta(seconds=1), 300) == T0 + dt.timedelta(seconds=300)
    assert rules.stuck_pods(sts, pods, T0, rules.next_stuck_check(sts, pods, T0, now, 300), 300) == ["db-2 (Unknown, not Ready 300s after it was created)"]


def test_a_progress_deadline_is_due_at_the_progressing_conditions_last_update_plus_its_seconds() -> None:
    def deployment(seconds: Any, reason: str = "ReplicaSetUpdated") -> dict[str, Any]:
        spec = {} if seconds is None else {"progressDeadlineSeconds": seconds}
        condition = {"type": "Progressing", "status": "True", "reason": reason, "lastUpdateTime": "2026-11-30T12:00:00Z"}
        return {"metadata": {"name": "web"}, "spec": spec, "status": {"conditions": [condition]}}

    assert rules.progress_deadline_at(deployment(600)) == T0 + dt.timedelta(seconds=600)
    assert rules.progress_deadline_at(deployment(None)) is None
    assert rules.progress_deadline_at(deployment(2**31 - 1)) is None, "MaxInt32: no deadline"
    assert rules.progress_deadline_at(deployment(600, reason="ProgressDeadlineExceeded")) is None, "already past: judged failed"


# ------------------------------------------------------------------------------------------ the DAGs
def test_the_dags_wait_deferrably_with_the_registrys_longest_sleep_and_the_retired_setting_is_accepted() -> None:
    """The restart shards and each group's wait for the pods of deleted Jobs are deferrable operators,
    not sensors: no task of either DAG reschedules. ``poke_interval_seconds`` is their longest sleep
    between looks; ``wait_per_poke_seconds`` (how long a rollout poke watched in a worker) still
    loads, and means nothing any more."""
    from airflow.sdk.bases.sensor import BaseSensorOperator

    from kube_maintenance.core.registry import parse_registry
    from kube_maintenance.cronjob_refresh.dag import cronjob_refresh_dag
    from kube_maintenance.cronjob_refresh.pods_gone import WaitForPodsGoneOperator
    from kube_maintenance.rollout_restart.dag import rollout_restart_dag
    from kube_maintenance.rollout_restart.shards import RestartShardOperator

    operations = {"rollout_restart": {"poke_interval_seconds": 7, "wait_per_poke_seconds": 60}, "cronjob_refresh": {"poke_interval_seconds": 9}}
    entry = {
        "name": "production", "kubernetes_conn_id": "k8s_production", "aws_conn_id": "aws_production", "region": "us-east-1", "timezone": "UTC",
        "maintenance_window": {"start": "02:00", "duration_minutes": 180}, "operations": operations,
    }
    cluster = parse_registry({"version": 1, "clusters": [entry]}).clusters[0]
    rollout, cronjob = rollout_restart_dag(cluster), cronjob_refresh_dag(cluster)
    restart, wait = rollout.get_task("restart"), cronjob.get_task("refresh.wait_for_pods_gone")
    assert restart.operator_class is RestartShardOperator and restart.partial_kwargs["poke_interval"] == 7
    # (in the mapped task group, expanded with the group when the run's plan is known)
    assert isinstance(wait, WaitForPodsGoneOperator) and wait.poke_interval == 9
    for dag in (rollout, cronjob):
        for task in dag.tasks:
            cls = getattr(task, "operator_class", type(task))
            assert not (isinstance(cls, type) and issubclass(cls, BaseSensorOperator)), f"{dag.dag_id}.{task.task_id} is a sensor"
            assert getattr(task, "partial_kwargs", {}).get("mode") != "reschedule" and getattr(task, "mode", None) != "reschedule"


def test_a_look_at_rolling_deployments_names_them_and_when_to_look_again_at_the_latest() -> None:
    """The look's wait: the rollouts in flight alone (as seen after its own patches), and the
    earliest future time one of them must be looked at: its progress deadline, else its timeout. A
    progress deadline already past that the controller has not reported yet is no reason to wake
    at once (the longest sleep applies), so looks never spin."""
    from kube_maintenance.core.audit import AuditTrail
    from kube_maintenance.rollout_restart.tasks import KindRollout, ShardResult

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    since = now - dt.timedelta(seconds=60)

    def deployment(name: str, progressed: dt.datetime, done: bool = False) -> dict[str, Any]:
        status = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1 if not done else 2, "availableReplicas": 1 if not done else 2,
                  "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "lastUpdateTime": progressed.strftime("%Y-%m-%dT%H:%M:%SZ")}]}
        template = {"metadata": {"annotations": {rules.RESTARTED_AT_ANNOTATION: (since + dt.timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")}}}
        return {"metadata": {"name": name, "namespace": "shop", "generation": 2, "resourceVersion": f"rv-{name}", "uid": f"u-{name}"},
                "spec": {"replicas": 2, "progressDeadlineSeconds": 600, "template": template}, "status": status}

    class Lister:
        def __init__(self, items: list[dict[str, Any]]) -> None:
            self.items = items

        def list(self, ref: Any, namespace: str, label_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
            return self.items, "4242"

    params = rules.RolloutRestartParams.from_mapping({"namespaces": ["shop"], "rollout_timeout_seconds": 900, "dry_run": False})
    lagging = deployment("lagging", progressed=now - dt.timedelta(seconds=700))  # past its deadline, not reported
    rolling = deployment("rolling", progressed=now - dt.timedelta(seconds=100))
    settled = deployment("settled", progressed=now, done=True)
    settled["metadata"]["annotations"] = {rules.ROLLED_OUT_ANNOTATION: settled["spec"]["template"]["metadata"]["annotations"][rules.RESTARTED_AT_ANNOTATION]}

    wait = KindRollout(Lister([lagging, settled]), AuditTrail("test"), params, since, "shop", rules.DEPLOYMENT, 2, ShardResult()).look()  # type: ignore[arg-type]
    assert wait is not None and wait.seen == {"lagging": "rv-lagging"} and wait.resource_version == "4242"
    assert wait.wake_at == since + dt.timedelta(seconds=10 + 900 + 1), "its timeout, not its past progress deadline"
    wait = KindRollout(Lister([lagging, rolling, settled]), AuditTrail("test"), params, since, "shop", rules.DEPLOYMENT, 2, ShardResult()).look()  # type: ignore[arg-type]
    assert wait is not None and set(wait.seen) == {"lagging", "rolling"}
    assert wait.wake_at == now - dt.timedelta(seconds=100) + dt.timedelta(seconds=600 + 1), "the earliest future time: rolling's progress deadline"
