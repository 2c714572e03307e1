"""Server-side printing: the ``meta.k8s.io/v1 Table`` that ``kubectl get`` asks for."""
from __future__ import annotations

from typing import Any, Callable

from .clock import parse_time
from .podutil import condition, is_node_ready

Obj = dict[str, Any]


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 5m10s, 3h, 2d5h, 400d."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d" if d < 365 * 2 else f"{d // 365}y"


def _age(obj: Obj, now: float) -> str:
    created = parse_time(obj["metadata"].get("creationTimestamp"))
    return "<unknown>" if created is None else human_duration(now - created)


def _pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status", {})
    for cs in status.get("containerStatuses") or ():
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
        term = (cs.get("state") or {}).get("terminated")
        if term and status.get("phase") not in ("Succeeded", "Failed") and term.get("reason"):
            return term["reason"]
    if status.get("phase") == "Succeeded":
        return "Completed"
    if status.get("phase") == "Failed":
        return "Error"
    return status.get("reason") or status.get("phase") or "Pending"


def _pod_row(pod: Obj) -> list[Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    return [f"{ready}/{total}", _pod_status(pod), restarts]


def _node_row(node: Obj) -> list[Any]:
    status = "Ready" if is_node_ready(node) else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1] for k in (node["metadata"].get("labels") or {}) if k.startswith("node-role.kubernetes.io/")
    )
    version = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [status, ",".join(roles) or "<none>", version]


def _deploy_row(d: Obj) -> list[Any]:
    st = d.get("status", {})
    return [f"{st.get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}", st.get("updatedReplicas", 0), st.get("availableReplicas", 0)]


def _ds_row(d: Obj) -> list[Any]:
    st = d.get("status", {})
    sel = d["spec"].get("template", {}).get("spec", {}).get("nodeSelector") or {}
    return [
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
    ]


def _job_row(j: Obj) -> list[Any]:
    st = j.get("status", {})
    if condition(j, "Complete") and condition(j, "Complete").get("status") == "True":  # type: ignore[union-attr]
        state = "Complete"
    elif condition(j, "Failed") and condition(j, "Failed").get("status") == "True":  # type: ignore[union-attr]
        state = "Failed"
    elif j["spec"].get("suspend"):
        state = "Suspended"
    else:
        state = "Running"
    return [state, f"{st.get('succeeded', 0)}/{j['spec'].get('completions', 1)}"]


def _cronjob_row(c: Obj, now: float) -> list[Any]:
    last = parse_time(c.get("status", {}).get("lastScheduleTime"))
    return [
        c["spec"].get("schedule", ""),
        str(bool(c["spec"].get("suspend"))),
        len(c.get("status", {}).get("active") or []),
        "<none>" if last is None else human_duration(now - last),
    ]


def _pdb_row(p: Obj) -> list[Any]:
    spec = p.get("spec", {})
    return [
        str(spec.get("minAvailable", "N/A")),
        str(spec.get("maxUnavailable", "N/A")),
        p.get("status", {}).get("disruptionsAllowed", 0),
    ]


# type key -> (extra columns, row function); Name comes first and Age last for every type.
_COLUMNS: dict[str, tuple[list[tuple[str, str]], Callable[..., list[Any]]]] = {
    "pods": ([("Ready", "string"), ("Status", "string"), ("Restarts", "string")], lambda o, now: _pod_row(o)),
    "nodes": ([("Status", "string"), ("Roles", "string"), ("Version", "string")], lambda o, now: _node_row(o)),
    "namespaces": ([("Status", "string")], lambda o, now: [o.get("status", {}).get("phase", "Active")]),
    "deployments.apps": ([("Ready", "string"), ("Up-to-date", "integer"), ("Available", "integer")], lambda o, now: _deploy_row(o)),
    "replicasets.apps": (
        [("Desired", "integer"), ("Current", "integer"), ("Ready", "integer")],
        lambda o, now: [o["spec"].get("replicas", 1), o.get("status", {}).get("replicas", 0), o.get("status", {}).get("readyReplicas", 0)],
    ),
    "statefulsets.apps": ([("Ready", "string")], lambda o, now: [f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}"]),
    "daemonsets.apps": (
        [("Desired", "integer"), ("Current", "integer"), ("Ready", "integer"), ("Up-to-date", "integer"), ("Available", "integer"), ("Node Selector", "string")],
        lambda o, now: _ds_row(o),
    ),
    "jobs.batch": ([("Status", "string"), ("Completions", "string")], lambda o, now: _job_row(o)),
    "cronjobs.batch": ([("Schedule", "string"), ("Suspend", "boolean"), ("Active", "integer"), ("Last Schedule", "date")], _cronjob_row),
    "poddisruptionbudgets.policy": ([("Min Available", "string"), ("Max Unavailable", "string"), ("Allowed Disruptions", "integer")], lambda o, now: _pdb_row(o)),
}


def to_table(type_key: str, items: list[Obj], now: float, list_meta: dict[str, Any]) -> dict[str, Any]:
    extra, row_fn = _COLUMNS.get(type_key, ([], lambda o, now: []))
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    columns += [{"name": n, "type": t, "format": "", "description": n, "priority": 0} for n, t in extra]
    columns.append({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp", "priority": 0})
    rows = []
    for obj in items:
        rows.append(
            {
                "cells": [obj["metadata"]["name"], *row_fn(obj, now), _age(obj, now)],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
        )
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": columns, "rows": rows}
