"""Per-object opt-out: what a team marks as never to be touched by maintenance automation.

``kube-maintenance.io/skip: "true"`` on a namespace, a workload or a CronJob keeps it out of every
operation; ``kube-maintenance.io/skip-reason`` says why (shown in the plan). Any other value of
``skip`` (``"false"``, empty) opts nothing out, so a typo never silently hides an object: it is
reported in the plan as a value we did not understand.
"""
from __future__ import annotations

from typing import Any, Mapping

SKIP_ANNOTATION = "kube-maintenance.io/skip"
SKIP_REASON_ANNOTATION = "kube-maintenance.io/skip-reason"


def opted_out(obj: Mapping[str, Any]) -> str | None:
    """Why ``obj`` is kept out of maintenance (its annotation), or None when it is not."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(SKIP_ANNOTATION)
    if value is None or value.strip().lower() != "true":
        return None
    reason = (annotations.get(SKIP_REASON_ANNOTATION) or "").strip()
    kind = obj.get("kind") or "object"
    return f"opted out ({SKIP_ANNOTATION}=true on the {kind.lower()})" + (f": {reason}" if reason else "")


def unclear_opt_out(obj: Mapping[str, Any]) -> str | None:
    """A ``skip`` annotation whose value is neither "true" nor "false": worth a line in the plan."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(SKIP_ANNOTATION)
    if value is None or value.strip().lower() in ("true", "false"):
        return None
    return f'{SKIP_ANNOTATION}={value!r} is not "true": not opted out'
