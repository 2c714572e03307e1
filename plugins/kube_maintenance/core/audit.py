"""The audit trail: one structured line per action that changes a cluster or a cloud resource.

Every line is ``KUBE_MAINTENANCE_AUDIT {json}`` with the same keys in the same order, so
``grep KUBE_MAINTENANCE_AUDIT`` over task logs gives the whole trail, and ``jq`` can read it:
cluster, dag, run, task, try, who or what triggered the run, action, target, before/after,
dry run or not, and the outcome (``planned`` in a dry run, else ``done``, ``skipped`` or ``failed``).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

AUDIT_MARKER = "KUBE_MAINTENANCE_AUDIT"
log = logging.getLogger("kube_maintenance.audit")


@dataclass(frozen=True)
class AuditTrail:
    cluster: str
    dag_id: str = ""
    run_id: str = ""
    task_id: str = ""
    try_number: int = 0
    triggered_by: str = ""
    dry_run: bool = False
    lines: list[dict[str, Any]] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_context(cls, context: Mapping[str, Any], cluster: str, dry_run: bool) -> "AuditTrail":
        """Who and what from an Airflow task context (``triggered_by``: ``user:<name>`` or the run type)."""
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        run_type = str(getattr(dag_run, "run_type", "") or "")
        run_type = getattr(getattr(dag_run, "run_type", None), "value", run_type)
        user = getattr(dag_run, "triggering_user_name", None)
        triggered_by = f"user:{user}" if user else (run_type or "unknown")
        task_id = getattr(ti, "task_id", "")
        map_index = getattr(ti, "map_index", -1)
        if map_index is not None and map_index >= 0:
            task_id = f"{task_id}[{map_index}]"
        return cls(
            cluster=cluster,
            dag_id=getattr(dag_run, "dag_id", "") or getattr(ti, "dag_id", ""),
            run_id=getattr(dag_run, "run_id", "") or getattr(ti, "run_id", ""),
            task_id=task_id,
            try_number=int(getattr(ti, "try_number", 0) or 0),
            triggered_by=triggered_by,
            dry_run=dry_run,
        )

    def with_dry_run(self, dry_run: bool) -> "AuditTrail":
        return replace(self, dry_run=dry_run, lines=self.lines)

    def record(
        self,
        action: str,
        target: str,
        *,
        before: Any = None,
        after: Any = None,
        outcome: str | None = None,
        **detail: Any,
    ) -> dict[str, Any]:
        """Log one action. In a dry run the outcome is always ``planned`` (nothing was changed)."""
        line = {
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cluster": self.cluster,
            "dag": self.dag_id,
            "run": self.run_id,
            "task": self.task_id,
            "try": self.try_number,
            "triggered_by": self.triggered_by,
            "action": action,
            "target": target,
            "before": before,
            "after": after,
            "dry_run": self.dry_run,
            "outcome": "planned" if self.dry_run else (outcome or "done"),
        }
        if detail:
            line["detail"] = detail
        self.lines.append(line)
        log.info("%s %s", AUDIT_MARKER, json.dumps(line, default=str, sort_keys=False))
        return line


def parse_audit_lines(text: str) -> list[dict[str, Any]]:
    """The audit records in a log text (for tests and for people reading logs with Python)."""
    out = []
    for raw in text.splitlines():
        idx = raw.find(AUDIT_MARKER + " ")
        if idx >= 0:
            try:
                out.append(json.loads(raw[idx + len(AUDIT_MARKER) + 1 :]))
            except json.JSONDecodeError:
                continue
    return out
