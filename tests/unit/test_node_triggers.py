"""Node replacement's watching triggers (nodes joining, health between validation checks), against
a sandbox cluster over HTTP through an Airflow connection and the registry, as the triggerer runs
them; and the validation's count of healthy checks in a row, woken early by a regression."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kube_maintenance.core.triggers import PokeLaterTrigger
from kube_maintenance.node_replacement import tasks as op
from kube_maintenance.node_replacement.batches import ReplaceBatchOperator
from kube_maintenance.node_replacement.plan import Plan, PlannedNode
from kube_maintenance.node_replacement.triggers import (
    HealthChangeTrigger,
    NodesChangeTrigger,
    PodsOnNodesChangeTrigger,
    health_problems,
    nodes_seen,
)
from sandbox.cluster import SandboxCluster
from sandbox.controllers.nodes import mark_node_not_ready, mark_node_ready
from sandbox.resources import DEPLOYMENTS, NODES, PDBS, PODS
from sandbox.testing import add_pod, add_ready_node

FAR = 60.0  # a deadline no test waits for: an event before it was fired by what the test did


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


def once_listed(cluster: SandboxCluster, resource: str, change: Any) -> Any:
    """``change()`` once the trigger has listed ``resource``: it then watches from that list, so the
    change can only reach it through its watch."""
    seq = len(cluster.requests)

    def go() -> None:
        listed = lambda: any(r.verb == "list" and r.resource == resource for r in cluster.requests.since(seq))  # noqa: E731
        assert cluster.wait_for(listed, timeout=30), f"the trigger never listed {resource}"
        change()

    return go


@pytest.fixture
def cluster(api_cluster: SandboxCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxCluster:
    """The sandbox cluster named "api" in a registry, reached through a ``kubernetes`` connection."""
    monkeypatch.setenv("AIRFLOW_CONN_K8S_API", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(api_cluster.kubeconfig_path)}}))  # type: ignore[attr-defined]
    registry = {
        "version": 1,
        "clusters": [
            {
                "name": "api", "kubernetes_conn_id": "k8s_api", "aws_conn_id": "aws_api", "region": "eu-west-1", "timezone": "UTC",
                "maintenance_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440},
                "protected_namespaces": [], "operations": {"node_replacement": {}},
            }
        ],
    }
    (tmp_path / "clusters.json").write_text(json.dumps(registry))
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(tmp_path / "clusters.json"))
    add_ready_node(api_cluster, "old-1")
    return api_cluster


def nodes_now(cluster: SandboxCluster) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(n)) for n in cluster.store.iter(NODES)]


def round_trip(trigger: Any) -> Any:
    """What the triggerer gets back: the classpath imported, the kwargs through Airflow's encryption."""
    from airflow.models.trigger import Trigger
    from airflow._shared.module_loading import import_string  # as the triggerer imports a trigger

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**Trigger._decrypt_kwargs(Trigger.encrypt_kwargs(kwargs)))


# --------------------------------------------------------------------------------------- round trip
def test_the_triggers_survive_serialisation() -> None:
    state = {"step": 5, "terminated": {"terminated": ["i-0a"], "at": "2026-11-30T10:00:00+00:00"}, "ready_at": None}
    nodes = NodesChangeTrigger("staging", moment(30), state, seen="0123456789abcdef")
    health = HealthChangeTrigger("staging", moment(30), state, problems=["node/b", "deployment/shop/web"], fire_on="any", waiting_for=["deployment/shop/web"])
    for trigger in (nodes, health):
        again = round_trip(trigger)
        assert type(again) is type(trigger)
        assert again.serialize() == trigger.serialize()
    assert round_trip(health).problems == ["deployment/shop/web", "node/b"]
    with pytest.raises(ValueError, match="fire_on"):
        HealthChangeTrigger("staging", moment(30), state, fire_on="better")


# -------------------------------------------------------------------------------------------- nodes
def test_fires_when_a_node_becomes_ready_before_the_deadline(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "joining", ready=False)
    state = {"step": 5, "terminated": {"at": "x"}}
    trigger = NodesChangeTrigger("api", moment(FAR), state, seen=nodes_seen(nodes_now(cluster)))

    payload, at = first_event(trigger, during=once_listed(cluster, "nodes", lambda: mark_node_ready(cluster, "joining")))

    assert at < dt.datetime.fromisoformat(trigger.moment), "fired by the change, not the deadline"
    assert payload["state"] == state, "the batch's state travels in the event"
    changes = payload["woken_by"]["changes"]
    assert [c["ref"] for c in changes] == ["node/joining"], changes
    assert changes[0]["before"].startswith("NotReady") and changes[0]["after"].startswith("Ready"), changes
    assert "error" not in payload["woken_by"]


def test_a_node_that_joins_fires_heartbeats_do_not(cluster: SandboxCluster) -> None:
    seen = nodes_seen(nodes_now(cluster))

    def heartbeat_then_join() -> None:
        node = cluster.store.get(NODES, None, "old-1")
        for condition in node["status"]["conditions"]:
            condition["lastHeartbeatTime"] = "2026-11-30T10:00:05Z"
        cluster.store.update(NODES, node)
        add_ready_node(cluster, "new-1", ready=False)

    payload, _ = first_event(NodesChangeTrigger("api", moment(FAR), {"step": 1}, seen=seen), during=once_listed(cluster, "nodes", heartbeat_then_join))

    assert [(c["ref"], c["before"]) for c in payload["woken_by"]["changes"]] == [("node/new-1", "absent")]


def test_fires_at_once_when_nodes_changed_since_the_step_looked(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "joining", ready=False)
    seen = nodes_seen(nodes_now(cluster))
    mark_node_ready(cluster, "joining")  # between the step's look and the trigger's start

    payload, at = first_event(NodesChangeTrigger("api", moment(FAR), {"step": 1}, seen=seen))

    assert payload["woken_by"]["changes"] == [{"ref": "nodes", "what": "changed since the step looked"}]


def test_fires_at_the_deadline_when_nothing_changes(cluster: SandboxCluster) -> None:
    trigger = NodesChangeTrigger("api", moment(1.5), {"step": 1}, seen=nodes_seen(nodes_now(cluster)))

    payload, at = first_event(trigger)

    assert at >= dt.datetime.fromisoformat(trigger.moment)
    assert payload == {"state": {"step": 1}, "woken_by": {"trigger": "NodesChangeTrigger", "changes": []}}


def test_a_deadline_already_past_fires_at_once_without_a_request(cluster: SandboxCluster) -> None:
    seq = len(cluster.requests)
    payload, _ = first_event(NodesChangeTrigger("api", moment(-5), {"step": 1}))
    assert payload["woken_by"]["changes"] == [] and cluster.requests.since(seq) == []


def test_a_watch_error_ends_the_wait_early_after_a_back_off(cluster: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.core import triggers as core_triggers

    monkeypatch.setattr(core_triggers, "ERROR_BACKOFF_SECONDS", 0.5)
    cluster.faults.configure({"errors": [{"code": 410, "verb": "watch", "resource": "nodes"}]})
    trigger = NodesChangeTrigger("api", moment(FAR), {"step": 1}, seen=nodes_seen(nodes_now(cluster)))
    started = dt.datetime.now(dt.timezone.utc)

    payload, at = first_event(trigger)

    assert started + dt.timedelta(seconds=0.5) <= at < dt.datetime.fromisoformat(trigger.moment), "woke after the back-off, before the deadline"
    assert payload["woken_by"]["changes"] == []
    assert "410" in payload["woken_by"]["error"], payload


def test_a_cut_stream_is_resumed_from_its_resource_version(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "joining", ready=False)
    cluster.faults.configure({"watch_cut_after_seconds": 0.2})  # every watch cut, again and again
    trigger = NodesChangeTrigger("api", moment(FAR), {"step": 1}, seen=nodes_seen(nodes_now(cluster)))

    payload, _ = first_event(trigger, during=once_listed(cluster, "nodes", lambda: mark_node_ready(cluster, "joining")))

    assert [c["ref"] for c in payload["woken_by"]["changes"]] == ["node/joining"], payload
    assert "error" not in payload["woken_by"]


# ------------------------------------------------------------------------- with the step's view
def step_lists(cluster: SandboxCluster, *refs: Any) -> dict[str, tuple[list[Any], str]]:
    """What a step's first look lists, through the client the tasks use."""
    from kube_maintenance.core.k8s import KubeClient

    kube = KubeClient.from_connection("k8s_api", "api")
    seq = len(cluster.requests)
    listed = {ref.plural: kube.list(ref) for ref in refs}
    # The sandbox logs a request once its response is sent: wait for these lists to be logged, so
    # that a test counting requests from here on does not count them as the trigger's.
    deadline = time.monotonic() + 5
    while sum(1 for r in cluster.requests.since(seq) if r.verb == "list") < len(refs) and time.monotonic() < deadline:
        time.sleep(0.01)
    return listed


def requests_since(cluster: SandboxCluster, seq: int) -> list[tuple[str, str]]:
    return [(r.verb, r.resource) for r in cluster.requests.since(seq)]


def test_with_the_steps_view_it_watches_from_its_version_without_a_list_and_hands_the_view_back(cluster: SandboxCluster) -> None:
    from kube_maintenance.core.k8s import NODES as NODE_REF
    from kube_maintenance.node_replacement.views import joining_nodes_view

    add_ready_node(cluster, "joining", ready=False)
    nodes, version = step_lists(cluster, NODE_REF)["nodes"]
    state = {"step": 5, "nodes_view": joining_nodes_view(nodes, version, set())}
    mark_node_ready(cluster, "joining")  # between the step's look and the trigger's start
    seq = len(cluster.requests)

    payload, _ = first_event(NodesChangeTrigger("api", moment(FAR), state))

    assert [(c["ref"], c["after"]) for c in payload["woken_by"]["changes"]] == [("node/joining", "Ready")], payload
    view = payload["state"]["nodes_view"]
    assert view["nodes"]["joining"][1] == "Ready" and int(view["resource_version"]) > int(version), "the view handed back is current"
    assert payload["woken_by"]["view_kept"] == "nodes_view", "and said to be: the step counts from it"
    # (a watch is logged when its stream closes: the thread's ends with its timeout, later)
    assert [r for r in requests_since(cluster, seq) if r[0] == "list"] == [], "it watches from the step's resourceVersion; no list"


def test_with_the_steps_view_a_trigger_that_fired_before_its_watch_opened_does_not_vouch_for_the_view(cluster: SandboxCluster) -> None:
    """A triggerer that picks the trigger up after its moment (a busy one, one that restarted):
    no watch ran, so the view is as old as the step's look. Handing it back as current would keep
    a waiting step counting from it for ever (seen on a distributed Airflow: a replacement that had
    joined was never counted); the step lists again instead."""
    from kube_maintenance.core.k8s import NODES as NODE_REF
    from kube_maintenance.node_replacement.views import joining_nodes_view

    nodes, version = step_lists(cluster, NODE_REF)["nodes"]
    state = {"step": 5, "nodes_view": joining_nodes_view(nodes, version, set())}
    add_ready_node(cluster, "joined-meanwhile")

    payload, _ = first_event(NodesChangeTrigger("api", moment(-1), state))

    assert payload["woken_by"]["changes"] == [] and "error" not in payload["woken_by"]
    assert "view_kept" not in payload["woken_by"], "no watch was opened: the view is not vouched for"
    assert "joined-meanwhile" not in payload["state"]["nodes_view"]["nodes"], "(indeed it is behind)"


def test_with_the_steps_view_heartbeats_of_nodes_it_does_not_wait_for_wake_nothing(cluster: SandboxCluster) -> None:
    from kube_maintenance.core.k8s import NODES as NODE_REF
    from kube_maintenance.node_replacement.views import joining_nodes_view

    nodes, version = step_lists(cluster, NODE_REF)["nodes"]
    state = {"step": 5, "nodes_view": joining_nodes_view(nodes, version, set())}
    assert state["nodes_view"]["nodes"] == {}, "old-1 is Ready and none of the groups': not tracked"

    def heartbeat_then_join() -> None:
        node = cluster.store.get(NODES, None, "old-1")
        for condition in node["status"]["conditions"]:
            condition["lastHeartbeatTime"] = "2026-11-30T10:00:05Z"
        cluster.store.update(NODES, node)
        add_ready_node(cluster, "new-1", ready=False)

    payload, _ = first_event(NodesChangeTrigger("api", moment(FAR), state), during=heartbeat_then_join)

    assert [(c["ref"], c["before"]) for c in payload["woken_by"]["changes"]] == [("node/new-1", "absent")]
    assert list(payload["state"]["nodes_view"]["nodes"]) == ["new-1"]


def test_with_the_steps_view_a_regression_wakes_the_validation_without_a_list(cluster: SandboxCluster) -> None:
    from kube_maintenance.core.k8s import DAEMONSETS as DS, DEPLOYMENTS as DEPLOY, NODES as NODE_REF, STATEFULSETS as STS
    from kube_maintenance.node_replacement.views import health_view, problems_in, ready_nodes_not_tracked

    add_ready_node(cluster, "old-2")
    listed = step_lists(cluster, NODE_REF, DEPLOY, DS, STS)
    view = health_view({kind: listed[ref.plural] for kind, ref in (("node", NODE_REF), ("deployment", DEPLOY), ("daemonset", DS), ("statefulset", STS))}, set())
    state = {"step": 6, "health_view": view}
    seq = len(cluster.requests)

    payload, _ = first_event(
        HealthChangeTrigger("api", moment(FAR), state, problems=problems_in(view), fire_on="worse"), during=lambda: mark_node_not_ready(cluster, "old-2"),
    )

    assert [(c["ref"], c["worse"]) for c in payload["woken_by"]["changes"]] == [("node/old-2", True)], payload
    kept = payload["state"]["health_view"]
    assert problems_in(kept) == ["node/old-2"] and ready_nodes_not_tracked(kept) == 1
    assert [r for r in requests_since(cluster, seq) if r[0] == "list"] == [], "watches only, each from the step's list"


def test_with_the_steps_view_an_expired_version_ends_the_wait_for_the_step_to_list_again(cluster: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.core import triggers as core_triggers
    from kube_maintenance.node_replacement.views import joining_nodes_view

    monkeypatch.setattr(core_triggers, "ERROR_BACKOFF_SECONDS", 0.2)
    cluster.faults.configure({"errors": [{"code": 410, "verb": "watch", "resource": "nodes"}]})
    state = {"step": 5, "nodes_view": joining_nodes_view([], "1", set())}

    payload, _ = first_event(NodesChangeTrigger("api", moment(FAR), state))

    assert "410" in payload["woken_by"]["error"], payload
    assert "view_kept" not in payload["woken_by"], "a view the watch could not keep is not handed back as current"


# ---------------------------------------------------------------------------------------- the drain
def running_on(cluster: SandboxCluster, node: str, *names: str) -> None:
    for name in names:
        add_pod(cluster, name, node_name=node)
    running = lambda: all((cluster.store.try_get(PODS, "default", n) or {}).get("status", {}).get("phase") == "Running" for n in names)  # noqa: E731
    assert cluster.wait_for(running, timeout=30)


def gone(cluster: SandboxCluster, name: str) -> None:
    cluster.store.delete(PODS, "default", name, grace_period=1)
    assert cluster.wait_for(lambda: cluster.store.try_get(PODS, "default", name) is None, timeout=30)


def test_the_drain_wakes_once_the_pods_it_waits_for_are_gone_not_as_they_start_terminating(cluster: SandboxCluster) -> None:
    running_on(cluster, "old-1", "a", "b", "daemon")
    left = {"a": True, "b": True}

    def evicted_one_after_the_other() -> None:
        gone(cluster, "a")  # a deletionTimestamp, then the pod goes: no wake, b is still there
        threading.Event().wait(1.0)  # room for a wrong wake to come first
        left["b"] = False
        gone(cluster, "b")

    trigger = PodsOnNodesChangeTrigger("api", ["old-1"], moment(FAR), {"step": 3}, pods={"old-1": ["default/a", "default/b"]})
    payload, at = first_event(trigger, during=once_listed(cluster, "pods", evicted_one_after_the_other))

    assert left["b"] is False and cluster.store.try_get(PODS, "default", "b") is None, "woken before the last pod it waited for went"
    assert at < dt.datetime.fromisoformat(trigger.moment)
    assert cluster.store.try_get(PODS, "default", "daemon") is not None, "a pod the drain does not wait for does not hold it up"


def test_the_drain_wakes_when_a_new_pod_lands_on_the_node(cluster: SandboxCluster) -> None:
    running_on(cluster, "old-1", "a")
    trigger = PodsOnNodesChangeTrigger("api", ["old-1"], moment(FAR), {"step": 3}, pods={"old-1": ["default/a"]})

    payload, at = first_event(trigger, during=once_listed(cluster, "pods", lambda: add_pod(cluster, "late", node_name="old-1")))

    assert at < dt.datetime.fromisoformat(trigger.moment) and cluster.store.try_get(PODS, "default", "a") is not None


def test_the_drain_wakes_at_once_when_its_pods_went_before_the_trigger_looked(cluster: SandboxCluster) -> None:
    trigger = PodsOnNodesChangeTrigger("api", ["old-1"], moment(FAR), {"step": 3}, pods={"old-1": ["default/went-already"]})
    payload, at = first_event(trigger)
    assert at < dt.datetime.fromisoformat(trigger.moment) and payload["woken_by"] == {"trigger": "PodsOnNodesChangeTrigger"}


def test_the_drain_wakes_when_a_budget_that_refused_allows_again(cluster: SandboxCluster) -> None:
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}
    cluster.store.create(DEPLOYMENTS, {"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}, namespace="default")
    cluster.store.create(PDBS, {"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}, namespace="default")
    status = lambda: cluster.store.get(PDBS, "default", "web").get("status") or {}  # noqa: E731
    assert cluster.wait_for(lambda: status().get("currentHealthy") == 1 and status().get("disruptionsAllowed") == 0, timeout=30), status()

    def one_more_pod() -> None:
        cluster.store.mutate(DEPLOYMENTS, "default", "web", lambda d: d["spec"].__setitem__("replicas", 2))

    trigger = PodsOnNodesChangeTrigger("api", [], moment(FAR), {"step": 3}, budgets=["default/web"])
    payload, at = first_event(trigger, during=once_listed(cluster, "poddisruptionbudgets", one_more_pod))

    assert at < dt.datetime.fromisoformat(trigger.moment)
    assert payload == {"state": {"step": 3}, "woken_by": {"trigger": "PodsOnNodesChangeTrigger", "budget": "default/web"}}
    assert status()["disruptionsAllowed"] == 1


def test_a_drain_trigger_serialised_before_budgets_still_loads() -> None:
    old_kwargs = {"cluster_name": "staging", "nodes": ["a"], "moment": moment(5), "state": {"step": 3}}
    trigger = PodsOnNodesChangeTrigger(**old_kwargs)
    assert trigger.budgets == [] and trigger.pods == {} and round_trip(trigger).serialize() == trigger.serialize()
    full = PodsOnNodesChangeTrigger("staging", ["a"], moment(5), {"step": 3}, budgets=["shop/web"], pods={"a": ["shop/web-1"]})
    assert round_trip(full).serialize() == full.serialize()


# ------------------------------------------------------------------------------------------- health
def test_between_healthy_checks_only_a_regression_wakes(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "old-2")
    add_ready_node(cluster, "booting", ready=False)
    problems = health_problems(nodes_now(cluster), [], [], [])
    assert problems == ["node/booting"]

    def better_then_worse() -> None:
        mark_node_ready(cluster, "booting")  # an improvement: the healthy count's wait goes on
        add_ready_node(cluster, "another-booting", ready=False)  # a new node, not Ready yet: no regression
        mark_node_not_ready(cluster, "old-2")

    payload, _ = first_event(HealthChangeTrigger("api", moment(FAR), {"step": 6}, problems=problems, fire_on="worse"), during=once_listed(cluster, "nodes", better_then_worse))

    assert [(c["ref"], c["worse"]) for c in payload["woken_by"]["changes"]] == [("node/old-2", True)], payload


def test_while_unhealthy_an_improvement_wakes(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "booting", ready=False)
    problems = health_problems(nodes_now(cluster), [], [], [])

    payload, _ = first_event(HealthChangeTrigger("api", moment(FAR), {"step": 6}, problems=problems, fire_on="any"), during=once_listed(cluster, "nodes", lambda: mark_node_ready(cluster, "booting")))

    assert payload["woken_by"]["changes"] == [{"ref": "node/booting", "before": "NotReady", "after": "Ready", "worse": False}]


def test_a_regression_since_the_step_looked_counts(cluster: SandboxCluster) -> None:
    problems = health_problems(nodes_now(cluster), [], [], [])
    assert problems == []
    mark_node_not_ready(cluster, "old-1")

    payload, _ = first_event(HealthChangeTrigger("api", moment(FAR), {"step": 6}, problems=problems, fire_on="worse"))

    assert [(c["ref"], c["worse"]) for c in payload["woken_by"]["changes"]] == [("node/old-1", True)]


def test_a_workload_going_unavailable_is_a_regression() -> None:
    trigger = HealthChangeTrigger("api", moment(FAR), {}, fire_on="worse")
    assert trigger._on_change("deployment", "deployment/shop/web", "available", "unavailable", {})["worse"] is True
    assert trigger._on_change("deployment", "deployment/shop/web", "absent", "unavailable", {})["worse"] is True, "the check would count a new one too"
    assert trigger._on_change("deployment", "deployment/shop/web", "unavailable", "available", {}) is None
    assert trigger._on_change("deployment", "deployment/shop/web", "available", "absent", {}) is None
    assert trigger._on_change("node", "node/a", "Ready", "absent", {})["worse"] is True, "a Ready node gone is one fewer"
    assert trigger._on_change("node", "node/a", "absent", "NotReady", {}) is None, "a node joining is no regression"


def test_while_unhealthy_it_wakes_once_what_the_validation_waits_for_is_back_not_at_each_recovery() -> None:
    problems = ["deployment/shop/a", "deployment/shop/b", "deployment/shop/broken-before"]
    trigger = HealthChangeTrigger("api", moment(FAR), {}, problems=problems, fire_on="any", waiting_for=problems[:2])
    judged = {"deployment/shop/a": "available", "deployment/shop/b": "unavailable", "deployment/shop/broken-before": "unavailable"}
    assert trigger._on_change("deployment", "deployment/shop/a", "unavailable", "available", judged) is None, "b is not back yet"
    judged["deployment/shop/b"] = "available"
    woke = trigger._on_change("deployment", "deployment/shop/b", "unavailable", "available", judged)
    assert woke == {"ref": "deployments", "what": "every deployment the validation waited for is available", "worse": False}
    assert trigger._on_change("deployment", "deployment/shop/c", "available", "unavailable", judged) is None, "worse wakes nothing while unhealthy"
    assert trigger._on_list("deployment", judged) == [woke], "already back when the trigger looks: at once"
    assert trigger._on_list("deployment", {**judged, "deployment/shop/a": "unavailable"}) == []
    assert trigger._on_list("daemonset", {}) == [], "nothing of that kind waited for"


# -------------------------------------------------------------------------------- the batch's choice
def test_the_batch_defers_on_what_the_waiting_step_asked_for() -> None:
    op_ = ReplaceBatchOperator(task_id="batch", cluster_name="staging", batch={"index": 0}, max_batches=1, poke_interval=15)
    at = dt.datetime.now(dt.timezone.utc)
    cases = [
        ({"watch_nodes": ["a"]}, PodsOnNodesChangeTrigger),
        ({"watch_nodes": [], "watch_budgets": ["shop/web"]}, PodsOnNodesChangeTrigger),
        ({"wait_for_nodes": {"seen": "abc"}}, NodesChangeTrigger),
        ({"wait_for_health": {"problems": ["node/a"], "fire_on": "any", "waiting_for": []}, "wake_at": "2026-11-30T10:00:10+00:00"}, HealthChangeTrigger),
        ({}, PokeLaterTrigger),
    ]
    for hints, kind in cases:
        state = {"step": 3, **hints}
        trigger = op_.trigger_for(state, at)
        assert type(trigger) is kind
        assert state == {"step": 3}, "the hints are not carried on"
        assert trigger.state is state
        assert trigger.moment == (hints.get("wake_at") or at.isoformat())


def test_a_batch_never_waits_past_a_third_of_the_locks_lease() -> None:
    # Each look renews the cluster's lock; a wait as long as the lease (a validation interval may be
    # 600 s) would let it lapse, and the next step would stop the run.
    from kube_maintenance.core.lock import LEASE_DURATION_SECONDS

    op_ = ReplaceBatchOperator(task_id="batch", cluster_name="staging", batch={"index": 0}, max_batches=1, poke_interval=15)
    now = dt.datetime.now(dt.timezone.utc)
    far = (now + dt.timedelta(seconds=LEASE_DURATION_SECONDS)).isoformat()
    trigger = op_.trigger_for({"step": 6, "wait_for_health": {"problems": [], "fire_on": "worse", "waiting_for": []}, "wake_at": far}, now)
    assert dt.datetime.fromisoformat(trigger.moment) <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=LEASE_DURATION_SECONDS / 3)


# ----------------------------------------------------------------------------- validation in a row
class FakeKube:
    def __init__(self) -> None:
        self.nodes = [node("n-1", True), node("n-2", True)]
        self.lists: list[tuple[str, str | None, str | None]] = []

    def list(self, ref: Any, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None, project: Any = None) -> tuple[list[Any], str]:
        self.lists.append((ref.plural, namespace, label_selector or field_selector))
        items = list(self.nodes) if ref.plural == "nodes" else []
        return [project(i) for i in items] if project else items, "7"

    def whole_cluster_lists(self) -> list[str]:
        return [plural for plural, namespace, selector in self.lists if namespace is None and selector is None]

    def get_or_none(self, ref: Any, name: str, namespace: str | None = None) -> Any:
        return next((n for n in self.nodes if n["metadata"]["name"] == name), None)


def node(name: str, ready: bool) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.fixture
def validating(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    """``op.validate`` against a FakeKube (two Ready nodes), after a batch that replaced "gone-1":
    two healthy checks in a row, 10 s apart."""
    kube = FakeKube()
    plan = Plan(batches=[[PlannedNode("gone-1", "i-0a", "eu-west-1a", "t", False, "general")]], ready_nodes_before=2)
    params = SimpleNamespace(validation_passes=2, validation_interval_seconds=10, validation_timeout_seconds=600)
    monkeypatch.setattr(op, "_params", lambda cluster, context: (params, SimpleNamespace(kube=kube, holder="h")))
    monkeypatch.setattr(op, "_plan_from", lambda context: plan)
    monkeypatch.setattr(op, "renew_lock", lambda rt: None)
    return kube


def test_validation_counts_healthy_checks_in_a_row_and_starts_again_after_a_regression(validating: FakeKube) -> None:
    kube = validating
    state: dict[str, Any] = {"step": 6}
    context = {"batch_state": state}

    assert op.validate("staging", 0, **context) is False, "one healthy check of two"
    assert state["validation_streak"] == 1 and state["wait_for_health"] == {"problems": [], "fire_on": "worse"}
    assert state["wake_at"] == state["validation_next_at"]
    for hint in ("wake_at", "wait_for_health"):
        state.pop(hint)

    # Woken early by the replaced node going (expected) before the next check is due: wait on.
    state["woken_by"] = {"changes": [{"ref": "node/gone-1", "before": "Ready", "after": "absent", "worse": True}], "view_kept": "health_view"}
    assert op.validate("staging", 0, **context) is False
    assert state["validation_streak"] == 1 and state["wake_at"] == state["validation_next_at"], "no check counted early"
    for hint in ("wake_at", "wait_for_health", "woken_by"):
        state.pop(hint)

    # Woken by a node that went NotReady and back: the count starts again (this check is the first).
    state["woken_by"] = {"changes": [{"ref": "node/n-2", "before": "Ready", "after": "NotReady", "worse": True}], "view_kept": "health_view"}
    assert op.validate("staging", 0, **context) is False
    assert state["validation_streak"] == 1
    state.pop("woken_by")

    # The interval passed: the second check in a row.
    state["validation_next_at"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    assert op.validate("staging", 0, **context) is True

    # Unhealthy: the count is 0 and any improvement wakes the wait.
    kube.nodes[1] = node("n-2", False)
    state.update(validation_streak=1, ready_at=dt.datetime.now(dt.timezone.utc).isoformat())
    assert op.validate("staging", 0, **context) is False
    assert state["validation_streak"] == 0 and state["wait_for_health"] == {"problems": ["node/n-2"], "fire_on": "any", "waiting_for": ["node/n-2"]}


def test_a_validation_resumed_by_its_trigger_judges_from_the_view_it_kept_not_from_a_new_list(validating: FakeKube) -> None:
    from kube_maintenance.node_replacement.views import apply_health_event

    kube = validating
    state: dict[str, Any] = {"step": 6}

    assert op.validate("staging", 0, batch_state=state) is False, "the first healthy check"
    assert sorted(kube.whole_cluster_lists()) == ["daemonsets", "deployments", "nodes", "statefulsets"], "the first look lists"
    kube.lists.clear()

    # The trigger saw n-2 go NotReady and woke the step, handing back the view it kept.
    apply_health_event(state["health_view"], "node", "MODIFIED", node("n-2", False))
    state.update(woken_by={"changes": [{"ref": "node/n-2", "before": "Ready", "after": "NotReady", "worse": True}], "view_kept": "health_view"})
    for hint in ("wake_at", "wait_for_health"):
        state.pop(hint)
    assert op.validate("staging", 0, batch_state=state) is False
    assert state["validation_streak"] == 0 and state["wait_for_health"]["problems"] == ["node/n-2"], "judged from the view: n-2 NotReady"
    assert kube.whole_cluster_lists() == [], f"a resumed check lists no whole collection: {kube.lists}"

    # A trigger that could not keep the view (its watch failed): the step lists again.
    state.update(woken_by={"changes": [], "error": "KubeApiError: 410 Gone: too old resource version"})
    op.validate("staging", 0, batch_state=state)
    assert "nodes" in kube.whole_cluster_lists()
    assert state["validation_streak"] == 1, "the fresh list shows n-2 Ready (as FakeKube has it)"


def test_a_wait_for_replacements_resumed_by_its_trigger_counts_from_its_view(monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.node_replacement.views import apply_node_event

    kube = FakeKube()
    kube.nodes = [provider_node("old-1", "i-01", True), provider_node("keep", "i-02", True)]
    plan = Plan(batches=[[PlannedNode("old-1", "i-01", "eu-west-1a", "t", False, "general")]], ready_nodes_before=2)
    plan.ready_by_group_before = {"general": 2}
    plan.instances_by_group_before = {"general": ["i-01", "i-02"]}
    members = [{"InstanceId": "i-02"}, {"InstanceId": "i-03"}]
    cloud = SimpleNamespace(group_instances=lambda groups: {"general": members})
    params = SimpleNamespace(replacement_timeout_seconds=600)
    patched: list[str] = []
    monkeypatch.setattr(op, "_params", lambda cluster, context: (params, SimpleNamespace(kube=kube, cloud=cloud, holder="h")))
    monkeypatch.setattr(op, "_plan_from", lambda context: plan)
    monkeypatch.setattr(op, "renew_lock", lambda rt: None)
    monkeypatch.setattr(op, "_disable_scale_down", lambda rt, nodes: patched.extend(n["metadata"]["name"] for n in nodes))
    state: dict[str, Any] = {"step": 5, "terminated": {"at": dt.datetime.now(dt.timezone.utc).isoformat()}}

    assert op.wait_for_replacement("staging", 0, batch_state=state) is False, "i-03 has no node yet"
    assert kube.whole_cluster_lists() == ["nodes"] and state["wait_for_nodes"] == {"view": "nodes_view"}
    kube.lists.clear()

    # Looked at again with no trigger in between (as a reschedule would): nobody kept the view
    # current, so it is not counted from; the step lists again.
    state.pop("wait_for_nodes")
    assert op.wait_for_replacement("staging", 0, batch_state=state) is False
    assert kube.whole_cluster_lists() == ["nodes"], "a view no trigger kept is listed again"
    kube.lists.clear()

    # The trigger saw the replacement join and get Ready.
    joined = provider_node("new-1", "i-03", True)
    kube.nodes.append(joined)
    assert apply_node_event(state["nodes_view"], "ADDED", joined) is not None
    state.update(woken_by={"changes": [{"ref": "node/new-1", "before": "absent", "after": "Ready"}], "view_kept": "nodes_view"})
    state.pop("wait_for_nodes")
    assert op.wait_for_replacement("staging", 0, batch_state=state) is True
    assert kube.whole_cluster_lists() == [], f"a resumed wait lists no whole collection: {kube.lists}"
    assert patched == ["new-1"], "the replacement is kept from the autoscaler's scale-down"
    assert "nodes_view" not in state, "the next step keeps a view of its own"


def provider_node(name: str, instance: str, ready: bool) -> dict[str, Any]:
    return {**node(name, ready), "spec": {"providerID": f"aws:///eu-west-1a/{instance}"}}
