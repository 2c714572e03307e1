"""PodDisruptionBudget status and the Eviction subresource behave as the real ones do."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

import sandbox.cluster as cluster_module
from sandbox import errors, podutil
from sandbox.cluster import SandboxCluster
from sandbox.config import NEVER_READY_ANNOTATION
from sandbox.controllers.disruption import evict
from sandbox.resources import DAEMONSETS, DEPLOYMENTS, EVENTS, NAMESPACES, PDBS, PODS, REPLICASETS, STATEFULSETS
from sandbox.testing import add_pod, add_ready_node, fast_config

pytestmark = pytest.mark.timeout(60)

NS = "default"
WEB = {"app": "web"}
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


@pytest.fixture
def cluster(bare_cluster: SandboxCluster) -> Iterator[SandboxCluster]:
    add_ready_node(bare_cluster, "node-1")
    yield bare_cluster
    assert not bare_cluster.manager.errors, bare_cluster.manager.errors[0]


@pytest.fixture
def owners_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxCluster]:
    """Deployments, ReplicaSets and StatefulSets written by hand stay exactly as written: the
    workload controllers are left out, so only their ``spec.replicas`` matters here."""
    modules = tuple(m for m in cluster_module.CONTROLLER_MODULES if m != "sandbox.controllers.workloads")
    monkeypatch.setattr(cluster_module, "CONTROLLER_MODULES", modules)
    cluster = SandboxCluster("pdb-owners", fast_config())
    cluster.bootstrap()
    cluster.manager.start()
    add_ready_node(cluster, "node-1")
    try:
        yield cluster
        assert not cluster.manager.errors, cluster.manager.errors[0]
    finally:
        cluster.manager.stop()


def create_pdb(cluster: SandboxCluster, name: str, namespace: str = NS, selector: Any = WEB, **spec: Any) -> dict[str, Any]:
    body_spec = dict(spec)
    if selector is not None:
        body_spec["selector"] = {"matchLabels": selector} if selector else {}
    return cluster.store.create(PDBS, {"metadata": {"name": name, "namespace": namespace}, "spec": body_spec})


def pdb_status(cluster: SandboxCluster, name: str, namespace: str = NS) -> dict[str, Any]:
    return cluster.store.get(PDBS, namespace, name).get("status") or {}


def numbers(cluster: SandboxCluster, name: str, namespace: str = NS) -> tuple[int, int, int, int]:
    st = pdb_status(cluster, name, namespace)
    return st.get("expectedPods", 0), st.get("desiredHealthy", 0), st.get("currentHealthy", 0), st.get("disruptionsAllowed", 0)


def wait_numbers(cluster: SandboxCluster, name: str, expected: tuple[int, int, int, int], namespace: str = NS) -> None:
    assert cluster.wait_for(lambda: numbers(cluster, name, namespace) == expected, 5), numbers(cluster, name, namespace)


def allowed_condition(cluster: SandboxCluster, name: str) -> dict[str, Any]:
    return [c for c in pdb_status(cluster, name)["conditions"] if c["type"] == "DisruptionAllowed"][0]


def web_pods(cluster: SandboxCluster, count: int, **options: Any) -> list[dict[str, Any]]:
    pods = [add_pod(cluster, f"web-{i}", labels=WEB, **options) for i in range(count)]
    assert cluster.wait_for(lambda: all(podutil.is_ready(cluster.store.get(PODS, NS, p["metadata"]["name"])) for p in pods), 5)
    return pods


def eviction(name: str, **delete_options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NS}}
    if delete_options:
        body["deleteOptions"] = delete_options
    return body


def is_evicted(cluster: SandboxCluster, name: str) -> bool:
    pod = cluster.store.try_get(PODS, NS, name)
    return pod is None or podutil.is_terminating(pod)


# ==================================================================================== admission
def test_pdb_validation(cluster: SandboxCluster) -> None:
    with pytest.raises(errors.ApiError) as both:
        create_pdb(cluster, "both", minAvailable=1, maxUnavailable=1)
    assert both.value.code == 422
    assert both.value.message.startswith('PodDisruptionBudget.policy "both" is invalid: spec: Invalid value')
    assert "minAvailable and maxUnavailable cannot be both set" in both.value.message
    for bad, message in (
        ({"minAvailable": "50"}, "a valid percent string must be a numeric string followed by an ending '%'"),
        ({"maxUnavailable": "150%"}, 'spec.maxUnavailable: Invalid value: "150%": must not be greater than 100%'),
        ({"minAvailable": -1}, "spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"),
        ({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes"}, 'Unsupported value: "Sometimes"'),
    ):
        with pytest.raises(errors.ApiError) as err:
            create_pdb(cluster, "bad", **bad)
        assert err.value.code == 422 and message in err.value.message
    # Neither field is valid in policy/v1 (the budget then allows no disruption of ready pods).
    fresh = create_pdb(cluster, "neither")
    assert fresh["status"] == {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}


# ================================================================================ status numbers
def test_min_available_int_counts_matching_pods(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    add_pod(cluster, "web-unready", labels=WEB, annotations={NEVER_READY_ANNOTATION: "true"})
    add_pod(cluster, "other", labels={"app": "other"})
    pdb = create_pdb(cluster, "web", minAvailable=2)
    wait_numbers(cluster, "web", (4, 2, 3, 1))
    status = pdb_status(cluster, "web")
    assert status["observedGeneration"] == pdb["metadata"]["generation"] == 1
    assert "disruptedPods" not in status
    cond = allowed_condition(cluster, "web")
    assert (cond["status"], cond["reason"], cond["message"], cond["observedGeneration"]) == ("True", "SufficientPods", "", 1)

    cluster.store.mutate(PDBS, NS, "web", lambda p: p["spec"].update(minAvailable=3))
    wait_numbers(cluster, "web", (4, 3, 3, 0))
    assert pdb_status(cluster, "web")["observedGeneration"] == 2
    cond = allowed_condition(cluster, "web")
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientPods")

    # A terminating pod is no longer healthy (and soon no longer expected either, once it is gone).
    cluster.store.delete(PODS, NS, "web-0")
    assert cluster.wait_for(lambda: numbers(cluster, "web")[1:] == (3, 2, 0), 5)
    wait_numbers(cluster, "web", (3, 3, 2, 0))


def test_null_selector_selects_nothing_and_empty_selector_selects_the_namespace(cluster: SandboxCluster) -> None:
    web_pods(cluster, 2)
    create_pdb(cluster, "no-selector", selector=None, minAvailable=1)
    create_pdb(cluster, "everything", selector={}, minAvailable=1)
    create_pdb(cluster, "no-numbers")  # neither minAvailable nor maxUnavailable
    wait_numbers(cluster, "everything", (2, 1, 2, 1))
    wait_numbers(cluster, "no-selector", (0, 1, 0, 0))
    # Nothing expected: no disruption allowed, however many pods are healthy.
    wait_numbers(cluster, "no-numbers", (0, 0, 2, 0))


def test_percentages_and_max_unavailable_scale_by_the_owning_controllers(owners_cluster: SandboxCluster) -> None:
    cluster = owners_cluster
    store = cluster.store
    template = {"metadata": {"labels": WEB}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
    deployment = store.create(DEPLOYMENTS, {"metadata": {"name": "web", "namespace": NS}, "spec": {"replicas": 4, "selector": {"matchLabels": WEB}, "template": template}})
    replica_set = store.create(
        REPLICASETS,
        {
            "metadata": {"name": "web-6b7f9c5d8", "namespace": NS, "labels": WEB, "ownerReferences": [podutil.owner_reference(deployment)]},
            "spec": {"replicas": 4, "selector": {"matchLabels": WEB}, "template": template},
        },
    )
    web_pods(cluster, 3, owner=replica_set)  # one replica still missing
    create_pdb(cluster, "half", minAvailable="50%")
    create_pdb(cluster, "one-down", maxUnavailable=1)
    create_pdb(cluster, "thirty", maxUnavailable="30%")
    # The Deployment's replicas (4) set expectedPods, not the 3 pods that exist.
    wait_numbers(cluster, "half", (4, 2, 3, 1))
    wait_numbers(cluster, "one-down", (4, 3, 3, 0))
    wait_numbers(cluster, "thirty", (4, 2, 3, 1))  # 30% of 4 rounds up to 2 unavailable

    store.mutate(DEPLOYMENTS, NS, "web", lambda d: d["spec"].update(replicas=6))
    wait_numbers(cluster, "half", (6, 3, 3, 0))
    wait_numbers(cluster, "one-down", (6, 5, 3, 0))

    db = {"app": "db"}
    stateful = store.create(
        STATEFULSETS,
        {"metadata": {"name": "db", "namespace": NS}, "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": db}, "template": {**template, "metadata": {"labels": db}}}},
    )
    for i in range(2):
        add_pod(cluster, f"db-{i}", labels=db, owner=stateful)
    create_pdb(cluster, "db", selector=db, maxUnavailable=1)
    wait_numbers(cluster, "db", (3, 2, 2, 0))


def test_budget_fails_safe_when_pods_have_no_scalable_controller(owners_cluster: SandboxCluster) -> None:
    cluster = owners_cluster
    add_pod(cluster, "bare", labels=WEB)
    create_pdb(cluster, "web", maxUnavailable=1)

    def sync_failed(name: str, message: str) -> bool:
        status = pdb_status(cluster, name)
        conds = [c for c in status.get("conditions") or () if c["type"] == "DisruptionAllowed"]
        return bool(conds) and conds[0]["reason"] == "SyncFailed" and conds[0]["message"] == message

    assert cluster.wait_for(lambda: sync_failed("web", 'found no controller ref for pod "bare"'), 5)
    assert pdb_status(cluster, "web")["disruptionsAllowed"] == 0
    assert allowed_condition(cluster, "web")["status"] == "False"
    reasons = {e["reason"] for e in cluster.store.iter(EVENTS, NS) if e["involvedObject"]["name"] == "web"}
    assert {"NoControllerRef", "CalculateExpectedPodCountFailed"} <= reasons

    agents = {"app": "agent"}
    daemon_set = cluster.store.create(
        DAEMONSETS,
        {"metadata": {"name": "agent", "namespace": NS}, "spec": {"selector": {"matchLabels": agents}, "template": {"metadata": {"labels": agents}, "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}}},
    )
    add_pod(cluster, "agent-x", labels=agents, owner=daemon_set)
    create_pdb(cluster, "agents", selector=agents, minAvailable="50%")
    assert cluster.wait_for(lambda: sync_failed("agents", "daemonsets.apps does not implement the scale subresource"), 5)

    # minAvailable as a number needs no controller at all.
    create_pdb(cluster, "count", minAvailable=0)
    assert cluster.wait_for(lambda: numbers(cluster, "count") == (1, 0, 1, 1), 5)


# ===================================================================================== eviction
def test_eviction_within_budget_deletes_the_pod_and_records_the_disruption(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    create_pdb(cluster, "web", minAvailable=2)
    wait_numbers(cluster, "web", (3, 2, 3, 1))

    with cluster.store.lock:  # look at the budget before the disruption controller reacts
        result = evict(cluster, NS, "web-0", eviction("web-0"))
        status = pdb_status(cluster, "web")
        pod = cluster.store.get(PODS, NS, "web-0")
    assert result == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    assert status["disruptionsAllowed"] == 0
    assert list(status["disruptedPods"]) == ["web-0"]
    assert [c["reason"] for c in status["conditions"] if c["type"] == "DisruptionAllowed"] == ["InsufficientPods"]
    assert podutil.is_terminating(pod)
    target = podutil.condition(pod, "DisruptionTarget")
    assert target is not None
    assert (target["status"], target["reason"], target["message"]) == ("True", "EvictionByEvictionAPI", "Eviction API: evicting")

    # Once the evicted pod is terminating, the controller drops it from disruptedPods.
    assert cluster.wait_for(lambda: numbers(cluster, "web")[1:] == (2, 2, 0), 5)
    assert cluster.wait_for(lambda: "disruptedPods" not in pdb_status(cluster, "web"), 5)

    with pytest.raises(errors.ApiError) as refused:
        evict(cluster, NS, "web-1", eviction("web-1"))
    assert refused.value.code == 429
    assert refused.value.status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": VIOLATION,
        "reason": "TooManyRequests",
        "code": 429,
        "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
    }
    assert not podutil.is_terminating(cluster.store.get(PODS, NS, "web-1"))


def test_eviction_with_two_budgets_is_an_internal_error(cluster: SandboxCluster) -> None:
    web_pods(cluster, 2)
    create_pdb(cluster, "first", minAvailable=0)
    create_pdb(cluster, "second", selector={}, minAvailable=0)
    wait_numbers(cluster, "first", (2, 0, 2, 2))
    with pytest.raises(errors.ApiError) as err:
        evict(cluster, NS, "web-0", eviction("web-0"))
    assert err.value.code == 500
    assert err.value.message == "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    assert not is_evicted(cluster, "web-0")


def test_blocked_pdb_fault_refuses_every_eviction(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    create_pdb(cluster, "web", minAvailable=1)
    wait_numbers(cluster, "web", (3, 1, 3, 2))
    cluster.faults.blocked_pdbs.add((NS, "web"))
    for _ in range(2):
        with pytest.raises(errors.ApiError) as err:
            evict(cluster, NS, "web-0", eviction("web-0"))
        assert err.value.code == 429 and err.value.message == VIOLATION
        assert err.value.details == {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web needs 1 healthy pods and has 3 currently"}]}
    assert not is_evicted(cluster, "web-0")
    assert pdb_status(cluster, "web")["disruptionsAllowed"] == 2
    cluster.faults.blocked_pdbs.clear()
    evict(cluster, NS, "web-0", eviction("web-0"))
    assert is_evicted(cluster, "web-0")


def test_eviction_preconditions_and_request_errors(cluster: SandboxCluster) -> None:
    (pod,) = web_pods(cluster, 1)
    with pytest.raises(errors.ApiError) as uid:
        evict(cluster, NS, "web-0", eviction("web-0", preconditions={"uid": "not-the-uid"}))
    assert uid.value.code == 409
    assert uid.value.message == (
        f'Operation cannot be fulfilled on Pod "web-0": the UID in the precondition (not-the-uid) does not match the UID in record '
        f"({pod['metadata']['uid']}). The object might have been deleted and then recreated"
    )
    with pytest.raises(errors.ApiError) as rv:
        evict(cluster, NS, "web-0", eviction("web-0", preconditions={"resourceVersion": "1"}))
    assert rv.value.code == 409 and "the ResourceVersion in the precondition (1) does not match" in rv.value.message
    assert not is_evicted(cluster, "web-0")

    with pytest.raises(errors.ApiError) as missing:
        evict(cluster, NS, "ghost", eviction("ghost"))
    assert (missing.value.code, missing.value.message) == (404, 'pods "ghost" not found')
    with pytest.raises(errors.ApiError) as mismatch:
        evict(cluster, NS, "web-0", eviction("web-1"))
    assert (mismatch.value.code, mismatch.value.message) == (400, "name in URL does not match name in Eviction object")

    current = cluster.store.get(PODS, NS, "web-0")
    evict(cluster, NS, "web-0", eviction("web-0", preconditions={"uid": current["metadata"]["uid"]}, gracePeriodSeconds=5))
    assert cluster.store.get(PODS, NS, "web-0")["metadata"]["deletionGracePeriodSeconds"] == 5


def test_pending_and_terminal_pods_are_deleted_without_asking_the_budget(cluster: SandboxCluster) -> None:
    add_pod(cluster, "waiting", labels=WEB, nodeSelector={"pool": "missing"})  # never scheduled
    create_pdb(cluster, "web", minAvailable=5)
    assert cluster.wait_for(lambda: pdb_status(cluster, "web").get("expectedPods") == 1, 5)
    assert pdb_status(cluster, "web")["disruptionsAllowed"] == 0
    evict(cluster, NS, "waiting", eviction("waiting"))
    assert cluster.store.try_get(PODS, NS, "waiting") is None  # unscheduled: removed at once

    done = add_pod(cluster, "done", labels=WEB, restart_policy="Never")
    assert cluster.wait_for(lambda: cluster.store.get(PODS, NS, "done").get("status", {}).get("phase") == "Succeeded", 5)
    evict(cluster, NS, "done", eviction("done"))
    assert cluster.store.try_get(PODS, NS, done["metadata"]["name"]) is None
    assert "disruptedPods" not in pdb_status(cluster, "web")


def test_unready_pods_and_the_unhealthy_pod_eviction_policy(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    add_pod(cluster, "sick", labels=WEB, annotations={NEVER_READY_ANNOTATION: "true"})
    assert cluster.wait_for(lambda: cluster.store.get(PODS, NS, "sick").get("status", {}).get("phase") == "Running", 5)
    create_pdb(cluster, "web", minAvailable=4)
    wait_numbers(cluster, "web", (4, 4, 3, 0))
    # IfHealthyBudget (the default): the budget is not met, so even the unready pod is protected.
    with pytest.raises(errors.ApiError) as err:
        evict(cluster, NS, "sick", eviction("sick"))
    assert err.value.code == 429

    cluster.store.mutate(PDBS, NS, "web", lambda p: p["spec"].update(minAvailable=3))
    wait_numbers(cluster, "web", (4, 3, 3, 0))
    evict(cluster, NS, "sick", eviction("sick"))  # budget met: the unready pod may go, budget untouched
    assert is_evicted(cluster, "sick")
    assert "disruptedPods" not in pdb_status(cluster, "web")

    assert cluster.wait_for(lambda: cluster.store.try_get(PODS, NS, "sick") is None, 5)
    add_pod(cluster, "sick-2", labels=WEB, annotations={NEVER_READY_ANNOTATION: "true"})
    cluster.store.mutate(PDBS, NS, "web", lambda p: p["spec"].update(minAvailable=10, unhealthyPodEvictionPolicy="AlwaysAllow"))
    assert cluster.wait_for(lambda: cluster.store.get(PODS, NS, "sick-2").get("status", {}).get("phase") == "Running", 5)
    wait_numbers(cluster, "web", (4, 10, 3, 0))
    evict(cluster, NS, "sick-2", eviction("sick-2"))
    assert is_evicted(cluster, "sick-2")
    with pytest.raises(errors.ApiError):
        evict(cluster, NS, "web-0", eviction("web-0"))  # a ready pod is still protected

    # A budget that wants no healthy pod treats an unready pod like any other: it takes budget.
    add_pod(cluster, "sick-3", labels=WEB, annotations={NEVER_READY_ANNOTATION: "true"})
    cluster.store.mutate(PDBS, NS, "web", lambda p: p["spec"].update(minAvailable=0, unhealthyPodEvictionPolicy="IfHealthyBudget"))
    assert cluster.wait_for(lambda: cluster.store.get(PODS, NS, "sick-3").get("status", {}).get("phase") == "Running", 5)
    assert cluster.wait_for(lambda: numbers(cluster, "web")[1:] == (0, 3, 3), 5)
    with cluster.store.lock:
        evict(cluster, NS, "sick-3", eviction("sick-3"))
        assert list(pdb_status(cluster, "web")["disruptedPods"]) == ["sick-3"]


def test_eviction_against_a_budget_whose_status_is_stale(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    create_pdb(cluster, "web", minAvailable=1)
    wait_numbers(cluster, "web", (3, 1, 3, 2))
    with cluster.store.lock:  # the spec changed and the controller has not caught up yet
        cluster.store.mutate(PDBS, NS, "web", lambda p: p["spec"].update(minAvailable=2))
        with pytest.raises(errors.ApiError) as err:
            evict(cluster, NS, "web-0", eviction("web-0"))
    assert err.value.code == 429 and err.value.message == VIOLATION
    assert err.value.details == {
        "causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web is still being processed by the server."}],
        "retryAfterSeconds": 10,
    }
    assert err.value.retry_after == 10
    wait_numbers(cluster, "web", (3, 2, 3, 1))
    evict(cluster, NS, "web-0", eviction("web-0"))


def test_disrupted_pod_entries_expire_after_two_minutes(cluster: SandboxCluster) -> None:
    web_pods(cluster, 3)
    create_pdb(cluster, "web", minAvailable=1)
    wait_numbers(cluster, "web", (3, 1, 3, 2))
    # An approved eviction whose delete never happened keeps the pod out of currentHealthy ...
    now = cluster.clock.iso()
    cluster.store.mutate(PDBS, NS, "web", lambda p: p["status"].update(disruptedPods={"web-1": now}), subresource="status")
    wait_numbers(cluster, "web", (3, 1, 2, 1))
    assert pdb_status(cluster, "web")["disruptedPods"] == {"web-1": now}
    # ... for two minutes; then the controller gives up on it.
    cluster.clock.advance(121)
    wait_numbers(cluster, "web", (3, 1, 3, 2))
    assert "disruptedPods" not in pdb_status(cluster, "web")
    assert any(e["reason"] == "NotDeleted" for e in cluster.store.iter(EVENTS, NS) if e["involvedObject"]["name"] == "web-1")


def test_budget_status_is_kept_per_namespace(cluster: SandboxCluster) -> None:
    cluster.store.create(NAMESPACES, {"metadata": {"name": "shop"}})
    web_pods(cluster, 2)
    add_pod(cluster, "shop-web", namespace="shop", labels=WEB)
    create_pdb(cluster, "web", namespace="shop", minAvailable=1)
    wait_numbers(cluster, "web", (1, 1, 1, 0), namespace="shop")
