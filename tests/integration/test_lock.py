"""The per-cluster maintenance lock (a Lease), against the sandbox over HTTP."""
from __future__ import annotations

import datetime as dt

import pytest
from kubernetes import config

from kube_maintenance.core.k8s import KubeClient
from kube_maintenance.core.lock import LOCK_NAME, ClusterBusy, ClusterLock
from sandbox.cluster import SandboxCluster

pytestmark = pytest.mark.timeout(60)
LEASES = "leases.coordination.k8s.io"


@pytest.fixture
def kube(api_cluster: SandboxCluster) -> KubeClient:
    return KubeClient(config.new_client_from_config(str(api_cluster.kubeconfig_path)), "api")  # type: ignore[attr-defined]


def test_one_holder_at_a_time_and_a_rerun_finds_its_own_lock(api_cluster: SandboxCluster, kube: KubeClient) -> None:
    mine = ClusterLock(kube, "node_replacement__api/run-1")
    assert mine.acquire() == "acquired"
    assert mine.acquire() == "renewed"  # a retried preflight of the same run
    with pytest.raises(ClusterBusy, match="node_replacement__api/run-1 holds the maintenance lock"):
        ClusterLock(kube, "rollout_restart__api/run-9").acquire()
    assert ClusterLock(kube, "rollout_restart__api/run-9").release() is False, "only the holder releases"
    assert mine.release() is True
    assert api_cluster.store.try_get(LEASES, "default", LOCK_NAME) is None
    assert ClusterLock(kube, "rollout_restart__api/run-9").acquire() == "acquired"


def test_an_expired_lock_is_taken_over(api_cluster: SandboxCluster, kube: KubeClient) -> None:
    long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=7)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api_cluster.store.create(
        LEASES,
        {"metadata": {"name": LOCK_NAME}, "spec": {"holderIdentity": "dead-run", "leaseDurationSeconds": 3600, "acquireTime": long_ago, "renewTime": long_ago}},
        namespace="default",
    )
    assert ClusterLock(kube, "cronjob_refresh__api/run-2").acquire() == "taken-over"
    assert api_cluster.store.get(LEASES, "default", LOCK_NAME)["spec"]["holderIdentity"] == "cronjob_refresh__api/run-2"


def test_a_renewal_racing_another_task_of_the_same_run_is_fine_but_a_lost_lock_is_not(api_cluster: SandboxCluster, kube: KubeClient) -> None:
    lock = ClusterLock(kube, "rollout_restart__api/run-3")
    lock.acquire()
    api_cluster.faults.configure({"errors": [{"code": 409, "verb": "update", "resource": "leases", "remaining": 1}]})
    lock.renew()  # the conflict came from ourselves: still ours
    api_cluster.store.mutate(LEASES, "default", LOCK_NAME, lambda l: l["spec"].update(holderIdentity="someone-else"))
    with pytest.raises(ClusterBusy, match="lost the maintenance lock"):
        lock.renew()


def test_a_lapsed_lock_is_not_renewed_even_when_nobody_took_it(api_cluster: SandboxCluster, kube: KubeClient) -> None:
    lock = ClusterLock(kube, "node_replacement__api/run-4")
    lock.acquire()
    lease = api_cluster.store.get(LEASES, "default", LOCK_NAME)
    assert lease["spec"]["leaseDurationSeconds"] == 600, "minutes, not hours: a dead run frees its cluster soon"
    lapsed = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=601)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api_cluster.store.mutate(LEASES, "default", LOCK_NAME, lambda l: l["spec"].update(renewTime=lapsed))
    with pytest.raises(ClusterBusy, match="lapsed"):
        lock.renew()
    # Another operation may take it now; a re-run of ours takes it anew when it is free.
    assert ClusterLock(kube, "rollout_restart__api/run-10").acquire() == "taken-over"


def test_a_stop_signal_survives_renewals_and_is_cleared_when_the_run_takes_the_lock_again(api_cluster: SandboxCluster, kube: KubeClient) -> None:
    mine = ClusterLock(kube, "rollout_restart__api/run-1")
    mine.acquire()
    assert mine.stop_requested() is None
    mine.request_stop("deployment/shop/web: exceeded its progress deadline")
    mine.renew()  # another shard's poke
    assert mine.stop_requested() == "deployment/shop/web: exceeded its progress deadline"
    with pytest.raises(ClusterBusy):
        ClusterLock(kube, "node_replacement__api/run-2").request_stop("not mine to stop")
    assert mine.acquire() == "renewed"  # the run cleared and re-run: it starts afresh
    assert mine.stop_requested() is None
