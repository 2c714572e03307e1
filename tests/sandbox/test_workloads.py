"""The apps/v1 workload controllers (ReplicaSet, Deployment, StatefulSet, DaemonSet) and their
defaulting and validation, driven through the store of a cluster with a few ready nodes."""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import pytest

from sandbox import podutil
from sandbox.cluster import SandboxCluster
from sandbox.config import NEVER_READY_ANNOTATION
from sandbox.controllers.workloads import DAEMON_TOLERATIONS
from sandbox.errors import ApiError
from sandbox.resources import CONTROLLERREVISIONS, DAEMONSETS, DEPLOYMENTS, NODES, PODS, REPLICASETS, STATEFULSETS
from sandbox.testing import add_pod, add_ready_node

pytestmark = pytest.mark.timeout(30)

Obj = dict[str, Any]
NS = "default"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture
def cluster(bare_cluster: SandboxCluster) -> Iterator[SandboxCluster]:
    """Three Ready nodes; no controller may have failed by the end of the test."""
    for i in range(3):
        add_ready_node(bare_cluster, f"node-{i}")
    yield bare_cluster
    assert bare_cluster.manager.errors == []


def wait(cluster: SandboxCluster, predicate: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    assert cluster.wait_for(predicate, timeout), f"timed out waiting for {what}"


def get(cluster: SandboxCluster, key: str, name: str) -> Obj:
    return cluster.store.get(key, NS, name)


def status(cluster: SandboxCluster, key: str, name: str) -> Obj:
    return get(cluster, key, name).get("status") or {}


def template(app: str, annotations: dict[str, str] | None = None) -> Obj:
    metadata: Obj = {"labels": {"app": app}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"metadata": metadata, "spec": {"containers": [{"name": "main", "image": f"registry.example/{app}:1.0"}]}}


def workload(name: str, replicas: int | None = None, annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: Obj = {"selector": {"matchLabels": {"app": name}}, "template": template(name, annotations)}
    if replicas is not None:
        body["replicas"] = replicas
    body.update(spec)
    return {"metadata": {"name": name, "namespace": NS}, "spec": body}


def edit(cluster: SandboxCluster, key: str, name: str, change: Callable[[Obj], None]) -> Obj:
    """A client's read-modify-write of the main resource (what kubectl patch amounts to)."""
    return cluster.store.mutate(key, NS, name, change)


def restart(cluster: SandboxCluster, key: str, name: str, stamp: str = "2024-01-01T00:00:00Z") -> None:
    """What ``kubectl rollout restart`` patches in."""

    def annotate(obj: Obj) -> None:
        obj["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = stamp

    edit(cluster, key, name, annotate)


def pods_of(cluster: SandboxCluster, app: str) -> list[Obj]:
    return [p for p in cluster.store.iter(PODS, NS) if (p["metadata"].get("labels") or {}).get("app") == app]


def live(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if podutil.is_active(p)]


def owned(cluster: SandboxCluster, key: str, owner: Obj) -> list[Obj]:
    return [obj for k, obj in cluster.store.dependents(owner["metadata"]["uid"]) if k == key and podutil.is_owned_by(obj, owner)]


def condition(obj: Obj, cond_type: str) -> Obj:
    found = podutil.condition(obj, cond_type)
    assert found is not None, f"no {cond_type} condition in {obj.get('status')}"
    return found


def on_pod_change(cluster: SandboxCluster, callback: Callable[[str, Obj | None, Obj | None], None]) -> None:
    """Run ``callback(event, old, new)`` synchronously on every pod write (under the store lock)."""

    def listener(type_key: str, event: str, old: Obj | None, new: Obj | None) -> None:
        if type_key == PODS:
            callback(event, old, new)

    cluster.store.add_listener(listener)


def deployment_done(cluster: SandboxCluster, name: str, replicas: int) -> bool:
    d = get(cluster, DEPLOYMENTS, name)
    st = d.get("status") or {}
    cond = podutil.condition(d, "Progressing") or {}
    return (
        st.get("observedGeneration") == d["metadata"]["generation"]
        and st.get("updatedReplicas") == replicas
        and st.get("replicas") == replicas
        and st.get("availableReplicas") == replicas
        and cond.get("reason") == "NewReplicaSetAvailable"
    )


def replica_sets(cluster: SandboxCluster, deployment: str) -> list[Obj]:
    d = get(cluster, DEPLOYMENTS, deployment)
    return sorted(owned(cluster, REPLICASETS, d), key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))


# -------------------------------------------------------------------------------------- Deployment
def test_deployment_becomes_available_through_a_hashed_replica_set(cluster: SandboxCluster) -> None:
    cluster.store.create(DEPLOYMENTS, workload("web", replicas=3))
    wait(cluster, lambda: deployment_done(cluster, "web", 3), "deployment available")

    d = get(cluster, DEPLOYMENTS, "web")
    st = d["status"]
    assert st["readyReplicas"] == 3 and "unavailableReplicas" not in st
    available = condition(d, "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")
    progressing = condition(d, "Progressing")
    assert progressing["status"] == "True"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    [rs] = replica_sets(cluster, "web")
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert progressing["message"] == f'ReplicaSet "web-{pod_hash}" has successfully progressed.'
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
    annotations = rs["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "1"
    assert annotations["deployment.kubernetes.io/desired-replicas"] == "3"
    assert annotations["deployment.kubernetes.io/max-replicas"] == "4"  # 3 + 25% surge, rounded up
    assert podutil.is_owned_by(rs, d)
    assert rs["status"]["availableReplicas"] == 3 and rs["status"]["observedGeneration"] == rs["metadata"]["generation"]

    pods = pods_of(cluster, "web")
    assert len(pods) == 3
    for pod in pods:
        assert podutil.is_owned_by(pod, rs)
        assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert pod["metadata"]["name"].startswith(f"web-{pod_hash}-")
        assert len(pod["metadata"]["name"]) == len(f"web-{pod_hash}-") + 5


def test_restart_rolls_pods_within_max_surge_and_max_unavailable(cluster: SandboxCluster) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    cluster.store.create(DEPLOYMENTS, workload("api", replicas=4, strategy=strategy))
    wait(cluster, lambda: deployment_done(cluster, "api", 4), "initial rollout")
    [old_rs] = replica_sets(cluster, "api")
    old_hash = old_rs["metadata"]["labels"]["pod-template-hash"]

    seen = {"max_live": 0, "min_ready": 4, "mixed": False}

    def measure(event: str, old: Obj | None, new: Obj | None) -> None:
        pods = live(pods_of(cluster, "api"))
        seen["max_live"] = max(seen["max_live"], len(pods))
        seen["min_ready"] = min(seen["min_ready"], sum(1 for p in pods if podutil.is_ready(p)))
        hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in pods}
        seen["mixed"] = seen["mixed"] or len(hashes) > 1

    on_pod_change(cluster, measure)
    restart(cluster, DEPLOYMENTS, "api")
    wait(cluster, lambda: deployment_done(cluster, "api", 4) and len(live(pods_of(cluster, "api"))) == 4, "restart rollout")

    assert seen["max_live"] <= 5, "more than replicas + maxSurge pods at once"
    assert seen["min_ready"] >= 3, "fewer than replicas - maxUnavailable ready pods"
    assert seen["mixed"], "old and new pods never overlapped: not a rolling update"
    old_rs_now, new_rs = replica_sets(cluster, "api")
    assert old_rs_now["metadata"]["name"] == old_rs["metadata"]["name"] and old_rs_now["spec"]["replicas"] == 0
    new_hash = new_rs["metadata"]["labels"]["pod-template-hash"]
    assert new_hash != old_hash
    assert new_rs["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2024-01-01T00:00:00Z"
    assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert get(cluster, DEPLOYMENTS, "api")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in live(pods_of(cluster, "api"))} == {new_hash}


def test_recreate_deletes_every_old_pod_before_creating_new_ones(cluster: SandboxCluster) -> None:
    cluster.store.create(DEPLOYMENTS, workload("batch", replicas=3, strategy={"type": "Recreate"}))
    wait(cluster, lambda: deployment_done(cluster, "batch", 3), "initial rollout")
    [old_rs] = replica_sets(cluster, "batch")
    old_hash = old_rs["metadata"]["labels"]["pod-template-hash"]
    overlaps: list[str] = []

    def check(event: str, old: Obj | None, new: Obj | None) -> None:
        pods = pods_of(cluster, "batch")  # terminating ones included: Recreate waits for them too
        hashes = {p["metadata"]["labels"]["pod-template-hash"] for p in pods}
        if old_hash in hashes and len(hashes) > 1:
            overlaps.append(", ".join(sorted(p["metadata"]["name"] for p in pods)))

    on_pod_change(cluster, check)
    restart(cluster, DEPLOYMENTS, "batch")
    wait(cluster, lambda: deployment_done(cluster, "batch", 3) and len(pods_of(cluster, "batch")) == 3, "recreate rollout")
    assert overlaps == []
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods_of(cluster, "batch")} != {old_hash}


def test_progress_deadline_exceeded_when_new_pods_never_become_ready(cluster: SandboxCluster) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    cluster.store.create(DEPLOYMENTS, workload("stuck", replicas=2, strategy=strategy))
    wait(cluster, lambda: deployment_done(cluster, "stuck", 2), "initial rollout")

    def broken_release(obj: Obj) -> None:
        obj["spec"]["progressDeadlineSeconds"] = 1
        obj["spec"]["template"]["metadata"]["annotations"] = {NEVER_READY_ANNOTATION: "true"}

    edit(cluster, DEPLOYMENTS, "stuck", broken_release)

    def timed_out() -> bool:
        return (podutil.condition(get(cluster, DEPLOYMENTS, "stuck"), "Progressing") or {}).get("reason") == "ProgressDeadlineExceeded"

    wait(cluster, timed_out, "ProgressDeadlineExceeded")
    d = get(cluster, DEPLOYMENTS, "stuck")
    new_rs = replica_sets(cluster, "stuck")[-1]
    progressing = condition(d, "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"] == f'ReplicaSet "{new_rs["metadata"]["name"]}" has timed out progressing.'
    # maxUnavailable 0: the old pods stay, so the Deployment is still available.
    assert (condition(d, "Available")["status"], condition(d, "Available")["reason"]) == ("True", "MinimumReplicasAvailable")
    st = d["status"]
    assert (st["replicas"], st["updatedReplicas"], st["availableReplicas"], st["unavailableReplicas"]) == (3, 1, 2, 1)


def test_new_deployment_that_never_gets_ready_is_unavailable_and_times_out(cluster: SandboxCluster) -> None:
    cluster.store.create(
        DEPLOYMENTS, workload("never", replicas=2, annotations={NEVER_READY_ANNOTATION: "true"}, progressDeadlineSeconds=1)
    )
    wait(
        cluster,
        lambda: (podutil.condition(get(cluster, DEPLOYMENTS, "never"), "Progressing") or {}).get("reason") == "ProgressDeadlineExceeded",
        "ProgressDeadlineExceeded",
    )
    available = condition(get(cluster, DEPLOYMENTS, "never"), "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")


def test_paused_deployment_does_not_roll_until_resumed(cluster: SandboxCluster) -> None:
    cluster.store.create(DEPLOYMENTS, workload("calm", replicas=2))
    wait(cluster, lambda: deployment_done(cluster, "calm", 2), "initial rollout")
    before = sorted(p["metadata"]["name"] for p in pods_of(cluster, "calm"))

    def pause_and_change(obj: Obj) -> None:
        obj["spec"]["paused"] = True
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/calm:2.0"

    edit(cluster, DEPLOYMENTS, "calm", pause_and_change)
    generation = get(cluster, DEPLOYMENTS, "calm")["metadata"]["generation"]
    wait(cluster, lambda: status(cluster, DEPLOYMENTS, "calm").get("observedGeneration") == generation, "paused spec observed")
    paused = condition(get(cluster, DEPLOYMENTS, "calm"), "Progressing")
    assert (paused["status"], paused["reason"]) == ("Unknown", "DeploymentPaused")
    assert not cluster.wait_for(lambda: len(replica_sets(cluster, "calm")) > 1, 0.6), "a paused deployment rolled out"
    assert sorted(p["metadata"]["name"] for p in pods_of(cluster, "calm")) == before

    edit(cluster, DEPLOYMENTS, "calm", lambda obj: obj["spec"].update(paused=False))
    wait(cluster, lambda: len(replica_sets(cluster, "calm")) == 2 and deployment_done(cluster, "calm", 2), "rollout after resume")
    images = {p["spec"]["containers"][0]["image"] for p in live(pods_of(cluster, "calm"))}
    assert images == {"registry.example/calm:2.0"}


def test_scaling_and_revision_history_limit(cluster: SandboxCluster) -> None:
    cluster.store.create(DEPLOYMENTS, workload("hist", replicas=2, revisionHistoryLimit=1))
    wait(cluster, lambda: deployment_done(cluster, "hist", 2), "initial rollout")

    edit(cluster, DEPLOYMENTS, "hist", lambda obj: obj["spec"].update(replicas=4))
    wait(cluster, lambda: deployment_done(cluster, "hist", 4), "scale up")
    [rs] = replica_sets(cluster, "hist")
    assert rs["spec"]["replicas"] == 4
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "4"

    for i in range(3):
        restart(cluster, DEPLOYMENTS, "hist", stamp=f"2024-01-0{i + 1}T00:00:00Z")
        wait(cluster, lambda: deployment_done(cluster, "hist", 4), f"rollout {i + 2}")
    # The new RS plus one old one (revisionHistoryLimit 1) survive.
    wait(cluster, lambda: len(replica_sets(cluster, "hist")) == 2, "old ReplicaSets cleaned up")
    revisions = [rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in replica_sets(cluster, "hist")]
    assert revisions == ["3", "4"]


# -------------------------------------------------------------------------------------- ReplicaSet
def test_replicaset_adopts_orphans_and_scales_down_unready_pods_first(cluster: SandboxCluster) -> None:
    orphan = add_pod(cluster, "stray", labels={"app": "rs"})
    cluster.store.create(REPLICASETS, workload("rs", replicas=3))
    rs = get(cluster, REPLICASETS, "rs")
    wait(cluster, lambda: status(cluster, REPLICASETS, "rs").get("readyReplicas") == 3, "3 ready replicas")
    pods = pods_of(cluster, "rs")
    assert len(pods) == 3, "the matching orphan was not adopted"
    assert podutil.is_owned_by(get(cluster, PODS, orphan["metadata"]["name"]), rs)
    st = status(cluster, REPLICASETS, "rs")
    assert (st["replicas"], st["fullyLabeledReplicas"], st["availableReplicas"]) == (3, 3, 3)

    victim = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["name"] != "stray")[0]

    def not_ready(obj: Obj) -> None:
        podutil.set_condition(obj["status"], {"type": "Ready", "status": "False"}, cluster.clock.iso())

    cluster.store.mutate(PODS, NS, victim, not_ready, subresource="status")
    edit(cluster, REPLICASETS, "rs", lambda obj: obj["spec"].update(replicas=2))
    wait(cluster, lambda: status(cluster, REPLICASETS, "rs").get("replicas") == 2, "scale down")
    victim_now = cluster.store.try_get(PODS, NS, victim)
    assert victim_now is None or podutil.is_terminating(victim_now), "a Ready pod was deleted before the unready one"
    assert len(live(pods_of(cluster, "rs"))) == 2


# ------------------------------------------------------------------------------------- StatefulSet
def running_and_ready(pod: Obj | None) -> bool:
    return pod is not None and pod.get("status", {}).get("phase") == "Running" and podutil.is_ready(pod) and not podutil.is_terminating(pod)


def sts_settled(cluster: SandboxCluster, name: str, replicas: int) -> bool:
    sts = get(cluster, STATEFULSETS, name)
    st = sts.get("status") or {}
    return (
        st.get("observedGeneration") == sts["metadata"]["generation"]
        and st.get("readyReplicas") == replicas
        and st.get("replicas") == replicas
        and st.get("updatedReplicas") == replicas
        and st.get("currentRevision") == st.get("updateRevision")
    )


def test_statefulset_creates_ordinals_in_order_with_stable_identity(cluster: SandboxCluster) -> None:
    created: list[tuple[str, set[str]]] = []

    def record(event: str, old: Obj | None, new: Obj | None) -> None:
        if event == "ADDED" and new is not None and new["metadata"]["name"].startswith("db-"):
            ready = {p["metadata"]["name"] for p in pods_of(cluster, "db") if running_and_ready(p)}
            created.append((new["metadata"]["name"], ready))

    on_pod_change(cluster, record)
    cluster.store.create(STATEFULSETS, workload("db", replicas=3, serviceName="db"))
    wait(cluster, lambda: sts_settled(cluster, "db", 3), "statefulset ready")

    assert [name for name, _ in created] == ["db-0", "db-1", "db-2"]
    for index, (name, ready_then) in enumerate(created):
        assert {f"db-{i}" for i in range(index)} <= ready_then, f"{name} created before its predecessors were Ready"
    sts = get(cluster, STATEFULSETS, "db")
    st = sts["status"]
    assert (st["currentReplicas"], st["availableReplicas"], st["collisionCount"]) == (3, 3, 0)
    revision = get(cluster, CONTROLLERREVISIONS, st["updateRevision"])
    assert revision["revision"] == 1 and podutil.is_owned_by(revision, sts)
    assert revision["data"]["spec"]["template"]["metadata"]["labels"] == {"app": "db"}
    assert revision["metadata"]["name"] == "db-" + revision["metadata"]["labels"]["controller-revision-hash"]
    for i in range(3):
        pod = get(cluster, PODS, f"db-{i}")
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == f"db-{i}"
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"] == st["updateRevision"]
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (f"db-{i}", "db")
        assert podutil.is_owned_by(pod, sts)

    # Scaling down removes the highest ordinal first, one at a time.
    gone: list[str] = []
    def record_removal(event: str, old: Obj | None, new: Obj | None) -> None:
        if event == "DELETED" and old is not None and old["metadata"]["name"].startswith("db-"):
            gone.append(old["metadata"]["name"])

    on_pod_change(cluster, record_removal)
    edit(cluster, STATEFULSETS, "db", lambda obj: obj["spec"].update(replicas=1))
    wait(cluster, lambda: cluster.store.try_get(PODS, NS, "db-1") is None and status(cluster, STATEFULSETS, "db").get("replicas") == 1, "scale down")
    assert gone == ["db-2", "db-1"]


@pytest.mark.parametrize("policy", ["OrderedReady", "Parallel"])
def test_statefulset_rolling_update_goes_from_the_highest_ordinal_down(cluster: SandboxCluster, policy: str) -> None:
    # Updates go one pod at a time whatever the pod management policy.
    cluster.store.create(STATEFULSETS, workload("kv", replicas=3, podManagementPolicy=policy))
    wait(cluster, lambda: sts_settled(cluster, "kv", 3), "statefulset ready")
    first_revision = status(cluster, STATEFULSETS, "kv")["currentRevision"]
    deletions: list[str] = []
    violations: list[str] = []

    def record(event: str, old: Obj | None, new: Obj | None) -> None:
        if event != "MODIFIED" or old is None or new is None or not new["metadata"]["name"].startswith("kv-"):
            return
        if podutil.is_terminating(new) and not podutil.is_terminating(old):
            name = new["metadata"]["name"]
            deletions.append(name)
            update_revision = status(cluster, STATEFULSETS, "kv").get("updateRevision")
            ordinal = int(name.rsplit("-", 1)[1])
            for higher in range(ordinal + 1, 3):
                pod = cluster.store.try_get(PODS, NS, f"kv-{higher}")
                if not running_and_ready(pod) or pod["metadata"]["labels"]["controller-revision-hash"] != update_revision:  # type: ignore[index]
                    violations.append(f"{name} deleted before kv-{higher} was updated and Ready")

    on_pod_change(cluster, record)
    restart(cluster, STATEFULSETS, "kv")
    wait(
        cluster,
        lambda: sts_settled(cluster, "kv", 3) and status(cluster, STATEFULSETS, "kv")["currentRevision"] != first_revision,
        "rolling update",
    )

    assert deletions == ["kv-2", "kv-1", "kv-0"]
    assert violations == []
    st = status(cluster, STATEFULSETS, "kv")
    assert st["currentRevision"] == st["updateRevision"] and st["currentReplicas"] == 3
    revisions = sorted(r["revision"] for r in owned(cluster, CONTROLLERREVISIONS, get(cluster, STATEFULSETS, "kv")))
    assert revisions == [1, 2]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods_of(cluster, "kv")} == {st["updateRevision"]}


def test_statefulset_partition_keeps_lower_ordinals_on_the_old_revision(cluster: SandboxCluster) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    cluster.store.create(STATEFULSETS, workload("part", replicas=3, updateStrategy=strategy))
    wait(cluster, lambda: sts_settled(cluster, "part", 3), "statefulset ready")
    old_revision = status(cluster, STATEFULSETS, "part")["currentRevision"]
    below_partition = {i: get(cluster, PODS, f"part-{i}")["metadata"]["uid"] for i in range(2)}

    restart(cluster, STATEFULSETS, "part")

    def partition_done() -> bool:
        st = status(cluster, STATEFULSETS, "part")
        return st.get("updatedReplicas") == 1 and st.get("readyReplicas") == 3 and st.get("updateRevision") != old_revision

    wait(cluster, partition_done, "partitioned update")
    assert not cluster.wait_for(lambda: status(cluster, STATEFULSETS, "part").get("updatedReplicas", 0) > 1, 0.5)
    st = status(cluster, STATEFULSETS, "part")
    assert (st["currentRevision"], st["currentReplicas"]) == (old_revision, 2)
    revisions = {i: get(cluster, PODS, f"part-{i}")["metadata"]["labels"]["controller-revision-hash"] for i in range(3)}
    assert revisions == {0: old_revision, 1: old_revision, 2: st["updateRevision"]}
    assert {i: get(cluster, PODS, f"part-{i}")["metadata"]["uid"] for i in range(2)} == below_partition, "pods below the partition were replaced"

    # A deleted pod below the partition comes back at the current (old) revision.
    cluster.store.delete(PODS, NS, "part-0")
    wait(cluster, lambda: running_and_ready(cluster.store.try_get(PODS, NS, "part-0")), "part-0 recreated")
    assert get(cluster, PODS, "part-0")["metadata"]["labels"]["controller-revision-hash"] == old_revision

    edit(cluster, STATEFULSETS, "part", lambda obj: obj["spec"]["updateStrategy"]["rollingUpdate"].update(partition=0))
    wait(cluster, lambda: sts_settled(cluster, "part", 3) and status(cluster, STATEFULSETS, "part")["currentRevision"] != old_revision, "full update")


def test_statefulset_on_delete_replaces_only_deleted_pods(cluster: SandboxCluster) -> None:
    cluster.store.create(STATEFULSETS, workload("od", replicas=2, updateStrategy={"type": "OnDelete"}))
    wait(cluster, lambda: status(cluster, STATEFULSETS, "od").get("readyReplicas") == 2, "statefulset ready")
    old_revision = status(cluster, STATEFULSETS, "od")["currentRevision"]
    uids = {i: get(cluster, PODS, f"od-{i}")["metadata"]["uid"] for i in range(2)}

    restart(cluster, STATEFULSETS, "od")
    wait(cluster, lambda: status(cluster, STATEFULSETS, "od").get("updateRevision") != old_revision, "new update revision")
    assert not cluster.wait_for(lambda: any(podutil.is_terminating(p) for p in pods_of(cluster, "od")), 0.6), "OnDelete replaced a pod"
    assert {i: get(cluster, PODS, f"od-{i}")["metadata"]["uid"] for i in range(2)} == uids
    st = status(cluster, STATEFULSETS, "od")
    assert (st["currentRevision"], st.get("updatedReplicas", 0)) == (old_revision, 0)

    cluster.store.delete(PODS, NS, "od-1")
    wait(
        cluster,
        lambda: running_and_ready(cluster.store.try_get(PODS, NS, "od-1")) and get(cluster, PODS, "od-1")["metadata"]["uid"] != uids[1],
        "od-1 recreated",
    )
    assert get(cluster, PODS, "od-1")["metadata"]["labels"]["controller-revision-hash"] == st["updateRevision"]
    assert get(cluster, PODS, "od-0")["metadata"]["uid"] == uids[0]
    wait(cluster, lambda: status(cluster, STATEFULSETS, "od").get("updatedReplicas") == 1, "one updated replica")


def test_parallel_statefulset_creates_all_pods_at_once(cluster: SandboxCluster) -> None:
    created_with_ready: list[int] = []

    def record(event: str, old: Obj | None, new: Obj | None) -> None:
        if event == "ADDED" and new is not None and new["metadata"]["name"].startswith("par-"):
            created_with_ready.append(sum(1 for p in pods_of(cluster, "par") if running_and_ready(p)))

    on_pod_change(cluster, record)
    cluster.store.create(STATEFULSETS, workload("par", replicas=3, podManagementPolicy="Parallel"))
    wait(cluster, lambda: sts_settled(cluster, "par", 3), "statefulset ready")
    assert created_with_ready == [0, 0, 0]


# --------------------------------------------------------------------------------------- DaemonSet
def ds_pods_by_node(cluster: SandboxCluster, app: str) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for pod in live(pods_of(cluster, app)):
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        out.setdefault(terms[0]["matchFields"][0]["values"][0], []).append(pod)
    return out


def ds_settled(cluster: SandboxCluster, name: str, desired: int) -> bool:
    ds = get(cluster, DAEMONSETS, name)
    st = ds.get("status") or {}
    return (
        st.get("observedGeneration") == ds["metadata"]["generation"]
        and st.get("desiredNumberScheduled") == desired
        and st.get("currentNumberScheduled") == desired
        and st.get("updatedNumberScheduled") == desired
        and st.get("numberAvailable") == desired
        and st.get("numberMisscheduled") == 0
        and len(live(pods_of(cluster, name))) == desired
    )


def test_daemonset_runs_one_pod_per_eligible_node(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "tainted")

    def taint(node: Obj) -> None:
        node["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]

    cluster.store.mutate(NODES, None, "tainted", taint)
    cluster.store.create(DAEMONSETS, workload("agent"))
    wait(cluster, lambda: ds_settled(cluster, "agent", 3), "a pod on each untainted node")

    by_node = ds_pods_by_node(cluster, "agent")
    assert sorted(by_node) == ["node-0", "node-1", "node-2"]
    ds = get(cluster, DAEMONSETS, "agent")
    [revision] = owned(cluster, CONTROLLERREVISIONS, ds)
    revision_hash = revision["metadata"]["labels"]["controller-revision-hash"]
    assert revision["metadata"]["name"] == f"agent-{revision_hash}"
    for node_name, [pod] in by_node.items():
        assert pod["spec"]["nodeName"] == node_name  # bound by the scheduler
        assert pod["metadata"]["labels"]["controller-revision-hash"] == revision_hash
        assert pod["metadata"]["labels"]["pod-template-generation"] == "1"
        assert pod["metadata"]["name"].startswith("agent-")
        for toleration in DAEMON_TOLERATIONS:
            assert toleration in pod["spec"]["tolerations"]
        assert podutil.is_owned_by(pod, ds)
    st = ds["status"]
    assert (st["numberReady"], st.get("numberUnavailable", 0)) == (3, 0)

    add_ready_node(cluster, "node-3")
    wait(cluster, lambda: ds_settled(cluster, "agent", 4), "a pod on the new node")
    assert "node-3" in ds_pods_by_node(cluster, "agent")

    # A deleted node's pod goes with it (pod GC) and the node leaves the status.
    cluster.store.delete(NODES, None, "node-0")
    wait(cluster, lambda: ds_settled(cluster, "agent", 3) and "node-0" not in ds_pods_by_node(cluster, "agent"), "node-0 gone")


def test_daemonset_follows_node_labels(cluster: SandboxCluster) -> None:
    cluster.store.create(DAEMONSETS, _edge_daemonset())
    assert not cluster.wait_for(lambda: pods_of(cluster, "edge"), 0.3), "a pod on a node without the label"
    wait(cluster, lambda: status(cluster, DAEMONSETS, "edge").get("observedGeneration") == 1, "status")
    assert status(cluster, DAEMONSETS, "edge")["desiredNumberScheduled"] == 0

    def label(value: str | None) -> Callable[[Obj], None]:
        def change(node: Obj) -> None:
            labels = node["metadata"]["labels"]
            if value is None:
                labels.pop("role", None)
            else:
                labels["role"] = value

        return change

    cluster.store.mutate(NODES, None, "node-1", label("edge"))
    wait(cluster, lambda: ds_settled(cluster, "edge", 1), "pod on the labelled node")
    assert list(ds_pods_by_node(cluster, "edge")) == ["node-1"]
    cluster.store.mutate(NODES, None, "node-1", label(None))
    wait(cluster, lambda: not live(pods_of(cluster, "edge")), "pod removed from the unlabelled node")
    wait(
        cluster,
        lambda: (status(cluster, DAEMONSETS, "edge").get("desiredNumberScheduled"), status(cluster, DAEMONSETS, "edge").get("numberMisscheduled")) == (0, 0),
        "status without the node",
    )


def _edge_daemonset() -> Obj:
    ds = workload("edge")
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"role": "edge"}
    return ds


def test_daemonset_rolling_update_replaces_every_pod_one_node_at_a_time(cluster: SandboxCluster) -> None:
    add_ready_node(cluster, "node-3")
    cluster.store.create(DAEMONSETS, workload("logs"))
    wait(cluster, lambda: ds_settled(cluster, "logs", 4), "daemonset ready")
    old_uids = {p["metadata"]["uid"] for p in pods_of(cluster, "logs")}
    seen = {"min_available_nodes": 4, "max_pods_on_a_node": 1}

    def measure(event: str, old: Obj | None, new: Obj | None) -> None:
        by_node = ds_pods_by_node(cluster, "logs")
        seen["min_available_nodes"] = min(seen["min_available_nodes"], sum(1 for pods in by_node.values() if any(podutil.is_ready(p) for p in pods)))
        seen["max_pods_on_a_node"] = max([seen["max_pods_on_a_node"], *(len(pods) for pods in by_node.values())])

    on_pod_change(cluster, measure)
    restart(cluster, DAEMONSETS, "logs")
    ds = get(cluster, DAEMONSETS, "logs")
    assert ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "2"
    wait(
        cluster,
        lambda: ds_settled(cluster, "logs", 4) and not (old_uids & {p["metadata"]["uid"] for p in pods_of(cluster, "logs")}),
        "all pods replaced",
    )

    assert seen["min_available_nodes"] >= 3, "more than maxUnavailable (1) nodes without a ready daemon pod"
    assert seen["max_pods_on_a_node"] == 1
    revisions = owned(cluster, CONTROLLERREVISIONS, ds)
    assert sorted(r["revision"] for r in revisions) == [1, 2]
    newest = max(revisions, key=lambda r: r["revision"])
    hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in pods_of(cluster, "logs")}
    assert hashes == {newest["metadata"]["labels"]["controller-revision-hash"]}
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in pods_of(cluster, "logs")} == {"2"}


def test_daemonset_on_delete_keeps_old_pods(cluster: SandboxCluster) -> None:
    cluster.store.create(DAEMONSETS, workload("manual", updateStrategy={"type": "OnDelete"}))
    wait(cluster, lambda: ds_settled(cluster, "manual", 3), "daemonset ready")
    restart(cluster, DAEMONSETS, "manual")
    wait(cluster, lambda: status(cluster, DAEMONSETS, "manual").get("observedGeneration") == 2, "update observed")
    assert not cluster.wait_for(lambda: any(podutil.is_terminating(p) for p in pods_of(cluster, "manual")), 0.5)
    assert "updatedNumberScheduled" not in status(cluster, DAEMONSETS, "manual")
    victim = ds_pods_by_node(cluster, "manual")["node-0"][0]["metadata"]["name"]
    cluster.store.delete(PODS, NS, victim)
    wait(
        cluster,
        lambda: (status(cluster, DAEMONSETS, "manual").get("updatedNumberScheduled"), status(cluster, DAEMONSETS, "manual").get("numberAvailable")) == (1, 3),
        "node-0 updated",
    )


# ------------------------------------------------------------------------------------- admission
@pytest.mark.parametrize("key", [DEPLOYMENTS, REPLICASETS, STATEFULSETS, DAEMONSETS])
def test_selector_must_match_template_labels(cluster: SandboxCluster, key: str) -> None:
    body = workload("app")
    body["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiError) as err:
        cluster.store.create(key, body)
    assert err.value.code == 422
    expected = 'spec.template.metadata.labels: Invalid value: map[string]string{"app":"app"}: `selector` does not match template `labels`'
    assert expected in err.value.message
    assert cluster.store.try_get(key, NS, "app") is None


@pytest.mark.parametrize("key", [DEPLOYMENTS, REPLICASETS, STATEFULSETS, DAEMONSETS])
def test_selector_is_required(cluster: SandboxCluster, key: str) -> None:
    body = workload("app")
    del body["spec"]["selector"]
    with pytest.raises(ApiError) as err:
        cluster.store.create(key, body)
    assert err.value.code == 422 and "spec.selector: Required value" in err.value.message


@pytest.mark.parametrize("key", [DEPLOYMENTS, REPLICASETS, STATEFULSETS, DAEMONSETS])
def test_selector_is_immutable(cluster: SandboxCluster, key: str) -> None:
    cluster.store.create(key, workload("app", replicas=None))

    def reselect(obj: Obj) -> None:
        obj["spec"]["selector"] = {"matchLabels": {"app": "app", "tier": "x"}}
        obj["spec"]["template"]["metadata"]["labels"]["tier"] = "x"

    with pytest.raises(ApiError) as err:
        edit(cluster, key, "app", reselect)
    assert err.value.code == 422
    expected = "Forbidden: updates to statefulset spec" if key == STATEFULSETS else "spec.selector: Invalid value"
    assert expected in err.value.message
    if key != STATEFULSETS:
        assert "field is immutable" in err.value.message
    assert get(cluster, key, "app")["spec"]["selector"] == {"matchLabels": {"app": "app"}}


def test_deployment_strategy_validation(cluster: SandboxCluster) -> None:
    body = workload("app", strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    with pytest.raises(ApiError) as err:
        cluster.store.create(DEPLOYMENTS, body)
    assert 'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "0%": may not be 0 when `maxSurge` is 0' in err.value.message
    body = workload("app", strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
    with pytest.raises(ApiError) as err:
        cluster.store.create(DEPLOYMENTS, body)
    assert "may not be specified when strategy `type` is 'Recreate'" in err.value.message


def test_defaults_apply_on_create_and_on_update(cluster: SandboxCluster) -> None:
    manifest = workload("def", annotations=None)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/def"  # no tag
    edit_me = copy.deepcopy(manifest)
    created = cluster.store.create(DEPLOYMENTS, manifest)
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    pod_spec = spec["template"]["spec"]
    assert (pod_spec["restartPolicy"], pod_spec["terminationGracePeriodSeconds"], pod_spec["dnsPolicy"], pod_spec["schedulerName"]) == (
        "Always",
        30,
        "ClusterFirst",
        "default-scheduler",
    )
    container = pod_spec["containers"][0]
    assert (container["imagePullPolicy"], container["terminationMessagePath"]) == ("Always", "/dev/termination-log")
    wait(cluster, lambda: deployment_done(cluster, "def", 1), "rollout")

    # A PUT of the bare manifest: defaulted again, so the template (and its hash) and the
    # generation stay, and no new ReplicaSet appears.
    edit_me["metadata"]["resourceVersion"] = get(cluster, DEPLOYMENTS, "def")["metadata"]["resourceVersion"]
    updated = cluster.store.update(DEPLOYMENTS, edit_me)
    assert updated["metadata"]["generation"] == 1
    assert updated["spec"] == spec
    assert not cluster.wait_for(lambda: len(replica_sets(cluster, "def")) > 1, 0.4)

    sts = cluster.store.create(STATEFULSETS, workload("sdef"))["spec"]
    assert (sts["replicas"], sts["podManagementPolicy"], sts["revisionHistoryLimit"]) == (1, "OrderedReady", 10)
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    ds = cluster.store.create(DAEMONSETS, workload("ddef"))
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["revisionHistoryLimit"] == 10
    assert ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
    assert cluster.store.create(REPLICASETS, workload("rdef", replicas=None))["spec"]["replicas"] == 1
