"""Real kubectl as the oracle: what a platform engineer types must work against the sandbox."""
from __future__ import annotations

import json
import threading

import pytest

from sandbox.cluster import SandboxCluster
from sandbox.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, JOBS, NODES, PDBS, PODS, STATEFULSETS
from sandbox.testing import add_ready_node

pytestmark = [pytest.mark.kubectl, pytest.mark.timeout(180)]


def _labels(app: str) -> dict:
    return {"matchLabels": {"app": app}}


def _template(app: str, image: str = "nginx:1.25") -> dict:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "main", "image": image}]}}


def deployment(name: str, replicas: int = 2) -> dict:
    return {"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": _labels(name), "template": _template(name)}}


def seed_workloads(cluster: SandboxCluster) -> None:
    store = cluster.store
    for i in range(3):
        add_ready_node(cluster, f"node-{i}")
    store.create(DEPLOYMENTS, deployment("web", 3), namespace="default")
    store.create(
        DAEMONSETS,
        {"metadata": {"name": "agent"}, "spec": {"selector": _labels("agent"), "template": _template("agent")}},
        namespace="default",
    )
    store.create(
        STATEFULSETS,
        {"metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db", "selector": _labels("db"), "template": _template("db")}},
        namespace="default",
    )
    assert cluster.wait_for(
        lambda: sum(1 for p in store.iter(PODS, "default") if p.get("status", {}).get("phase") == "Running") == 3 + 3 + 2,
        timeout=30,
    ), [p["metadata"]["name"] for p in store.iter(PODS, "default")]


def test_get_nodes_and_pods_across_namespaces(api_cluster: SandboxCluster, kubectl) -> None:
    seed_workloads(api_cluster)
    nodes = kubectl("get", "nodes").stdout
    assert "node-0" in nodes and "Ready" in nodes
    out = kubectl("get", "nodes,pods", "-A").stdout
    assert "node/node-2" in out and "pod/web-" in out
    pods = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    assert len(pods) == 8
    wide = kubectl("get", "pods", "-l", "app=db", "-o", "name").stdout.split()
    assert sorted(wide) == ["pod/db-0", "pod/db-1"]


def test_cordon_and_uncordon(api_cluster: SandboxCluster, kubectl) -> None:
    add_ready_node(api_cluster, "node-0")
    kubectl("cordon", "node-0")
    node = api_cluster.store.get(NODES, None, "node-0")
    assert node["spec"]["unschedulable"] is True
    assert "SchedulingDisabled" in kubectl("get", "node", "node-0").stdout
    kubectl("uncordon", "node-0")
    assert not api_cluster.store.get(NODES, None, "node-0")["spec"].get("unschedulable")


def test_drain_honours_a_pdb_until_it_allows(api_cluster: SandboxCluster, kubectl) -> None:
    store = api_cluster.store
    seed_workloads(api_cluster)
    store.create(PDBS, {"metadata": {"name": "web"}, "spec": {"minAvailable": 3, "selector": _labels("web")}}, namespace="default")
    assert api_cluster.wait_for(lambda: store.get(PDBS, "default", "web").get("status", {}).get("currentHealthy") == 3, timeout=20)
    victim = next(p["spec"]["nodeName"] for p in store.iter(PODS, "default") if p["metadata"]["name"].startswith("web-"))

    blocked = kubectl(
        "drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=3s", check=False
    )
    assert blocked.returncode != 0
    assert "disruption budget" in (blocked.stdout + blocked.stderr)
    assert store.get(NODES, None, victim)["spec"]["unschedulable"] is True  # drain cordons first

    # Relax the budget while a second drain is retrying: it then completes.
    relax = threading.Timer(2.0, lambda: store.mutate(PDBS, "default", "web", lambda p: p["spec"].update(minAvailable=2)))
    relax.start()
    done = kubectl("drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s")
    assert "drained" in done.stdout
    left = [p for p in store.pods_on_node(victim) if p["metadata"].get("ownerReferences", [{}])[0].get("kind") != "DaemonSet"]
    assert left == []
    assert any(p["metadata"]["name"].startswith("agent-") for p in store.pods_on_node(victim))


@pytest.mark.parametrize("kind,name", [("deployment", "web"), ("daemonset", "agent"), ("statefulset", "db")])
def test_rollout_restart_then_status_completes(api_cluster: SandboxCluster, kubectl, kind: str, name: str) -> None:
    seed_workloads(api_cluster)
    before = {p["metadata"]["uid"] for p in api_cluster.store.iter(PODS, "default") if p["metadata"]["labels"].get("app") == name}
    kubectl("rollout", "restart", f"{kind}/{name}")
    status = kubectl("rollout", "status", f"{kind}/{name}", "--timeout=60s", timeout=90)
    assert "successfully rolled out" in status.stdout or "complete" in status.stdout
    after = {p["metadata"]["uid"] for p in api_cluster.store.iter(PODS, "default") if p["metadata"]["labels"].get("app") == name and not p["metadata"].get("deletionTimestamp")}
    assert after and not (after & before), "every pod is replaced"


def test_create_job_from_cronjob(api_cluster: SandboxCluster, kubectl) -> None:
    add_ready_node(api_cluster, "node-0")
    api_cluster.store.create(
        CRONJOBS,
        {
            "metadata": {"name": "report"},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "report:2"}]}}}},
            },
        },
        namespace="default",
    )
    kubectl("create", "job", "report-manual", "--from=cronjob/report")
    job = api_cluster.store.get(JOBS, "default", "report-manual")
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    cronjob = api_cluster.store.get(CRONJOBS, "default", "report")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]
    assert api_cluster.wait_for(
        lambda: any(c["type"] == "Complete" and c["status"] == "True" for c in api_cluster.store.get(JOBS, "default", "report-manual").get("status", {}).get("conditions", [])),
        timeout=20,
    )
    assert "report-manual" in kubectl("get", "jobs").stdout


def test_scale_and_delete_cascade(api_cluster: SandboxCluster, kubectl) -> None:
    seed_workloads(api_cluster)
    kubectl("scale", "deployment/web", "--replicas=1")
    assert api_cluster.wait_for(lambda: len([p for p in api_cluster.store.iter(PODS, "default") if p["metadata"]["labels"].get("app") == "web"]) == 1, timeout=20)
    kubectl("delete", "deployment", "web", "--wait=true", "--timeout=30s")
    assert api_cluster.wait_for(lambda: not any(p["metadata"]["labels"].get("app") == "web" for p in api_cluster.store.iter(PODS, "default")), timeout=20)
    missing = kubectl("get", "deployment", "web", check=False)
    assert missing.returncode != 0 and 'deployments.apps "web" not found' in missing.stderr
