"""Garbage collector (ownerReferences, propagation policies) and namespace controller of the sandbox."""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import pytest

from sandbox import errors, podutil
from sandbox.cluster import SandboxCluster
from sandbox.resources import NAMESPACES, PODS
from sandbox.testing import add_pod, add_ready_node

pytestmark = pytest.mark.timeout(30)

CONFIGMAPS = "configmaps"


def wait(cluster: SandboxCluster, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    assert cluster.wait_for(predicate, timeout), f"timed out waiting for {what}"


def configmap(cluster: SandboxCluster, name: str, *owners: dict[str, Any], namespace: str = "default", block: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if owners:
        metadata["ownerReferences"] = [podutil.owner_reference(o, controller=i == 0, block=block) for i, o in enumerate(owners)]
    return cluster.store.create(CONFIGMAPS, {"metadata": metadata, "data": {"k": "v"}}, namespace=namespace)


def exists(cluster: SandboxCluster, key: str, name: str, namespace: str | None = "default") -> bool:
    return cluster.store.try_get(key, namespace, name) is not None


def running_pod(cluster: SandboxCluster, name: str, owner: dict[str, Any] | None = None, namespace: str = "default") -> None:
    add_pod(cluster, name, namespace, owner=owner)
    wait(cluster, lambda: podutil.is_ready(cluster.store.get(PODS, namespace, name)), f"{name} Ready")


# ------------------------------------------------------------------------------------- propagation
def test_background_deletion_cascades_through_generations(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    owner = configmap(bare_cluster, "owner")
    child = configmap(bare_cluster, "child", owner)
    configmap(bare_cluster, "grandchild", child)
    running_pod(bare_cluster, "owned-pod", owner=owner)
    configmap(bare_cluster, "unrelated")

    _, removed = bare_cluster.store.delete(CONFIGMAPS, "default", "owner")
    assert removed  # background: the owner goes at once, dependents follow
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "child"), "child deleted")
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "grandchild"), "grandchild deleted")
    wait(bare_cluster, lambda: not exists(bare_cluster, PODS, "owned-pod"), "owned pod terminated and removed")
    assert exists(bare_cluster, CONFIGMAPS, "unrelated")
    assert bare_cluster.manager.errors == []


def test_owned_pod_gets_graceful_deletion(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 0.6
    add_ready_node(bare_cluster, "n1")
    owner = configmap(bare_cluster, "owner")
    running_pod(bare_cluster, "owned-pod", owner=owner)
    bare_cluster.store.delete(CONFIGMAPS, "default", "owner")
    wait(bare_cluster, lambda: podutil.is_terminating(bare_cluster.store.get(PODS, "default", "owned-pod")), "pod terminating")
    assert bare_cluster.store.get(PODS, "default", "owned-pod")["metadata"]["deletionGracePeriodSeconds"] == 30
    wait(bare_cluster, lambda: not exists(bare_cluster, PODS, "owned-pod"), "pod removed by its kubelet")


def test_dependent_with_a_live_owner_only_loses_the_dead_reference(bare_cluster: SandboxCluster) -> None:
    first = configmap(bare_cluster, "first")
    second = configmap(bare_cluster, "second")
    configmap(bare_cluster, "shared", first, second)
    bare_cluster.store.delete(CONFIGMAPS, "default", "first")
    wait(
        bare_cluster,
        lambda: [r["name"] for r in bare_cluster.store.get(CONFIGMAPS, "default", "shared")["metadata"].get("ownerReferences") or []] == ["second"],
        "dead reference removed",
    )
    assert exists(bare_cluster, CONFIGMAPS, "shared")
    bare_cluster.store.delete(CONFIGMAPS, "default", "second")
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "shared"), "deleted with its last owner")


def test_foreground_deletion_waits_for_blocking_dependents(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 0.6
    add_ready_node(bare_cluster, "n1")
    owner = configmap(bare_cluster, "owner")
    child = configmap(bare_cluster, "child", owner)
    configmap(bare_cluster, "grandchild", child)
    running_pod(bare_cluster, "owned-pod", owner=owner)

    obj, removed = bare_cluster.store.delete(CONFIGMAPS, "default", "owner", propagation="Foreground")
    assert not removed
    assert "foregroundDeletion" in obj["metadata"]["finalizers"] and obj["metadata"]["deletionTimestamp"]
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "grandchild"), "grandchild deleted")
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "child"), "child deleted")
    # The pod is still terminating gracefully: it blocks its owner.
    assert podutil.is_terminating(bare_cluster.store.get(PODS, "default", "owned-pod"))
    assert exists(bare_cluster, CONFIGMAPS, "owner")
    wait(bare_cluster, lambda: not exists(bare_cluster, PODS, "owned-pod"), "pod removed")
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "owner"), "owner removed after its dependents")
    assert bare_cluster.manager.errors == []


def test_foreground_deletion_does_not_wait_for_non_blocking_dependents(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 2.0
    add_ready_node(bare_cluster, "n1")
    owner = configmap(bare_cluster, "owner")
    add_pod(bare_cluster, "loose-pod")
    wait(bare_cluster, lambda: podutil.is_ready(bare_cluster.store.get(PODS, "default", "loose-pod")), "Ready")

    def adopt(pod: dict[str, Any]) -> None:
        pod["metadata"]["ownerReferences"] = [podutil.owner_reference(owner, block=False)]

    bare_cluster.store.mutate(PODS, "default", "loose-pod", adopt)
    bare_cluster.store.delete(CONFIGMAPS, "default", "owner", propagation="Foreground")
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "owner"), "owner removed")
    pod = bare_cluster.store.try_get(PODS, "default", "loose-pod")
    assert pod is not None and podutil.is_terminating(pod)


def test_orphan_deletion_keeps_dependents_without_the_reference(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    owner = configmap(bare_cluster, "owner")
    configmap(bare_cluster, "kept", owner)
    running_pod(bare_cluster, "kept-pod", owner=owner)

    obj, removed = bare_cluster.store.delete(CONFIGMAPS, "default", "owner", propagation="Orphan")
    assert not removed and "orphan" in obj["metadata"]["finalizers"]
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "owner"), "owner removed")
    kept = bare_cluster.store.get(CONFIGMAPS, "default", "kept")
    assert not kept["metadata"].get("ownerReferences")
    kept_pod = bare_cluster.store.get(PODS, "default", "kept-pod")
    assert not kept_pod["metadata"].get("ownerReferences") and not podutil.is_terminating(kept_pod)
    time.sleep(0.2)
    assert exists(bare_cluster, CONFIGMAPS, "kept") and exists(bare_cluster, PODS, "kept-pod")


def test_dependent_of_a_missing_owner_is_deleted(bare_cluster: SandboxCluster) -> None:
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost", "uid": str(uuid.uuid4())}}
    configmap(bare_cluster, "dangling", ghost)
    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "dangling"), "dangling dependent deleted")


# -------------------------------------------------------------------------------------- namespaces
def test_namespace_deletion_empties_it_then_removes_it(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 0.6
    add_ready_node(bare_cluster, "n1")
    bare_cluster.store.create(NAMESPACES, {"metadata": {"name": "team"}})
    running_pod(bare_cluster, "app", namespace="team")
    add_pod(bare_cluster, "unschedulable", "team", nodeSelector={"nowhere": "true"})
    configmap(bare_cluster, "settings", namespace="team")
    running_pod(bare_cluster, "neighbour")

    ns, removed = bare_cluster.store.delete(NAMESPACES, None, "team")
    assert not removed and ns["status"]["phase"] == "Terminating"
    with pytest.raises(errors.ApiError) as forbidden:
        configmap(bare_cluster, "late", namespace="team")
    assert forbidden.value.code == 403

    wait(bare_cluster, lambda: not exists(bare_cluster, CONFIGMAPS, "settings", "team"), "configmap deleted")
    assert not exists(bare_cluster, PODS, "unschedulable", "team")
    # The running pod terminates gracefully; the namespace waits for it and says so.
    assert podutil.is_terminating(bare_cluster.store.get(PODS, "team", "app"))
    team = bare_cluster.store.get(NAMESPACES, None, "team")
    remaining = podutil.condition(team, "NamespaceContentRemaining")
    assert remaining["status"] == "True" and "pods has 1 resource instances" in remaining["message"]

    def relabel(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("labels", {})["touched"] = "yes"

    bare_cluster.store.mutate(NAMESPACES, None, "team", relabel)  # an update does not finalize it
    assert exists(bare_cluster, NAMESPACES, "team", None)

    wait(bare_cluster, lambda: not exists(bare_cluster, NAMESPACES, "team", None), "namespace removed")
    assert not exists(bare_cluster, PODS, "app", "team")
    assert podutil.is_ready(bare_cluster.store.get(PODS, "default", "neighbour"))
    assert bare_cluster.manager.errors == []


def test_namespace_waits_for_finalizers_of_its_content(bare_cluster: SandboxCluster) -> None:
    bare_cluster.store.create(NAMESPACES, {"metadata": {"name": "held"}})
    bare_cluster.store.create(CONFIGMAPS, {"metadata": {"name": "guarded", "finalizers": ["example.com/hold"]}}, namespace="held")
    bare_cluster.store.delete(NAMESPACES, None, "held")
    wait(
        bare_cluster,
        lambda: (podutil.condition(bare_cluster.store.get(NAMESPACES, None, "held"), "NamespaceFinalizersRemaining") or {}).get("status") == "True",
        "finalizers reported",
    )
    message = podutil.condition(bare_cluster.store.get(NAMESPACES, None, "held"), "NamespaceFinalizersRemaining")["message"]
    assert "example.com/hold in 1 resource instances" in message
    assert podutil.is_terminating(bare_cluster.store.get(CONFIGMAPS, "held", "guarded"))

    def release(obj: dict[str, Any]) -> None:
        obj["metadata"]["finalizers"] = []

    bare_cluster.store.mutate(CONFIGMAPS, "held", "guarded", release)
    wait(bare_cluster, lambda: not exists(bare_cluster, NAMESPACES, "held", None), "namespace removed")
