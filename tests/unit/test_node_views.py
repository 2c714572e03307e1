"""The views a waiting node-replacement step keeps between its looks (``node_replacement.views``):
kept current by watch events, they must judge as a fresh list would."""
from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

from kube_maintenance.node_replacement.health import unavailable_workloads
from kube_maintenance.node_replacement.plan import is_node_ready
from kube_maintenance.node_replacement.views import (
    apply_health_event,
    apply_node_event,
    health_view,
    joining_nodes_view,
    nodes_of_instances,
    problems_in,
    ready_instances_of,
    ready_nodes_not_tracked,
    unavailable_in,
)

RUN_STARTED = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.timezone.utc)


def node(name: str, ready: bool = True, instance: str | None = None, created: str = "2026-11-01T00:00:00Z", rv: str = "1") -> dict[str, Any]:
    spec = {"providerID": f"aws:///eu-west-1a/{instance}"} if instance else {}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "resourceVersion": rv},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastHeartbeatTime": f"2026-11-30T10:00:{int(rv) % 60:02d}Z"}]},
    }


def deployment(name: str, available: int, want: int = 2, rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": rv}, "spec": {"replicas": want}, "status": {"availableReplicas": available}}


# ------------------------------------------------------------------------------------ joining nodes
def test_a_joining_view_keeps_the_groups_nodes_those_not_ready_and_those_new_since_the_run_started() -> None:
    nodes = [
        node("member", instance="i-0aa1"),
        node("other", instance="i-0bb2"),
        node("booting", ready=False, instance="i-0cc3"),
        node("new", instance="i-0dd4", created="2026-11-30T10:05:00Z"),
    ]
    view = joining_nodes_view(nodes, "100", {"i-0aa1", "i-0ee5"}, RUN_STARTED)
    assert view == {
        "resource_version": "100",
        "nodes": {"member": ["i-0aa1", "Ready"], "booting": ["i-0cc3", "NotReady"], "new": ["i-0dd4", "Ready"]},
    }
    assert ready_instances_of(view) == {"i-0aa1", "i-0dd4"}
    assert nodes_of_instances(view, {"i-0dd4", "i-0bb2"}) == ["new"]


def test_a_joining_view_follows_joins_readiness_and_departures_and_ignores_everyone_elses_heartbeats() -> None:
    view = joining_nodes_view([node("member", instance="i-0a"), node("other", instance="i-0b")], "100", {"i-0a"})

    assert apply_node_event(view, "MODIFIED", node("other", instance="i-0b", rv="101")) is None, "a node nobody waits for"
    assert view["resource_version"] == "101", "the view is current at every event, counted or not"
    assert apply_node_event(view, "MODIFIED", node("member", instance="i-0a", rv="102")) is None, "a heartbeat of a node it waits for"
    joined = apply_node_event(view, "ADDED", node("replacement", ready=False, rv="103"))
    assert joined == {"ref": "node/replacement", "before": "absent", "after": "NotReady"}
    known = apply_node_event(view, "MODIFIED", node("replacement", ready=False, instance="i-0c", rv="104"))
    assert known == {"ref": "node/replacement", "what": "instance i-0c known"}, "its providerID set by the cloud controller"
    assert apply_node_event(view, "MODIFIED", node("replacement", instance="i-0c", rv="105")) == {"ref": "node/replacement", "before": "NotReady", "after": "Ready"}
    assert ready_instances_of(view) == {"i-0a", "i-0c"}
    assert apply_node_event(view, "DELETED", node("member", instance="i-0a", rv="106")) == {"ref": "node/member", "before": "Ready", "after": "absent"}
    assert apply_node_event(view, "BOOKMARK", {"metadata": {"resourceVersion": "110"}}) is None
    assert ready_instances_of(view) == {"i-0c"} and view["resource_version"] == "110"


# ------------------------------------------------------------------------------------------- health
def test_a_health_view_counts_ready_nodes_without_the_replaced_and_lists_what_is_wrong() -> None:
    view = health_view(
        {
            "node": ([node("a"), node("b"), node("replaced"), node("sick", ready=False)], "7"),
            "deployment": ([deployment("web", 2), deployment("api", 1)], "8"),
            "daemonset": ([], "9"),
            "statefulset": ([], "9"),
        },
        {"replaced", "gone-already"},
    )
    assert ready_nodes_not_tracked(view) == 2
    assert unavailable_in(view) == {"deployment/shop/api": "1/2 available"}
    assert problems_in(view) == ["deployment/shop/api", "node/sick"]
    assert view["node"]["tracked"] == {"node/gone-already": "absent", "node/replaced": "Ready"}


def without_versions(view: dict[str, Any]) -> dict[str, Any]:
    return {kind: {k: v for k, v in part.items() if k != "resource_version"} for kind, part in view.items()}


def test_a_health_view_kept_by_events_judges_as_a_fresh_list_would() -> None:
    # Random histories of nodes and Deployments (joins, readiness flapping, replicas changing,
    # deletions); after each event, the view must say what a view built from a fresh list says.
    rng = random.Random(7)
    for _ in range(30):
        nodes = {f"n{i}": node(f"n{i}", ready=rng.random() < 0.8) for i in range(8)}
        deployments = {f"d{i}": deployment(f"d{i}", rng.randint(0, 2)) for i in range(6)}
        replaced = {"n0", "n1", "n-later"}
        view = health_view({"node": (list(nodes.values()), "1"), "deployment": (list(deployments.values()), "1")}, replaced)
        for step in range(2, 60):
            rv = str(step)
            if rng.random() < 0.5:
                kind, pool = "node", nodes
                name = rng.choice(sorted(pool) + ["n-later", f"n{step}"])
                make = lambda: node(name, ready=rng.random() < 0.6, rv=rv)  # noqa: E731
            else:
                kind, pool = "deployment", deployments
                name = rng.choice(sorted(pool) + [f"d{step}"])
                make = lambda: deployment(name, rng.randint(0, 2), rv=rv)  # noqa: E731
            if name in pool and rng.random() < 0.2:
                gone = pool.pop(name)
                gone["metadata"]["resourceVersion"] = rv
                apply_health_event(view, kind, "DELETED", gone)
            else:
                event = "MODIFIED" if name in pool else "ADDED"
                pool[name] = make()
                apply_health_event(view, kind, event, copy.deepcopy(pool[name]))
            fresh = health_view({"node": (list(nodes.values()), rv), "deployment": (list(deployments.values()), rv)}, replaced)
            # Each kind's resourceVersion moves with that kind's events only; the rest is equal.
            assert without_versions(view) == without_versions(fresh)
            assert ready_nodes_not_tracked(view) == sum(1 for n in nodes.values() if is_node_ready(n) and n["metadata"]["name"] not in replaced)
            assert unavailable_in(view) == unavailable_workloads(list(deployments.values()))


def test_a_health_event_says_what_changed_for_the_trigger_to_judge() -> None:
    view = health_view({"node": ([node("a")], "1"), "deployment": ([deployment("web", 2)], "1")}, set())
    assert apply_health_event(view, "node", "MODIFIED", node("a", rv="2")) is None, "a heartbeat"
    assert apply_health_event(view, "node", "MODIFIED", node("a", ready=False, rv="3")) == ("node/a", "Ready", "NotReady")
    assert apply_health_event(view, "deployment", "MODIFIED", deployment("web", 1, rv="4")) == ("deployment/shop/web", "available", "unavailable")
    assert apply_health_event(view, "node", "ADDED", node("b", ready=False, rv="5")) == ("node/b", "absent", "NotReady")
    assert apply_health_event(view, "deployment", "DELETED", deployment("web", 1, rv="6")) == ("deployment/shop/web", "unavailable", "absent")
    assert view["node"]["resource_version"] == "5" and view["deployment"]["resource_version"] == "6"
