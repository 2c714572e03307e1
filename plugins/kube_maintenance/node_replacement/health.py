"""Is the cluster healthy enough to disrupt, and healthy again after a batch? Pure."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from kube_maintenance.node_replacement.plan import is_node_ready


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


def unavailable_workloads(
    deployments: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    daemonsets: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    statefulsets: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, str]:
    """Workloads with fewer available pods than they ask for: "<kind>/<ns>/<name>" -> "have/want"."""
    out: dict[str, str] = {}

    def short(kind: str, obj: Mapping[str, Any], have: int, want: int) -> None:
        if have < want:
            out[f"{kind}/{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"] = f"{have}/{want} available"

    for d in deployments:
        short("deployment", d, int(d.get("status", {}).get("availableReplicas") or 0), int(d.get("spec", {}).get("replicas", 1)))
    for ds in daemonsets:
        status = ds.get("status", {})
        short("daemonset", ds, int(status.get("numberAvailable") or 0), int(status.get("desiredNumberScheduled") or 0))
    for sts in statefulsets:
        status = sts.get("status", {})
        have = status.get("availableReplicas", status.get("readyReplicas"))
        short("statefulset", sts, int(have or 0), int(sts.get("spec", {}).get("replicas", 1)))
    return dict(sorted(out.items()))


def unready_pods(pods: list[Mapping[str, Any]], now: dt.datetime, grace_seconds: float) -> list[str]:
    """Running pods whose containers have not been Ready for longer than ``grace_seconds``."""
    out = []
    for p in pods:
        if p.get("status", {}).get("phase") != "Running" or p["metadata"].get("deletionTimestamp"):
            continue
        ready = next((c for c in p.get("status", {}).get("conditions") or () if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") == "True":
            continue
        since = ready.get("lastTransitionTime") or p["metadata"]["creationTimestamp"]
        if (now - dt.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds() > grace_seconds:
            out.append(f"{p['metadata'].get('namespace')}/{p['metadata']['name']}")
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
    *,
    daemonsets: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    statefulsets: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    system_pods: list[Mapping[str, Any]] = (),  # type: ignore[assignment]
    unavailable_before: frozenset[str] = frozenset(),
) -> HealthReport:
    """After a batch: Ready nodes back to the count before, no stuck pods, workloads available.

    Nodes already replaced do not count even while they linger NotReady; a node someone cordoned
    by hand still counts, as it did in the count taken before the run. A workload that was not
    available before the run (``unavailable_before``) is noted, not waited for: this run did not
    break it, and waiting on it would stop every maintenance.
    """
    ready = sum(1 for n in nodes if is_node_ready(n) and n["metadata"]["name"] not in replaced)
    return health_report(
        ready, expected_ready_nodes, unavailable_workloads(deployments, daemonsets, statefulsets), pods, system_pods, now, pending_grace_seconds, unavailable_before,
    )


def health_report(
    ready_nodes: int,
    expected_ready_nodes: int,
    unavailable: Mapping[str, str],
    pending_pods: list[Mapping[str, Any]],
    system_pods: list[Mapping[str, Any]],
    now: dt.datetime,
    pending_grace_seconds: float,
    unavailable_before: frozenset[str] = frozenset(),
) -> HealthReport:
    """``validation_report`` from what it counts: the Ready nodes (replaced ones not counted) and the
    unavailable workloads ("<kind>/<ns>/<name>" -> why), as a step that keeps them between its
    looks (``views.health_view``) knows them."""
    report = HealthReport()
    if ready_nodes < expected_ready_nodes:
        report.problems.append(f"{ready_nodes} Ready nodes, expected at least {expected_ready_nodes} as before the run")
    stuck = stuck_pending_pods(pending_pods, now, pending_grace_seconds)
    if stuck:
        report.problems.append(f"pods Pending for over {pending_grace_seconds:.0f}s: {', '.join(stuck[:10])}")
    broken_before = {ref: why for ref, why in unavailable.items() if ref in unavailable_before}
    if broken_before:
        report.notes.append(f"not available before the run either (not waited for): {', '.join(f'{r} ({w})' for r, w in list(broken_before.items())[:10])}")
    now_broken = [f"{ref} ({why})" for ref, why in unavailable.items() if ref not in unavailable_before]
    if now_broken:
        report.problems.append(f"workloads not fully available: {', '.join(now_broken[:10])}")
    system = unready_pods(system_pods, now, pending_grace_seconds)
    if system:
        report.problems.append(f"kube-system pods not Ready for over {pending_grace_seconds:.0f}s: {', '.join(system[:10])}")
    return report
