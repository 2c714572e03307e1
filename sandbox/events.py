"""Kubernetes Events as controllers record them (what `kubectl describe` shows)."""
from __future__ import annotations

from typing import Any

from .resources import EVENTS
from .store import random_suffix


def record_event(cluster: Any, obj: dict[str, Any], event_type: str, reason: str, message: str, component: str) -> None:
    """Best effort, as in the real controllers: a failure to record never fails the caller."""
    m = obj["metadata"]
    namespace = m.get("namespace") or "default"
    now = cluster.clock.iso()
    event = {
        "metadata": {"name": f"{m['name']}.{random_suffix(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": m["name"],
            "namespace": m.get("namespace", ""),
            "uid": m.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        cluster.store.create(EVENTS, event, namespace=namespace)
    except Exception:  # noqa: BLE001
        pass
