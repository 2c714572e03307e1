"""Small helpers over pods and owners that several controllers share."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .clock import parse_time

Obj = dict[str, Any]


def controller_ref(obj: Obj) -> dict[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj, controller: bool = True, block: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": block,
    }


def is_owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner["metadata"]["uid"]


def condition(obj: Obj, cond_type: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or ():
        if cond.get("type") == cond_type:
            return cond
    return None


def set_condition(status: dict[str, Any], cond: dict[str, Any], now_iso: str) -> None:
    """Upsert a condition; lastTransitionTime moves only when the status value changes."""
    conds = status.setdefault("conditions", [])
    for i, existing in enumerate(conds):
        if existing.get("type") == cond["type"]:
            merged = dict(existing)
            merged.update(cond)
            if existing.get("status") == cond.get("status"):
                merged["lastTransitionTime"] = existing.get("lastTransitionTime", now_iso)
            else:
                merged["lastTransitionTime"] = now_iso
            merged.setdefault("lastUpdateTime", now_iso) if "lastUpdateTime" in existing else None
            conds[i] = merged
            return
    new = dict(cond)
    new.setdefault("lastTransitionTime", now_iso)
    conds.append(new)


def is_terminating(pod: Obj) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def is_terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def is_active(pod: Obj) -> bool:
    """Counts toward a controller's replicas: not terminal and not being deleted."""
    return not is_terminal(pod) and not is_terminating(pod)


def is_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Obj) -> float | None:
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds <= 0 or since + min_ready_seconds <= now


def is_node_ready(node: Obj) -> bool:
    cond = condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


def template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """A stable short hash of a pod template (the pod-template-hash / controller-revision-hash)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")) + str(collision_count or "")
    digest = hashlib.sha256(raw.encode()).hexdigest()
    # Same alphabet the real hash uses after SafeEncodeString.
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    num = int(digest[:16], 16)
    out = []
    for _ in range(10):
        num, idx = divmod(num, len(alphabet))
        out.append(alphabet[idx])
    return "".join(out)


def pod_from_template(
    template: dict[str, Any],
    owner: Obj,
    name: str | None = None,
    generate_name: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> Obj:
    """A new pod for ``owner`` from its pod template, controller-owned as the real controllers do."""
    tmpl = copy.deepcopy(template)
    md = tmpl.get("metadata") or {}
    labels = dict(md.get("labels") or {})
    labels.update(extra_labels or {})
    metadata: dict[str, Any] = {
        "namespace": owner["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }
    if md.get("annotations"):
        metadata["annotations"] = dict(md["annotations"])
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name or owner["metadata"]["name"] + "-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": tmpl.get("spec") or {}}


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """Resolve an IntOrString such as ``25%`` against ``total``, rounding as the API does."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1])
        exact = pct * total
        return -(-exact // 100) if round_up else exact // 100
    return int(text)


def images_of(pod_spec: dict[str, Any]) -> dict[str, str]:
    out = {}
    for section in ("initContainers", "containers"):
        for c in pod_spec.get(section) or ():
            out[c.get("name", "")] = c.get("image", "")
    return out
