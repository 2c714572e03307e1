"""The seeded demo and the two-cluster world."""
from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import podutil
from sandbox.__main__ import airflow_connections, describe_world, env_file_text
from sandbox.cluster import SandboxCluster
from sandbox.config import RUN_SECONDS_ANNOTATION
from sandbox.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, JOBS, NAMESPACES, NODES, PDBS, PODS, STATEFULSETS
from sandbox.scenario import CRONJOB_SCHEDULED_ANNOTATION, demo_pending, last_slots, seed_demo, start_world
from sandbox.selectors import labels_match, selector_from_object
from sandbox.testing import add_ready_node, fast_config

pytestmark = pytest.mark.timeout(60)

HELM_MANAGED = {"app.kubernetes.io/managed-by": "Helm"}


def _controllers_present(*modules: str) -> bool:
    return all(importlib.util.find_spec(f"sandbox.controllers.{m}") is not None for m in modules)


needs_workload_controllers = pytest.mark.skipif(
    not _controllers_present("workloads", "batch"), reason="the workload and batch controllers are not in this tree yet"
)


@pytest.fixture
def seeded(bare_cluster: SandboxCluster) -> tuple[SandboxCluster, Any]:
    for i in range(4):
        add_ready_node(bare_cluster, f"ip-10-0-{i}-10.ec2.internal", zone=f"us-east-1{'abc'[i % 3]}")
    return bare_cluster, seed_demo(bare_cluster)


def _image(spec_with_template: dict[str, Any]) -> str:
    return spec_with_template["template"]["spec"]["containers"][0]["image"]


def test_namespaces_helm_labelled_except_scratch(seeded: tuple[SandboxCluster, Any]) -> None:
    cluster, demo = seeded
    for name in ("shop", "payments", "search"):
        labels = cluster.store.get(NAMESPACES, None, name)["metadata"]["labels"]
        assert labels.items() >= HELM_MANAGED.items() and labels.get("team")
    scratch = cluster.store.get(NAMESPACES, None, "scratch")["metadata"]["labels"]
    assert "app.kubernetes.io/managed-by" not in scratch and "team" not in scratch
    assert set(demo.namespaces) >= {"shop", "payments", "search", "scratch"}


def test_deployments_guarded_by_pdbs_that_select_their_pods(seeded: tuple[SandboxCluster, Any]) -> None:
    cluster, demo = seeded
    store = cluster.store
    web = store.get(DEPLOYMENTS, "shop", "storefront-web")
    assert web["spec"]["replicas"] == 3
    web_labels = web["spec"]["template"]["metadata"]["labels"]
    assert {"app", "tier", "role", "app.kubernetes.io/name"} <= set(web_labels)
    assert web["metadata"]["labels"].items() >= HELM_MANAGED.items()
    assert web["metadata"]["annotations"]["meta.helm.sh/release-name"] == "storefront-web"
    budgets = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in store.iter(PDBS)}
    assert budgets[("shop", "storefront-web")]["spec"]["minAvailable"] == 2
    assert budgets[("shop", "cart-api")]["spec"]["maxUnavailable"] == 1
    for (namespace, name), budget in budgets.items():
        selector = selector_from_object(budget["spec"]["selector"])
        workloads = list(store.iter(DEPLOYMENTS, namespace)) + list(store.iter(STATEFULSETS, namespace))
        guarded = [w for w in workloads if labels_match(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert len(guarded) == 1, f"PDB {namespace}/{name} guards {len(guarded)} workloads"
    assert ("scratch", "tmp-nginx") in demo.deployments and not list(store.iter(PDBS, "scratch"))
    # Installed long before today's nodes joined.
    assert podutil.parse_time(web["metadata"]["creationTimestamp"]) < cluster.clock.time() - 60 * 86_400


def test_daemonsets_statefulset_and_an_unmanaged_pod(seeded: tuple[SandboxCluster, Any]) -> None:
    cluster, demo = seeded
    store = cluster.store
    system = {d["metadata"]["name"] for d in store.iter(DAEMONSETS, "kube-system")}
    assert {"aws-node", "kube-proxy"} <= system
    helm_daemonsets = [
        d for ns, _ in demo.daemonsets if ns != "kube-system"
        for d in [store.get(DAEMONSETS, ns, _)]
        if store.get(NAMESPACES, None, ns)["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "Helm"
    ]
    assert [d["metadata"]["name"] for d in helm_daemonsets] == ["fluent-bit"]
    assert helm_daemonsets[0]["spec"]["template"]["metadata"]["labels"]["role"] == "log-shipper"
    ledger = store.get(STATEFULSETS, "payments", "ledger-db")
    assert ledger["spec"]["replicas"] == 3 and store.try_get("services", "payments", ledger["spec"]["serviceName"]) is not None
    stray = store.get(PODS, "scratch", "debug-shell")
    assert not stray["metadata"].get("ownerReferences")


def test_cronjobs_run_jobs_on_the_image_they_have_moved_on_from(seeded: tuple[SandboxCluster, Any]) -> None:
    cluster, demo = seeded
    store = cluster.store
    assert len(demo.running_jobs) == 2
    for namespace, job_name in demo.running_jobs:
        job = store.get(JOBS, namespace, job_name)
        ref = podutil.controller_ref(job)
        assert ref is not None and ref["kind"] == "CronJob" and ref["apiVersion"] == "batch/v1" and ref["blockOwnerDeletion"]
        cron = store.get(CRONJOBS, namespace, ref["name"])
        assert ref["uid"] == cron["metadata"]["uid"]
        scheduled = podutil.parse_time(job["metadata"]["annotations"][CRONJOB_SCHEDULED_ANNOTATION])
        assert job_name == f"{cron['metadata']['name']}-{int(scheduled // 60)}"
        assert scheduled <= cluster.clock.time() and int(scheduled) % 1800 == 0
        assert job["metadata"]["labels"] == cron["spec"]["jobTemplate"]["metadata"]["labels"]
        assert job["spec"]["template"]["metadata"]["annotations"][RUN_SECONDS_ANNOTATION] == "forever"
        assert RUN_SECONDS_ANNOTATION not in (cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("annotations") or {})
        old, new = _image(job["spec"]), _image(cron["spec"]["jobTemplate"]["spec"])
        assert old.rsplit(":", 1)[0] == new.rsplit(":", 1)[0] and old != new
        assert [a["uid"] for a in cron["status"]["active"]] == [job["metadata"]["uid"]]
        assert cron["status"]["lastScheduleTime"] == job["metadata"]["annotations"][CRONJOB_SCHEDULED_ANNOTATION]
        # Created when it was scheduled, long after its CronJob.
        assert job["metadata"]["creationTimestamp"] == cron["status"]["lastScheduleTime"]
        assert podutil.parse_time(cron["metadata"]["creationTimestamp"]) < scheduled - 30 * 86_400
    finished = [store.get(JOBS, ns, name) for ns, name in demo.finished_jobs]
    assert len(finished) == 2
    for job in finished:
        assert podutil.condition(job, "Complete")["status"] == "True" and job["status"]["succeeded"] == 1
        created, started, completed = (podutil.parse_time(t) for t in (job["metadata"]["creationTimestamp"], job["status"]["startTime"], job["status"]["completionTime"]))
        assert created <= started < completed < cluster.clock.time()
        assert RUN_SECONDS_ANNOTATION not in (job["spec"]["template"]["metadata"].get("annotations") or {})
    assert any(podutil.controller_ref(j) is None for j in finished)  # the Helm hook Job
    (reindex_done,) = [j for j in finished if podutil.controller_ref(j) is not None]
    reindex = store.get(CRONJOBS, "search", "catalog-reindex")
    assert reindex["status"]["lastSuccessfulTime"] == reindex_done["status"]["completionTime"]
    assert reindex_done["metadata"]["annotations"][CRONJOB_SCHEDULED_ANNOTATION] < reindex["status"]["lastScheduleTime"]


def test_last_slots_are_the_schedules_recent_fire_times() -> None:
    now = 1_700_001_234.5  # 2023-11-14T22:33:54.5Z
    assert last_slots(now, 3600, 2) == [1_699_999_200.0, 1_699_995_600.0]  # 22:00 and 21:00
    slots = last_slots(now, 1800, 3)
    assert slots[0] <= now < slots[0] + 1800 and all(s % 1800 == 0 for s in slots)
    assert slots == sorted(slots, reverse=True) and slots[0] - slots[2] == 3600


@needs_workload_controllers
def test_demo_settles_with_pods_running_on_the_nodes(seeded: tuple[SandboxCluster, Any]) -> None:
    cluster, demo = seeded
    deadline = time.monotonic() + 30
    while demo_pending(cluster, demo) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo_pending(cluster, demo) == []
    with cluster.store.lock:
        nodes = [n["metadata"]["name"] for n in cluster.store.iter(NODES)]
        for namespace, name in demo.running_jobs:
            pods = [p for p in cluster.store.iter(PODS, namespace) if p["metadata"].get("labels", {}).get("job-name") == name]
            assert pods and all(p["status"]["phase"] == "Running" for p in pods)
        assert all(len([p for p in cluster.store.pods_on_node(n) if p["metadata"]["namespace"] == "kube-system"]) >= 2 for n in nodes)


def test_two_clusters_over_http_with_kubeconfigs_and_airflow_connections(tmp_path: Path) -> None:
    from kubernetes import client, config

    seed = _controllers_present("workloads", "batch")
    world = start_world(tmp_path, config=fast_config(), seed=seed, timeout=40)
    try:
        assert set(world.clusters) == {"staging", "production"}
        assert world.region("staging") == "eu-west-1" and world.region("production") == "us-east-1"
        names: dict[str, set[str]] = {}
        for cluster_name in ("staging", "production"):
            path = world.kubeconfig(cluster_name)
            assert path == tmp_path / f"{cluster_name}.kubeconfig"
            api = client.CoreV1Api(config.new_client_from_config(config_file=str(path)))
            nodes = api.list_node().items
            assert len(nodes) == 5 and all(podutil.is_node_ready(api.api_client.sanitize_for_serialization(n)) for n in nodes)
            assert {n.metadata.labels["topology.kubernetes.io/region"] for n in nodes} == {world.region(cluster_name)}
            assert {n.metadata.labels["eks.amazonaws.com/nodegroup"] for n in nodes} == {f"{cluster_name}-general", f"{cluster_name}-batch"}
            names[cluster_name] = {n.metadata.name for n in nodes}
            if seed:
                namespaces = {ns.metadata.name for ns in api.list_namespace().items}
                assert {"shop", "payments", "search", "scratch"} <= namespaces
        assert not names["staging"] & names["production"]
        assert all(n.endswith(".eu-west-1.compute.internal") for n in names["staging"])
        assert all(n.endswith(".ec2.internal") for n in names["production"])

        connections = airflow_connections(world)
        assert connections["AIRFLOW_CONN_K8S_STAGING"]["extra"]["kube_config_path"] == str(world.kubeconfig("staging").resolve())
        aws = connections["AIRFLOW_CONN_AWS_PRODUCTION"]
        assert aws["conn_type"] == "aws" and aws["extra"] == {"region_name": "us-east-1", "endpoint_url": world.moto_url}
        env_lines = [line for line in env_file_text(world).splitlines() if line.startswith("AIRFLOW_CONN_")]
        assert len(env_lines) == 4
        variable, _, quoted = env_lines[0].partition("=")
        assert json.loads(quoted.strip("'")) == connections[variable]
        state = describe_world(world, tmp_path / "airflow.env")
        assert state["moto_url"] == world.moto_url
        assert state["clusters"]["production"]["url"].startswith("http://127.0.0.1:")
        assert state["clusters"]["staging"]["auto_scaling_groups"] == ["staging-general", "staging-batch"]
    finally:
        world.stop()


@needs_workload_controllers
def test_up_command_writes_connections_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env_file = tmp_path / "airflow.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up", "--dir", str(tmp_path), "--env-file", str(env_file)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 45
        while not env_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert env_file.exists(), process.stdout.read() if process.poll() is not None else "no env file after 45 s"
        variables = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("AIRFLOW_CONN_"))
        assert set(variables) == {"AIRFLOW_CONN_K8S_STAGING", "AIRFLOW_CONN_K8S_PRODUCTION", "AIRFLOW_CONN_AWS_STAGING", "AIRFLOW_CONN_AWS_PRODUCTION"}
        state = json.loads((tmp_path / "sandbox.json").read_text())
        kube = json.loads(variables["AIRFLOW_CONN_K8S_STAGING"].strip("'"))
        assert kube["extra"]["kube_config_path"] == state["clusters"]["staging"]["kubeconfig"] == str(tmp_path / "staging.kubeconfig")
        aws = json.loads(variables["AIRFLOW_CONN_AWS_STAGING"].strip("'"))
        assert aws["extra"] == {"region_name": "eu-west-1", "endpoint_url": state["moto_url"]}
        assert json.loads((tmp_path / "production.kubeconfig").read_text())["clusters"][0]["cluster"]["server"] == state["clusters"]["production"]["url"]

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert "KUBECONFIG=" in output
        assert not (tmp_path / "sandbox.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@needs_workload_controllers
def test_demo_recovers_after_a_node_s_instance_is_terminated(tmp_path: Path) -> None:
    from sandbox.aws import aws_client

    world = start_world(tmp_path, ["staging"], fast_config(), serve_http=False, timeout=30)
    try:
        member = world.clusters["staging"]
        cluster, demo = member.cluster, member.demo
        assert demo is not None and demo_pending(cluster, demo) == []
        with cluster.store.lock:
            busiest = max(cluster.store.iter(NODES), key=lambda n: len(cluster.store.pods_on_node(n["metadata"]["name"])))
            victim_node = busiest["metadata"]["name"]
            victim_pods = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in cluster.store.pods_on_node(victim_node)}
        instance_id = busiest["spec"]["providerID"].rsplit("/", 1)[1]

        aws_client("autoscaling", world.moto_url, member.region).terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=False
        )

        assert cluster.wait_for(lambda: cluster.store.try_get(NODES, None, victim_node) is None, 10)
        assert cluster.wait_for(lambda: not any(cluster.store.try_get(PODS, ns, name) for ns, name in victim_pods), 10)
        # Every controller brings its pods back elsewhere; an unmanaged pod is simply lost.
        lost = [f"pod {ns}/{name}" for ns, name in demo.bare_pods if (ns, name) in victim_pods]
        deadline = time.monotonic() + 20
        while demo_pending(cluster, demo) != lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert demo_pending(cluster, demo) == lost
        with cluster.store.lock:
            nodes = [n for n in cluster.store.iter(NODES) if podutil.is_node_ready(n)]
            assert len(nodes) == member.plan.node_count
    finally:
        world.stop()
