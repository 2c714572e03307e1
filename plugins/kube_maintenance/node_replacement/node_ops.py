"""The cluster calls of a drain, around the pure rules in ``drain``: list, evict in parallel, watch."""
from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from kube_maintenance.node_replacement import drain as rules
from kube_maintenance.core.k8s import PODS, KubeApiError, KubeClient, WaitTimeout

log = logging.getLogger(__name__)
EVICTION_WORKERS = 16


@dataclass
class DrainPass:
    """What one pass of a drain found and did."""

    node: str
    evicted: list[rules.PodDecision] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # pod ref -> why (a PDB, a 5xx)
    left: list[str] = field(default_factory=list)  # pod refs still on the node at the end
    left_to_gc: list[rules.PodDecision] = field(default_factory=list)  # terminating on a dead node: the pod GC's now
    refusal: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.refusal is None and self.error is None and not self.left


def evict_one(kube: KubeClient, pod: Mapping[str, Any], grace: int | None) -> tuple[str, str]:
    """("evicted"|"gone"|"blocked"|"error", detail), every API answer an explicit case."""
    try:
        kube.evict(pod, grace)
        return "evicted", ""
    except KubeApiError as err:
        if err.status == 429:  # a PodDisruptionBudget says not now
            return "blocked", rules.blocking_budget(err.body)
        if err.status in (404, 409):  # gone, or a different pod by that name now (UID precondition)
            return "gone", ""
        if "more than one PodDisruptionBudget" in err.message:
            return "error", err.message
        if err.status >= 500 or err.status == 0:
            return "blocked", f"API error {err.status}: {err.message}"
        return "error", f"{err.status} {err.reason}: {err.message}"


def drain_pass(kube: KubeClient, node: str, opts: rules.DrainOptions, grace: int | None, wait_seconds: float) -> DrainPass:
    """List the node's pods, evict every evictable one at once, then watch them go (bounded).

    Requests: one list, one eviction per pod, one list and one watch for the wait; a pod a PDB
    protects is left for the next pass.
    """
    result = DrainPass(node)
    selector = f"spec.nodeName={node}"
    pods, _ = kube.list(PODS, field_selector=selector)
    decisions = rules.decide_all(pods, opts)
    result.refusal = rules.refusal_message(node, decisions)
    if result.refusal:
        return result
    result.left_to_gc = [d for d in decisions if d.action == rules.GC]
    by_uid = {p["metadata"]["uid"]: p for p in pods}
    to_evict = rules.evictable(decisions)
    waiting_for = {d.uid for d in rules.pods_left(decisions)}
    if to_evict:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(EVICTION_WORKERS, len(to_evict))) as pool:
            outcomes = list(pool.map(lambda d: (d, evict_one(kube, by_uid[d.uid], grace)), to_evict))
        for decision, (outcome, detail) in outcomes:
            if outcome == "evicted":
                result.evicted.append(decision)
                waiting_for.add(decision.uid)  # an unready pod of a dead node evicted: it goes like any other
            elif outcome == "blocked" and decision.action == rules.EVICT_OR_GC:
                result.left_to_gc.append(replace(decision, reason=f"{decision.reason} (refused: {detail})"))
            elif outcome == "blocked":
                result.blocked[decision.ref] = detail
            elif outcome == "error":
                result.error = f"cannot evict {decision.ref} from {node}: {detail}"
                return result
    if not waiting_for:
        return result

    def gone(objects: dict[tuple[str, str], Any]) -> bool:
        return not any(o["metadata"]["uid"] in waiting_for for o in objects.values())

    try:
        objects = kube.wait_until(PODS, gone, timeout=wait_seconds if not result.blocked else 0, field_selector=selector)
    except WaitTimeout as exc:
        objects = exc.objects
    result.left = sorted(
        f"pod/{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects.values() if o["metadata"]["uid"] in waiting_for
    )
    return result
