"""Cluster access through real Airflow connections: isolation, retries, paging, watches."""
from __future__ import annotations

import json
import threading

import pytest
from sandbox.__main__ import airflow_connections
from sandbox.resources import NODES, PODS
from sandbox.scenario import World

from kube_maintenance.k8s import NODES as NODE_REF
from kube_maintenance.k8s import PODS as POD_REF
from kube_maintenance.k8s import KubeApiError, KubeClient, RetryPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def connections(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    for var, conn in airflow_connections(world).items():
        monkeypatch.setenv(var, json.dumps(conn))
    return world


def test_two_clusters_in_one_process_never_cross(connections: World) -> None:
    from kubernetes import client

    default_host_before = client.Configuration.get_default_copy().host
    staging = KubeClient.from_connection("k8s_staging", "staging")
    production = KubeClient.from_connection("k8s_production", "production")
    staging_nodes = {n["metadata"]["name"] for n in staging.list(NODE_REF)[0]}
    production_nodes = {n["metadata"]["name"] for n in production.list(NODE_REF)[0]}
    assert staging_nodes == {n["metadata"]["name"] for n in connections.clusters["staging"].cluster.store.iter(NODES)}
    assert production_nodes == {n["metadata"]["name"] for n in connections.clusters["production"].cluster.store.iter(NODES)}
    assert staging.list(NODE_REF)[0] and not staging_nodes & production_nodes
    assert client.Configuration.get_default_copy().host == default_host_before, "the global default is untouched"


def test_transient_errors_are_retried_and_lists_page(connections: World) -> None:
    cluster = connections.clusters["staging"].cluster
    kube = KubeClient.from_connection("k8s_staging", "staging", RetryPolicy(attempts=6, base_delay=0.01))
    cluster.faults.configure({"errors": [{"code": 503, "verb": "list", "resource": "pods", "remaining": 2}, {"code": 429, "verb": "list", "resource": "pods", "remaining": 1}]})
    items, rv = kube.list(POD_REF, page_size=5)
    assert len(items) == cluster.store.count(PODS) and rv
    pages = [r for r in cluster.requests.since(0) if r.verb == "list" and r.resource == "pods" and r.code == 200]
    assert len(pages) >= -(-len(items) // 5), "paged with limit/continue"
    cluster.faults.configure({"errors": [{"code": 403, "verb": "get", "resource": "nodes"}]})
    with pytest.raises(KubeApiError) as err:
        kube.get(NODE_REF, "anything")
    assert err.value.status == 403  # not transient: no retry, a clear error
    cluster.faults.clear()


def test_wait_until_follows_a_watch_across_cut_streams(connections: World) -> None:
    cluster = connections.clusters["staging"].cluster
    kube = KubeClient.from_connection("k8s_staging", "staging")
    cluster.faults.configure({"watch_cut_after_events": 1})
    pod = {"metadata": {"name": "late", "labels": {"wait": "me"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    threading.Timer(0.5, lambda: cluster.store.create(PODS, pod, namespace="default")).start()
    objects = kube.wait_until(POD_REF, lambda objs: any(o["status"].get("phase") == "Running" for o in objs.values()), timeout=30, namespace="default", label_selector="wait=me")
    assert [o["metadata"]["name"] for o in objects.values()] == ["late"]
    watches = [r for r in cluster.requests.since(0) if r.verb == "watch" and r.resource == "pods" and "kube-maintenance" in r.user_agent]
    assert len(watches) >= 2, "the cut stream was resumed"
    cluster.faults.clear()
