"""Is the cluster healthy enough to disrupt, and healthy again after a batch? Pure."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from .node_plan import is_node_ready


@dataclass
class HealthReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(self.problems) if self.problems else "healthy"


def _age_seconds(obj: Mapping[str, Any], now: dt.datetime) -> float:
    created = dt.datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return (now - created).total_seconds()


def stuck_pending_pods(pods: list[Mapping[str, Any]], now: dt.datetime, grace_seconds: float) -> list[str]:
    """Pods Pending for longer than ``grace_seconds`` (not merely starting up)."""
    return sorted(
        f"{p['metadata'].get('namespace')}/{p['metadata']['name']}"
        for p in pods
        if p.get("status", {}).get("phase") == "Pending"
        and not p["metadata"].get("deletionTimestamp")
        and _age_seconds(p, now) > grace_seconds
    )


def unavailable_deployments(deployments: list[Mapping[str, Any]]) -> list[str]:
    """Deployments with fewer available replicas than they ask for (paused ones included)."""
    out = []
    for d in deployments:
        want = d.get("spec", {}).get("replicas", 1)
        have = d.get("status", {}).get("availableReplicas", 0) or 0
        if have < want:
            out.append(f"{d['metadata'].get('namespace')}/{d['metadata']['name']} ({have}/{want} available)")
    return sorted(out)


def preflight_report(
    nodes: list[Mapping[str, Any]],
    pods: list[Mapping[str, Any]],
    planned: set[str],
    now: dt.datetime,
    pending_grace_seconds: float,
) -> HealthReport:
    """Before any disruption: every node outside the plan Ready, nothing stuck Pending."""
    report = HealthReport()
    not_ready = sorted(n["metadata"]["name"] for n in nodes if not is_node_ready(n) and n["metadata"]["name"] not in planned)
    if not_ready:
        report.problems.append(f"nodes not Ready: {', '.join(not_ready)}")
    stuck = stuck_pending_pods(pods, now, pending_grace_seconds)
    if stuck:
        report.problems.append(f"pods Pending for over {pending_grace_seconds:.0f}s: {', '.join(stuck[:10])}" + (" ..." if len(stuck) > 10 else ""))
    cordoned = sorted(n["metadata"]["name"] for n in nodes if n.get("spec", {}).get("unschedulable") and n["metadata"]["name"] not in planned)
    if cordoned:
        report.notes.append(f"cordoned outside this plan (left alone): {', '.join(cordoned)}")
    return report


def validation_report(
    nodes: list[Mapping[str, Any]],
    pods: list[Mapping[str, Any]],
    deployments: list[Mapping[str, Any]],
    expected_ready_nodes: int,
    replaced: set[str],
    now: dt.datetime,
    pending_grace_seconds: float,
) -> HealthReport:
    """After a batch: Ready nodes back to the count before, no stuck pods, Deployments available.

    Nodes already replaced do not count even while they linger NotReady; a node someone cordoned
    by hand still counts, as it did in the count taken before the run.
    """
    report = HealthReport()
    ready = sum(1 for n in nodes if is_node_ready(n) and n["metadata"]["name"] not in replaced)
    if ready < expected_ready_nodes:
        report.problems.append(f"{ready} Ready nodes, expected at least {expected_ready_nodes} as before the run")
    stuck = stuck_pending_pods(pods, now, pending_grace_seconds)
    if stuck:
        report.problems.append(f"pods Pending for over {pending_grace_seconds:.0f}s: {', '.join(stuck[:10])}")
    unavailable = unavailable_deployments(deployments)
    if unavailable:
        report.problems.append(f"Deployments not fully available: {', '.join(unavailable[:10])}")
    return report
