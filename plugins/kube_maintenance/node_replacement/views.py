"""What a waiting batch step knows of the cluster between two looks, kept current by watch events.

A waiting step's first look lists what it judges (the whole picture is needed once). It then keeps
only a small *view*: the resourceVersion of its list and the few objects that matter to it or are
not in the usual state (a node it waits for, a NotReady node, an unavailable workload). Its
trigger watches from that resourceVersion, with no list, and applies each event to the view, as
an informer keeps its cache. The event hands the view back, and the resumed step judges from it
without listing the cluster again. So a wait costs one watch, however many nodes the cluster has,
and a heartbeat of a node nobody waits for costs a comparison.

An object missing from a view is in the usual state (a Ready node, an available workload), so
an event about it is judged against that. A view that cannot be kept current (the watch's
resourceVersion expired: 410 Gone, or any other watch error) is dropped, and the step lists again.

Plain data (JSON in the batch's state, which travels in the trigger's kwargs and event) and pure
functions: no Airflow, no I/O.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Mapping

from kube_maintenance.node_replacement.health import unavailable_workloads
from kube_maintenance.node_replacement.plan import instance_of, is_node_ready

ABSENT = "absent"
READY, NOT_READY = "Ready", "NotReady"
AVAILABLE, UNAVAILABLE = "available", "unavailable"
WORKLOAD_KINDS = ("deployment", "daemonset", "statefulset")
HEALTH_KINDS = ("node",) + WORKLOAD_KINDS

Change = dict[str, Any]


def object_key(kind: str, obj: Mapping[str, Any]) -> str:
    """"node/<name>", or "<kind>/<namespace>/<name>" for namespaced kinds."""
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('name')}" if kind == "node" else f"{kind}/{meta.get('namespace')}/{meta.get('name')}"


def _created_at(node: Mapping[str, Any]) -> dt.datetime | None:
    stamp = (node.get("metadata") or {}).get("creationTimestamp")
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _advance(view: dict[str, Any], obj: Mapping[str, Any]) -> None:
    view["resource_version"] = (obj.get("metadata") or {}).get("resourceVersion") or view.get("resource_version", "")


# ------------------------------------------------------------------------------ nodes joining
def joining_nodes_view(nodes: Iterable[Mapping[str, Any]], resource_version: str, instances: Iterable[str], since: dt.datetime | None = None) -> dict[str, Any]:
    """For a step waiting for nodes to join Ready (surge nodes, replacements): the nodes it may
    count, by name, with their EC2 instance and readiness. Those are the nodes of ``instances``
    (the Auto Scaling groups' members, the surge instances), every node not Ready yet, and every
    node created at or after ``since`` (the run's start): a node that joins later is added by the
    trigger as it comes. A Ready node of none of those is not one this run waits for."""
    wanted = set(instances)
    tracked: dict[str, list[str]] = {}
    for node in nodes:
        instance = (instance_of(node) or ("", ""))[1]
        created = _created_at(node)
        if instance in wanted or not is_node_ready(node) or (since is not None and created is not None and created >= since):
            tracked[node["metadata"]["name"]] = [instance, READY if is_node_ready(node) else NOT_READY]
    return {"resource_version": resource_version, "nodes": tracked}


def ready_instances_of(view: Mapping[str, Any]) -> set[str]:
    """EC2 instance ids of the Ready nodes the view tracks."""
    return {instance for instance, judged in view["nodes"].values() if instance and judged == READY}


def nodes_of_instances(view: Mapping[str, Any], instances: Iterable[str]) -> list[str]:
    """Names of the tracked nodes of these EC2 instances."""
    wanted = set(instances)
    return sorted(name for name, (instance, _) in view["nodes"].items() if instance in wanted)


def apply_node_event(view: dict[str, Any], event_type: str, node: Mapping[str, Any]) -> Change | None:
    """Bring a joining-nodes view up to date with one watch event; the change a waiting step would
    judge (a node joined or went, a tracked node's readiness or instance changed), or None."""
    _advance(view, node)
    name = (node.get("metadata") or {}).get("name", "")
    known = view["nodes"].get(name)
    if event_type == "DELETED":
        if known is None:
            return None
        del view["nodes"][name]
        return {"ref": f"node/{name}", "before": known[1], "after": ABSENT}
    if event_type not in ("ADDED", "MODIFIED"):
        return None
    if known is None and event_type != "ADDED":
        return None  # a node this run does not wait for (its heartbeat, a label...)
    now = [(instance_of(node) or ("", ""))[1], READY if is_node_ready(node) else NOT_READY]
    if now == known:
        return None
    view["nodes"][name] = now
    before = ABSENT if known is None else known[1]
    if known is not None and known[1] == now[1]:
        return {"ref": f"node/{name}", "what": f"instance {now[0]} known"}  # its providerID was set
    return {"ref": f"node/{name}", "before": before, "after": now[1]}


# ------------------------------------------------------------------------------------- health
def judge_health(kind: str, obj: Mapping[str, Any]) -> tuple[str, str | None]:
    """A Node Ready or not; a workload available or not, with why (as the validation counts it)."""
    if kind == "node":
        return (READY, None) if is_node_ready(obj) else (NOT_READY, "NotReady")
    why = unavailable_workloads(**{f"{kind}s": [obj]})
    return (UNAVAILABLE, next(iter(why.values()))) if why else (AVAILABLE, None)


def health_view(listed: Mapping[str, tuple[list[Mapping[str, Any]], str]], tracked_nodes: Iterable[str]) -> dict[str, Any]:
    """For the validation: per kind (``listed``: kind -> (objects, resourceVersion)), the list's
    resourceVersion, how many objects are in the usual state (Ready, available), and each object
    that is not, with why. ``tracked_nodes`` (the replaced nodes: they do not count even while
    Ready) are kept by name, whatever their state."""
    view: dict[str, Any] = {}
    tracked = {f"node/{n}" for n in tracked_nodes}
    for kind, (objects, resource_version) in listed.items():
        part: dict[str, Any] = {"resource_version": resource_version, "usual": 0, "unusual": {}}
        if kind == "node":
            part["tracked"] = {key: ABSENT for key in sorted(tracked)}
        for obj in objects:
            key = object_key(kind, obj)
            judged, why = judge_health(kind, obj)
            if why is None:
                part["usual"] += 1
            else:
                part["unusual"][key] = why
            if key in part.get("tracked", {}):
                part["tracked"][key] = judged
        view[kind] = part
    return view


def health_judgement_in(view: Mapping[str, Any], kind: str, key: str) -> str:
    """How the view judges an object: unusual (NotReady, unavailable) when it is listed as such,
    else usual (Ready, available; or absent, for all it knows)."""
    if key in view[kind]["unusual"]:
        return NOT_READY if kind == "node" else UNAVAILABLE
    return READY if kind == "node" else AVAILABLE


def apply_health_event(view: dict[str, Any], kind: str, event_type: str, obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """Bring a health view up to date with one watch event; (key, before, after) when the object's
    judgement changed, else None. Before an event, an object not listed as unusual was usual: a
    watch from the view's resourceVersion sends ADDED only for objects created after it."""
    part = view[kind]
    _advance(part, obj)
    if event_type not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    key = object_key(kind, obj)
    unusual = part["unusual"]
    if key in unusual:
        before = NOT_READY if kind == "node" else UNAVAILABLE
    elif event_type == "ADDED":
        before = ABSENT
    else:
        before = READY if kind == "node" else AVAILABLE
    after, why = (ABSENT, None) if event_type == "DELETED" else judge_health(kind, obj)
    if before in (READY, AVAILABLE):
        part["usual"] -= 1
    unusual.pop(key, None)
    if after in (READY, AVAILABLE):
        part["usual"] += 1
    elif after != ABSENT:
        unusual[key] = why
    if key in part.get("tracked", {}):
        part["tracked"][key] = after
    return (key, before, after) if before != after else None


def ready_nodes_not_tracked(view: Mapping[str, Any]) -> int:
    """Ready nodes, the tracked (replaced) ones not counted."""
    part = view["node"]
    return int(part["usual"]) - sum(1 for judged in part.get("tracked", {}).values() if judged == READY)


def unavailable_in(view: Mapping[str, Any]) -> dict[str, str]:
    """Every workload the view knows unavailable: "<kind>/<ns>/<name>" -> why."""
    return dict(sorted((key, why) for kind in WORKLOAD_KINDS if kind in view for key, why in view[kind]["unusual"].items()))


def problems_in(view: Mapping[str, Any]) -> list[str]:
    """Every object the view knows in a bad state (the validation's baseline for its trigger)."""
    return sorted(key for kind in HEALTH_KINDS if kind in view for key in view[kind]["unusual"])
