"""Kubernetes Events on the objects a run changes, as controllers record them, so that
``kubectl describe`` and ``kubectl get events`` show what maintenance did and which DAG run did it.

Best effort, like client-go's event recorder: an Event that cannot be written (RBAC, a 5xx, a
terminating namespace) is logged and never fails the change it describes.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any, Mapping

from kube_maintenance.core.k8s import EVENTS, KubeClient

log = logging.getLogger("kube_maintenance.events")

COMPONENT = "kube-maintenance"


def _seconds(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_for(obj: Mapping[str, Any], reason: str, message: str, run: str, now: dt.datetime, event_type: str = "Normal") -> dict[str, Any]:
    """The core/v1 Event about ``obj`` (its uid included: ``kubectl describe`` selects events by
    the object's kind, name, namespace and uid). Cluster-scoped objects' Events go to ``default``,
    as the node controller's do."""
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": f"{message} (Airflow DAG run {run})",
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "action": reason,
        "firstTimestamp": _seconds(now),
        "lastTimestamp": _seconds(now),
        "count": 1,
    }


def record_event(kube: KubeClient, obj: Mapping[str, Any], reason: str, message: str, run: str, event_type: str = "Normal") -> bool:
    """Write one Event about ``obj``; False (and a log line) when it could not be written."""
    event = event_for(obj, reason, message, run, dt.datetime.now(dt.timezone.utc), event_type)
    try:
        kube.create(EVENTS, event, event["metadata"]["namespace"])
        return True
    except Exception as exc:  # noqa: BLE001 - an Event never fails the change it reports
        log.warning("could not record event %s on %s/%s: %s", reason, obj.get("kind"), obj["metadata"].get("name"), exc)
        return False
