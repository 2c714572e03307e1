"""Which Deployments a batch's drain would leave with no Ready pod, and how they are scaled back."""
from __future__ import annotations

from kube_maintenance.node_replacement.protect import REPLICAS_BEFORE_ANNOTATION, SCALED_BY_ANNOTATION, needs_a_spare, scale_back_to

LABELS = {"app": "web"}


def deployment(replicas: int = 1, annotations: dict | None = None) -> dict:
    return {"metadata": {"name": "web", "namespace": "shop", "annotations": annotations or {}}, "spec": {"replicas": replicas, "template": {"metadata": {"labels": LABELS}}}}


def pod(node: str, ready: bool = True) -> dict:
    return {"metadata": {"name": f"web-{node}", "labels": LABELS}, "spec": {"nodeName": node}, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_deployment_whose_every_ready_pod_is_on_the_batch_needs_a_spare_unless_a_budget_covers_it() -> None:
    batch = {"n1"}
    assert needs_a_spare(deployment(), [pod("n1")], batch, [])
    assert not needs_a_spare(deployment(2), [pod("n1"), pod("n2")], batch, []), "a Ready pod runs elsewhere"
    assert needs_a_spare(deployment(2), [pod("n1"), pod("n2", ready=False)], batch, []), "the one elsewhere is not Ready"
    budget = {"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": LABELS}}}
    assert not needs_a_spare(deployment(), [pod("n1")], batch, [budget]), "the budget makes the eviction wait by itself"
    assert not needs_a_spare(deployment(0), [], batch, []) and not needs_a_spare(deployment(), [pod("n2")], batch, [])


def test_scaled_back_only_when_nobody_changed_it_meanwhile() -> None:
    ours = {SCALED_BY_ANNOTATION: "dag/run", REPLICAS_BEFORE_ANNOTATION: "1"}
    assert scale_back_to(deployment(2, ours), "dag/run") == (1, "back to 1 replica(s)")
    replicas, why = scale_back_to(deployment(5, ours), "dag/run")
    assert replicas is None and "changed to 5 replicas meanwhile" in why
    assert scale_back_to(deployment(2, ours), "dag/other-run")[0] is None
