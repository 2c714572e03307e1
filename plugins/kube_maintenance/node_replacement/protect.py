"""The runbook's own step before a drain: "if evicting those pods would disrupt a service,
temporarily scale up the deployment". Which Deployments need it, and what to do after. Pure.

A Deployment needs it when every one of its Ready pods is on the batch's nodes and no
PodDisruptionBudget covers it (a budget makes the Eviction API wait for a Ready pod elsewhere
by itself). StatefulSets are left alone: a new ordinal is not a spare copy of the old one.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from kube_maintenance.core.selectors import selector_string
from kube_maintenance.core.selectors import parse_label_selector

SCALED_BY_ANNOTATION = "kube-maintenance.io/scaled-up-by"  # the run that scaled it up
REPLICAS_BEFORE_ANNOTATION = "kube-maintenance.io/replicas-before"  # what to scale back to


def _is_ready(pod: Mapping[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or ()
    )


def ready_pods_elsewhere(pods: Iterable[Mapping[str, Any]], batch_nodes: set[str]) -> int:
    """Ready pods of a workload that the batch's drain does not touch."""
    return sum(1 for p in pods if _is_ready(p) and p.get("spec", {}).get("nodeName") not in batch_nodes)


def covered_by_budget(pod_labels: Mapping[str, str], budgets: Iterable[Mapping[str, Any]]) -> str | None:
    """The name of a PodDisruptionBudget selecting pods with these labels, if any."""
    for pdb in budgets:
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None:
            continue
        if parse_label_selector(selector_string(selector))(pod_labels):
            return str(pdb["metadata"]["name"])
    return None


def needs_a_spare(deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], batch_nodes: set[str], budgets: Iterable[Mapping[str, Any]]) -> bool:
    """Would the batch's drain take every Ready pod of this Deployment, with nothing to stop it?"""
    if int((deployment.get("spec") or {}).get("replicas", 1)) == 0 or (deployment.get("spec") or {}).get("paused"):
        return False
    pods = list(pods)
    on_batch = [p for p in pods if _is_ready(p) and p.get("spec", {}).get("nodeName") in batch_nodes]
    labels = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    return bool(on_batch) and ready_pods_elsewhere(pods, batch_nodes) == 0 and covered_by_budget(labels, budgets) is None


def scale_back_to(deployment: Mapping[str, Any], holder: str) -> tuple[int | None, str]:
    """After the batch: the replicas to scale back to, or None to leave it (and why)."""
    annotations = deployment["metadata"].get("annotations") or {}
    if annotations.get(SCALED_BY_ANNOTATION) != holder:
        return None, "not scaled up by this run"
    before = int(annotations.get(REPLICAS_BEFORE_ANNOTATION, "0"))
    now = int((deployment.get("spec") or {}).get("replicas", 1))
    if now != before + 1:
        return None, f"changed to {now} replicas meanwhile (by someone or an autoscaler): left as it is"
    return before, f"back to {before} replica(s)"
