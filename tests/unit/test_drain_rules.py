"""What a drain evicts, skips or refuses, as kubectl drain --ignore-daemonsets decides."""
from __future__ import annotations

from kube_maintenance.node_replacement import drain as d


def pod(name: str, owner: str | None = "ReplicaSet", **extra: object) -> dict:
    meta: dict = {"name": name, "namespace": "shop", "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": f"{owner.lower()}-x", "controller": True, "uid": "o"}]
    meta.update(extra.pop("metadata", {}))  # type: ignore[arg-type]
    body = {"metadata": meta, "spec": extra.pop("spec", {}), "status": extra.pop("status", {"phase": "Running"})}
    return body


OPTS = d.DrainOptions()


def test_each_rule() -> None:
    assert d.decide(pod("web"), OPTS).action == d.EVICT
    assert d.decide(pod("agent", owner="DaemonSet"), OPTS).action == d.SKIP
    mirror = pod("etcd", owner=None, metadata={"annotations": {d.MIRROR_ANNOTATION: "x"}})
    assert d.decide(mirror, OPTS).action == d.SKIP
    assert d.decide(pod("bare", owner=None), OPTS).action == d.REFUSE
    assert d.decide(pod("bare", owner=None), d.DrainOptions(force_unmanaged_pods=True)).action == d.EVICT
    cache = pod("cache", spec={"volumes": [{"name": "tmp", "emptyDir": {}}]})
    assert d.decide(cache, OPTS).action == d.REFUSE and "tmp" in d.decide(cache, OPTS).reason
    assert d.decide(cache, d.DrainOptions(delete_emptydir_data=True)).action == d.EVICT
    going = pod("going", metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"})
    assert d.decide(going, OPTS).action == d.WAIT
    done = pod("done", owner=None, status={"phase": "Succeeded"})
    assert d.decide(done, OPTS).action == d.EVICT


def test_daemonset_pods_with_emptydir_are_skipped_not_refused() -> None:
    ds = pod("logs", owner="DaemonSet", spec={"volumes": [{"name": "buf", "emptyDir": {}}]})
    assert d.decide(ds, OPTS).action == d.SKIP


def test_refusal_names_every_blocking_pod_and_what_to_set() -> None:
    decisions = d.decide_all([pod("web"), pod("bare", owner=None), pod("cache", spec={"volumes": [{"name": "t", "emptyDir": {}}]})], OPTS)
    message = d.refusal_message("node-1", decisions)
    assert message is not None
    assert "cannot drain node-1: 2 pod(s)" in message
    assert "pod/shop/bare" in message and "force_unmanaged_pods" in message
    assert "pod/shop/cache" in message and "delete_emptydir_data" in message
    assert d.refusal_message("node-1", d.decide_all([pod("web")], OPTS)) is None


def test_pods_left_counts_what_the_drain_waits_for() -> None:
    decisions = d.decide_all([pod("web"), pod("agent", owner="DaemonSet"), pod("g", metadata={"deletionTimestamp": "x"})], OPTS)
    assert [x.name for x in d.pods_left(decisions)] == ["g", "web"]


def test_blocking_budget_reads_the_429_status() -> None:
    status = {
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web needs 3 healthy pods and has 3 currently"}]},
    }
    assert d.blocking_budget(status) == "PodDisruptionBudget web (needs 3 healthy, has 3, disruptionsAllowed=0)"
    assert "disruption budget" in d.blocking_budget({"message": "Cannot evict pod as it would violate the pod's disruption budget."})


def test_pods_terminating_on_a_dead_node_past_the_grace_are_left_to_the_pod_gc() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
    # deletionTimestamp is when the pod's grace period ends; the drain waits 120 s more at most.
    long_ago = pod("stuck", metadata={"deletionTimestamp": "2026-11-30T11:57:00Z"})
    just_now = pod("fresh", metadata={"deletionTimestamp": "2026-11-30T11:59:30Z"})
    dead = d.DrainOptions(skip_wait_for_delete_timeout_seconds=120, node_unreachable=True, now=now)
    assert d.decide(long_ago, dead).action == d.GC and "pod garbage collector" in d.decide(long_ago, dead).reason
    assert d.decide(just_now, dead).action == d.WAIT
    # A Ready node's kubelet finishes its pods: its drain waits for every one, as kubectl's does by default.
    alive = d.DrainOptions(skip_wait_for_delete_timeout_seconds=120, node_unreachable=False, now=now)
    assert d.decide(long_ago, alive).action == d.WAIT
    # A pod still Ready on a dead node is evicted and waited for like any other; an unready one is
    # evicted if its budget allows, else left to the GC: it serves nothing, its budget counts it
    # unhealthy already, so it neither keeps the drain waiting nor the instance from terminating.
    ready = pod("web", status={"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    unready = pod("db", status={"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    assert d.decide(ready, dead).action == d.EVICT and d.decide(unready, dead).action == d.EVICT_OR_GC
    assert d.decide(unready, alive).action == d.EVICT
    decisions = d.decide_all([long_ago, just_now, ready, unready], dead)
    assert [x.name for x in d.pods_left(decisions)] == ["fresh", "web"]
    assert [x.name for x in d.evictable(decisions)] == ["db", "web"]
    assert sorted(x.name for x in d.left_to_gc(decisions)) == ["db", "stuck"]
    # An unmanaged pod is refused on a dead node too: the form's choice still decides.
    assert d.decide(pod("bare", owner=None), dead).action == d.REFUSE
