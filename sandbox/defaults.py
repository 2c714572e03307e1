"""Defaulting and validation of core/v1 objects, as the apiserver's strategies do on create."""
from __future__ import annotations

from typing import Any

from . import errors
from .resources import NAMESPACES, NODES, PODS

Obj = dict[str, Any]


def default_namespace(ns: Obj, store: Any) -> None:
    name = ns["metadata"]["name"]
    ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = {"phase": "Active"}


def _qos_class(spec: dict[str, Any]) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    if all(l.get("cpu") and l.get("memory") for l in limits) and all((r or l) == l for r, l in zip(requests, limits)):
        return "Guaranteed"
    return "Burstable"


def default_pod(pod: Obj, store: Any) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("tolerations", [])
    # Every pod tolerates a lost node for 5 minutes (the DefaultTolerationSeconds admission plugin).
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in spec["tolerations"]):
            spec["tolerations"].append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    for section in ("initContainers", "containers"):
        for c in spec.get(section) or []:
            c.setdefault("imagePullPolicy", "Always" if str(c.get("image", "")).endswith(":latest") or ":" not in str(c.get("image", "")) else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def validate_pod(new: Obj, old: Obj | None) -> None:
    name = new["metadata"].get("name", "")
    causes: list[tuple[str, str]] = []
    containers = new.get("spec", {}).get("containers") or []
    if not containers:
        causes.append(("spec.containers", "Required value"))
    for i, c in enumerate(containers):
        if not c.get("name"):
            causes.append((f"spec.containers[{i}].name", "Required value"))
        if not c.get("image"):
            causes.append((f"spec.containers[{i}].image", "Required value"))
    if old is not None:
        old_node = old.get("spec", {}).get("nodeName")
        if old_node and new.get("spec", {}).get("nodeName") != old_node:
            causes.append(("spec.nodeName", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, ..."))
    if causes:
        raise errors.invalid("Pod", name, causes)


def default_node(node: Obj, store: Any) -> None:
    node.setdefault("spec", {})
    labels = node["metadata"].setdefault("labels", {})
    labels.setdefault("kubernetes.io/hostname", node["metadata"]["name"])


DEFAULTERS = {NAMESPACES: default_namespace, PODS: default_pod, NODES: default_node}
VALIDATORS = {PODS: validate_pod}
