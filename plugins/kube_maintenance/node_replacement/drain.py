"""What a drain does with each pod, as ``kubectl drain --ignore-daemonsets`` decides it. Pure.

Each filter looks at one pod and answers evict, skip or refuse with a reason; the first filter
that does not say "evict" wins. A refusal stops the drain before any pod is evicted, naming the pod
and what to change (as kubectl does), so nothing is half-drained because of one unmanaged pod.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

EVICT = "evict"
SKIP = "skip"
REFUSE = "refuse"
WAIT = "wait"  # already terminating: nothing to send, but the drain waits for it
GC = "left-to-gc"  # terminating on a node whose kubelet is gone, past the grace: the pod GC removes it
# Not Ready on a node that is not Ready: evicted if its budget allows (its controller replaces it at
# once), else left to the pod GC. It serves nothing now, and a PodDisruptionBudget already counts it
# unhealthy, so terminating its instance takes nothing from the budget.
EVICT_OR_GC = "evict-or-gc"


@dataclass(frozen=True)
class PodDecision:
    namespace: str
    name: str
    uid: str
    action: str
    reason: str = ""

    @property
    def ref(self) -> str:
        return f"pod/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DrainOptions:
    delete_emptydir_data: bool = False
    force_unmanaged_pods: bool = False
    # kubectl drain's --skip-wait-for-delete-timeout, applied only on a node that is not Ready: no
    # kubelet will ever confirm those pods' deletion, and terminating the instance stops them.
    skip_wait_for_delete_timeout_seconds: float | None = None
    node_unreachable: bool = False
    now: dt.datetime | None = None


Filter = Callable[[Mapping[str, Any], DrainOptions], "tuple[str, str] | None"]


def _controller(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in pod.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def skip_mirror_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    if MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {}):
        return SKIP, "mirror (static) pod: the kubelet owns it"
    return None


def skip_daemonset_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    ref = _controller(pod)
    if ref is not None and ref.get("kind") == "DaemonSet":
        return SKIP, f"managed by DaemonSet {ref.get('name')}"
    return None


def leave_terminating_pods_of_dead_nodes_to_gc(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    deleted = pod["metadata"].get("deletionTimestamp")
    if not (deleted and opts.node_unreachable and opts.now is not None and opts.skip_wait_for_delete_timeout_seconds is not None):
        return None
    # deletionTimestamp is when the grace period ends (the API server adds it at deletion).
    ends = dt.datetime.fromisoformat(deleted.replace("Z", "+00:00"))
    if ends + dt.timedelta(seconds=opts.skip_wait_for_delete_timeout_seconds) > opts.now:
        return None
    return GC, f"terminating since {deleted} on a node that is not Ready: its kubelet will not finish it; the pod garbage collector removes it"


def wait_for_terminating_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    if pod["metadata"].get("deletionTimestamp"):
        return WAIT, "already terminating"
    return None


def evict_finished_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    # A Succeeded/Failed pod runs nothing: evicting it never consults a budget and loses nothing.
    if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return EVICT, "finished pod"
    return None


def refuse_unmanaged_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    if _controller(pod) is None and not opts.force_unmanaged_pods:
        return REFUSE, "not managed by a controller (it would not come back); set force_unmanaged_pods to evict it anyway"
    return None


def refuse_emptydir_pods(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    volumes = [v["name"] for v in pod.get("spec", {}).get("volumes") or () if "emptyDir" in v]
    if volumes and not opts.delete_emptydir_data:
        return REFUSE, f"uses emptyDir volume(s) {', '.join(volumes)} whose data would be lost; set delete_emptydir_data to evict it anyway"
    return None


def _is_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or ())


def evict_or_leave_unready_pods_of_dead_nodes(pod: Mapping[str, Any], opts: DrainOptions) -> tuple[str, str] | None:
    if opts.node_unreachable and not _is_ready(pod):
        return EVICT_OR_GC, "not Ready on a node that is not Ready: left to the pod garbage collector if its budget refuses the eviction"
    return None


# Order matters: what is skipped is never refused (a DaemonSet pod with emptyDir is just skipped).
FILTERS: tuple[Filter, ...] = (
    skip_mirror_pods,
    skip_daemonset_pods,
    leave_terminating_pods_of_dead_nodes_to_gc,
    wait_for_terminating_pods,
    evict_finished_pods,
    refuse_unmanaged_pods,
    refuse_emptydir_pods,
    evict_or_leave_unready_pods_of_dead_nodes,
)


def decide(pod: Mapping[str, Any], opts: DrainOptions) -> PodDecision:
    m = pod["metadata"]
    for rule in FILTERS:
        verdict = rule(pod, opts)
        if verdict is not None:
            return PodDecision(m.get("namespace", ""), m["name"], m.get("uid", ""), *verdict)
    return PodDecision(m.get("namespace", ""), m["name"], m.get("uid", ""), EVICT)


def evictable(decisions: list[PodDecision]) -> list[PodDecision]:
    """What a drain pass asks the Eviction API for."""
    return [d for d in decisions if d.action in (EVICT, EVICT_OR_GC)]


def left_to_gc(decisions: list[PodDecision]) -> list[PodDecision]:
    """What the pod garbage collector removes once a dead node's instance is gone."""
    return [d for d in decisions if d.action in (GC, EVICT_OR_GC)]


def decide_all(pods: list[Mapping[str, Any]], opts: DrainOptions) -> list[PodDecision]:
    return sorted((decide(p, opts) for p in pods), key=lambda d: (d.namespace, d.name))


def refusal_message(node: str, decisions: list[PodDecision]) -> str | None:
    refused = [d for d in decisions if d.action == REFUSE]
    if not refused:
        return None
    lines = [f"cannot drain {node}: {len(refused)} pod(s) would be lost:"]
    lines += [f"  {d.ref}: {d.reason}" for d in refused]
    return "\n".join(lines)


def pods_left(decisions: list[PodDecision]) -> list[PodDecision]:
    """What a drain still waits for, and what keeps a node from being terminated: everything not
    skipped nor left to the pod GC (unready pods of a dead node included)."""
    return [d for d in decisions if d.action in (EVICT, WAIT)]


_BUDGET = re.compile(r"The disruption budget (?P<name>\S+) needs (?P<need>\d+) healthy pods and has (?P<has>\d+) currently")


def blocking_budget(status: Mapping[str, Any] | None) -> str:
    """A readable reason from a 429 eviction answer: which PDB and how far it is from allowing."""
    status = status or {}
    for cause in (status.get("details") or {}).get("causes") or ():
        m = _BUDGET.search(cause.get("message", ""))
        if m:
            allowed = max(0, int(m.group("has")) - int(m.group("need")))
            return f"PodDisruptionBudget {m.group('name')} (needs {m.group('need')} healthy, has {m.group('has')}, disruptionsAllowed={allowed})"
    return status.get("message") or "a PodDisruptionBudget does not allow the disruption"


_REFUSED_BY = re.compile(r"^PodDisruptionBudget (?P<name>\S+) \(needs ")


def refusing_budget(reason: str) -> str | None:
    """The PodDisruptionBudget a ``blocking_budget`` reason names (None for any other reason: a
    5xx, a budget still being processed)."""
    m = _REFUSED_BY.match(reason)
    return m.group("name") if m else None
