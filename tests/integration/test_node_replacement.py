"""Rolling node replacement, whole DAG runs against the sandbox through real Airflow connections."""
from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from sandbox.aws import NodeGroup
from sandbox.controllers.nodes import mark_node_not_ready
from sandbox.monitor import WRITE_VERBS
from sandbox.resources import DEPLOYMENTS, NODES, PDBS, PODS

LEASES = "leases.coordination.k8s.io"
from sandbox.scenario import ClusterPlan, World, start_world

from harness import DagRunner, fast_world_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILE = "node_replacement.py"
DAG_ID = "node_replacement__staging"
DAY = 86400.0
# As the runbooks drain: `kubectl drain --force --ignore-daemonsets --delete-emptydir-data`.
AS_RUNBOOK = {"force_unmanaged_pods": True, "delete_emptydir_data": True}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Staging with six old nodes (four general, two batch) and the demo workloads; production beside it."""
    staging = ClusterPlan(
        "staging",
        "eu-west-1",
        (
            NodeGroup("staging-general", "m5.large", desired=4, min_size=3, max_size=8, labels={"workload-type": "general"}, age_seconds=40 * DAY),
            NodeGroup("staging-batch", "c5.xlarge", desired=2, min_size=1, max_size=4, labels={"workload-type": "batch"}, age_seconds=3 * DAY),
        ),
    )
    w = start_world(tmp_path / "sandbox", (staging, "production"), fast_world_config())
    try:
        yield w
    finally:
        w.stop()


def node_names(world: World, cluster: str = "staging") -> set[str]:
    return {n["metadata"]["name"] for n in world.clusters[cluster].cluster.store.iter(NODES)}


def writes_since(world: World, cluster: str, seq: int) -> list:
    return [r for r in world.clusters[cluster].cluster.requests.since(seq) if r.verb in WRITE_VERBS and "kube-maintenance" in r.user_agent]


def instance_states(world: World, cluster: str) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name=world.region(cluster), endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    return {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def block_a_pdb(world: World) -> str:
    """Make the first PodDisruptionBudget refuse every eviction; the node carrying one of its pods
    (whose drain then never ends)."""
    staging = world.clusters["staging"].cluster
    pdb = next(p for p in staging.store.iter(PDBS))
    ns, selector = pdb["metadata"]["namespace"], pdb["spec"]["selector"]["matchLabels"]
    staging.faults.configure({"blocked_pdbs": [f"{ns}/{pdb['metadata']['name']}"]})
    return next(p["spec"]["nodeName"] for p in staging.store.iter(PODS, ns) if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()))


def deployment_manifest(name: str, node_selector: dict[str, str]) -> dict:
    """A one-replica Deployment in "default" whose pods only run on nodes with these labels."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"nodeSelector": node_selector, "containers": [{"name": "app", "image": f"{name}:1"}]}},
        },
    }


def all_available(world: World, cluster: str = "staging") -> list[str]:
    store = world.clusters[cluster].cluster.store
    return [
        f"{d['metadata']['namespace']}/{d['metadata']['name']}"
        for d in store.iter(DEPLOYMENTS)
        if d.get("status", {}).get("availableReplicas", 0) < d["spec"].get("replicas", 1)
    ]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_replaces_four_of_six_nodes_within_the_budget(dag_runner: DagRunner, world: World, batch_size: int) -> None:
    staging = world.clusters["staging"].cluster
    staging.monitor.reset()
    before = node_names(world)
    old_general = {n["metadata"]["name"] for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"}
    pods_on_old = {
        f"pod/{p['metadata']['namespace']}/{p['metadata']['name']}"
        for n in old_general
        for p in staging.store.pods_on_node(n)
        if (p["metadata"].get("ownerReferences") or [{}])[0].get("kind") != "DaemonSet"
    }
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "max_nodes": 4, "batch_size": batch_size, "node_selector": "workload-type=general"})
    assert result.state == "success", (result.failed_tasks(), result.errors())

    after = node_names(world)
    assert before - after == old_general, "exactly the four general nodes were replaced"
    assert len(after) == 6 and staging.wait_for(lambda: all_available(world) == [], timeout=30), all_available(world)
    report = staging.monitor.report()
    assert report["max_nodes_out_of_service"] <= batch_size, report
    assert [v for v in report["violations"] if v["kind"] == "pdb"] == []
    actions = {}
    for line in result.audit:
        actions.setdefault(line["action"], set()).add(line["target"])
    assert actions["cordon"] == {f"node/{n}" for n in old_general}
    assert len(actions["terminate"]) == 4
    assert pods_on_old <= actions["evict"], pods_on_old - actions["evict"]
    assert all(line["dry_run"] is False and line["cluster"] == "staging" for line in result.audit)
    assert staging.store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock") is None


def test_a_pdb_that_never_allows_stops_the_rollout_and_uncordons(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    # The node carrying a pod of a PDB-protected Deployment; its budget will never allow an eviction.
    pdb = next(p for p in store.iter(PDBS))
    ns = pdb["metadata"]["namespace"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    victim = next(
        p["spec"]["nodeName"] for p in store.iter(PODS, ns) if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    )
    staging.faults.configure({"blocked_pdbs": [f"{ns}/{pdb['metadata']['name']}"]})
    instances = instance_states(world, "staging")

    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 4})

    assert result.state == "failed"
    assert "batch[0]" in result.failed_tasks()
    assert f"PodDisruptionBudget {pdb['metadata']['name']}" in result.text() and "disruptionsAllowed" in result.text()
    node = store.get(NODES, None, victim)
    assert not node["spec"].get("unschedulable"), "the node is uncordoned again"
    assert instance_states(world, "staging") == instances, "nothing was terminated"
    assert [l["target"] for l in result.audit if l["action"] == "uncordon"] == [f"node/{victim}"]
    assert store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock") is None


def test_dry_run_changes_nothing_and_logs_the_plan(dag_runner: DagRunner, world: World) -> None:
    seq = len(world.clusters["staging"].cluster.requests)
    before = node_names(world)
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": True, "max_nodes": 3, "batch_size": 2})
    assert result.state == "success", result.task_states
    assert writes_since(world, "staging", seq) == []
    planned = [a for a in result.audit if a["action"] == "plan-replace"]
    assert len(planned) == 3 and all(a["outcome"] == "planned" and a["dry_run"] for a in planned)
    assert sorted(a["detail"]["batch"] for a in planned) == [1, 1, 2]
    assert node_names(world) == before


def test_pods_a_drain_would_lose_fail_the_run_before_anything_is_cordoned(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    bare = next(p for p in staging.store.iter(PODS) if not p["metadata"].get("ownerReferences") and p["spec"].get("nodeName"))
    seq = len(staging.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "node_names": [bare["spec"]["nodeName"]], "delete_emptydir_data": True})
    assert result.state == "failed" and "preflight" in result.failed_tasks()
    assert f"pod/{bare['metadata']['namespace']}/{bare['metadata']['name']}: not managed by a controller" in result.text()
    assert [r for r in writes_since(world, "staging", seq) if r.resource == "nodes"] == []


def test_a_node_whose_kubelet_died_is_replaced_and_its_stuck_pods_left_to_the_pod_gc(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    managed = lambda p: (p["metadata"].get("ownerReferences") or [{}])[0].get("kind") not in (None, "DaemonSet")  # noqa: E731
    victim = max(
        (n["metadata"]["name"] for n in store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"),
        key=lambda name: sum(1 for p in store.pods_on_node(name) if managed(p)),
    )
    daemon = lambda p: (p["metadata"].get("ownerReferences") or [{}])[0].get("kind") == "DaemonSet"  # noqa: E731
    stranded = {f"pod/{p['metadata']['namespace']}/{p['metadata']['name']}" for p in store.pods_on_node(victim) if not daemon(p)}
    assert stranded, "the dead node carries workload pods"
    instance = store.get(NODES, None, victim)["spec"]["providerID"].rsplit("/", 1)[-1]
    mark_node_not_ready(staging, victim)  # the kubelet stopped: Ready=Unknown, nothing on the node moves any more

    result = dag_runner.run(
        DAG_FILE,
        DAG_ID,
        {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "pod_grace_period_seconds": 1, "skip_wait_for_delete_timeout_seconds": 2, "drain_timeout_seconds": 60},
    )
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert instance_states(world, "staging")[instance] in ("shutting-down", "terminated")
    left = {line["target"] for line in result.audit if line["action"] == "leave-to-gc"}
    assert left and left <= stranded, (left, stranded)
    assert all("not Ready" in line["detail"]["why"] for line in result.audit if line["action"] == "leave-to-gc")
    summary = next(line for line in result.audit if line["action"] == "summary")["after"]
    assert summary["replaced"] == [victim] and set(summary["pods_left_to_gc"]) == left
    assert staging.wait_for(lambda: victim not in node_names(world), timeout=30)
    assert staging.wait_for(lambda: all_available(world) == [], timeout=60), all_available(world)


def test_a_lock_that_lapses_mid_drain_stops_the_run_before_its_next_change(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = block_a_pdb(world)
    lapsed_at: dict[str, int] = {}

    def lapse_the_lock_once_draining() -> None:
        # As if the run stalled past the lease (a scheduler outage): its renewTime is 11 minutes old.
        refused = lambda: any(r.resource == "pods/eviction" and r.code == 429 for r in staging.requests.since(0))  # noqa: E731
        if not staging.wait_for(refused, timeout=60):
            return
        # Between two polls of the drain (a poll renews the lock first, then acts): no request for a while.
        while True:
            seen = len(staging.requests)
            time.sleep(0.4)
            if len(staging.requests) == seen:
                break
        old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=11)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lapsed_at["seq"] = len(staging.requests)
        store.mutate(LEASES, "default", "kube-maintenance-lock", lambda lease: lease["spec"].update(renewTime=old))

    instances_before = instance_states(world, "staging")
    lapser = threading.Thread(target=lapse_the_lock_once_draining, daemon=True)
    lapser.start()
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 600})
    lapser.join()
    assert result.state == "failed" and result.failed_tasks() == ["batch[0]", "cleanup"], result.failed_tasks()
    assert "maintenance lock on staging lapsed" in result.text()
    after = [r for r in staging.requests.since(lapsed_at["seq"]) if r.verb in WRITE_VERBS]
    assert [r for r in after if r.resource == "pods/eviction"] == [], "no eviction after the lock lapsed"
    # Only the cleanup wrote: it restores the node it cordoned (it needs no lock for that) and drops
    # the lapsed Lease, still this run's (one another run had taken would be left alone).
    assert {(r.verb, r.resource) for r in after} <= {("patch", "nodes"), ("delete", "leases")}, after
    assert not store.get(NODES, None, victim)["spec"].get("unschedulable")
    assert instance_states(world, "staging") == instances_before, "nothing terminated"


def test_auto_scaling_and_the_cluster_autoscaler_are_held_off_during_a_run_and_restored_after_a_failed_one(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = block_a_pdb(world)
    other = next(n["metadata"]["name"] for n in store.iter(NODES) if n["metadata"]["name"] != victim and n["metadata"]["labels"].get("workload-type") == "general")
    # Someone keeps the autoscaler off `other` for reasons of their own, and paused alarm scaling.
    store.mutate(NODES, None, other, lambda n: n["metadata"].setdefault("annotations", {}).update({"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}))
    autoscaling = boto3.client("autoscaling", region_name=world.region("staging"), endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    groups = sorted({g["AutoScalingGroupName"] for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]})
    for group in groups:
        autoscaling.suspend_processes(AutoScalingGroupName=group, ScalingProcesses=["AlarmNotification"])

    def suspended() -> dict[str, set[str]]:
        return {g["AutoScalingGroupName"]: {p["ProcessName"] for p in g["SuspendedProcesses"]} for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]}

    def marks() -> dict[str, str | None]:
        return {name: (store.get(NODES, None, name)["metadata"].get("annotations") or {}).get("cluster-autoscaler.kubernetes.io/scale-down-disabled") for name in (victim, other)}

    during: dict[str, object] = {}

    def look_while_draining() -> None:
        if staging.wait_for(lambda: any(r.resource == "pods/eviction" and r.code == 429 for r in staging.requests.since(0)), timeout=60):
            during.update(suspended=suspended(), marks=marks())

    looker = threading.Thread(target=look_while_draining, daemon=True)
    looker.start()
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim, other], "batch_size": 2, "drain_timeout_seconds": 5})
    looker.join()
    assert result.state == "failed" and "batch[0]" in result.failed_tasks(), result.failed_tasks()

    held_off = {"AZRebalance", "InstanceRefresh", "ScheduledActions"}
    planned_groups = {line["target"].removeprefix("asg/") for line in result.audit if line["action"] == "suspend-processes"}
    assert planned_groups and all(during["suspended"][g] == held_off | {"AlarmNotification"} for g in planned_groups), during  # type: ignore[index]
    assert during["marks"] == {victim: "true", other: "true"}, during
    # After the failed run: exactly what the run suspended is resumed, what was suspended before stays.
    assert all(suspended()[g] == {"AlarmNotification"} for g in groups), suspended()
    tags = [t for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] for t in g.get("Tags", []) if t["Key"].startswith("kube-maintenance.io/")]
    assert tags == []
    # The run's own autoscaler mark is gone; the one someone else put there stays.
    assert marks() == {victim: None, other: "true"}
    assert [line["target"] for line in result.audit if line["action"] == "disable-scale-down"] == [f"node/{victim}"]


def test_a_workload_broken_before_the_run_does_not_hold_up_validation(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    # A Deployment that can never run (no node matches its selector): broken before the run, not by it.
    staging.store.create(DEPLOYMENTS, deployment_manifest("legacy", {"no-such-node": "true"}), namespace="default")
    victim = sorted(n["metadata"]["name"] for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general")[0]
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "validation_timeout_seconds": 120})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert "not available before the run either (not waited for): deployment/default/legacy" in result.text()


def test_only_drifted_picks_the_nodes_launched_from_an_older_launch_template_version(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    aws = {"region_name": world.region("staging"), "endpoint_url": world.moto_url, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    autoscaling, ec2 = boto3.client("autoscaling", **aws), boto3.client("ec2", **aws)
    general = {n["metadata"]["name"]: n["spec"]["providerID"].rsplit("/", 1)[-1] for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"}
    group = autoscaling.describe_auto_scaling_instances(InstanceIds=list(general.values()))["AutoScalingInstances"][0]["AutoScalingGroupName"]
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    # A new AMI is published as version 2 of the group's template (the group launches "$Latest")...
    ec2.create_launch_template_version(LaunchTemplateId=described["LaunchTemplate"]["LaunchTemplateId"], SourceVersion="1", LaunchTemplateData={"ImageId": "ami-0aaaaaaaaaaaaaaa2"})
    # ... and one instance already came up from it.
    autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=described["DesiredCapacity"] + 1)
    before = set(general)
    assert staging.wait_for(lambda: len([n for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"]) == len(before) + 1, timeout=30)
    in_group = {i["InstanceId"] for i in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]}
    old_in_group = {name for name, instance in general.items() if instance in in_group}

    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": True, "only_drifted": True, "max_nodes": 4, "batch_size": 2})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    planned = {line["target"].removeprefix("node/"): line["detail"] for line in result.audit if line["action"] == "plan-replace"}
    assert set(planned) == old_in_group, (planned, old_in_group)
    assert all("launch template version 1, the group now launches version 2" in d["drift"] and "ami-0aaaaaaaaaaaaaaa2" in d["drift"] for d in planned.values())
    assert "not drifted" in result.text()


def test_a_one_replica_deployment_with_no_pdb_never_has_zero_ready_pods_and_ends_at_one_replica(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    store.create(DEPLOYMENTS, deployment_manifest("lonely", {"workload-type": "general"}), namespace="default")

    def ready_pods() -> list[dict]:
        return [
            p for p in store.iter(PODS, "default")
            if p["metadata"].get("labels", {}).get("app") == "lonely" and not p["metadata"].get("deletionTimestamp")
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in p.get("status", {}).get("conditions") or ())
        ]

    assert staging.wait_for(lambda: len(ready_pods()) == 1, timeout=30)
    victim = ready_pods()[0]["spec"]["nodeName"]
    seen: list[int] = []
    running = threading.Event()
    running.set()

    def watch_ready_pods() -> None:
        while running.is_set():
            seen.append(len(ready_pods()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_ready_pods, daemon=True)
    watcher.start()
    try:
        result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim]})
    finally:
        running.clear()
        watcher.join()
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert min(seen) >= 1, "a Ready pod at every moment of the run"
    assert victim not in node_names(world)
    assert store.get(DEPLOYMENTS, "default", "lonely")["spec"]["replicas"] == 1, "scaled back to what it was"
    assert not any(k.startswith("kube-maintenance.io/") for k in store.get(DEPLOYMENTS, "default", "lonely")["metadata"].get("annotations") or {})
    scaled = [(line["action"], line["before"], line["after"]) for line in result.audit if line["target"] == "deployment/default/lonely"]
    assert scaled == [("scale-up", {"replicas": 1}, {"replicas": 2}), ("scale-down", {"replicas": 2}, {"replicas": 1})], scaled


def test_a_dry_run_shows_what_would_stop_a_real_run_and_succeeds(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    bare = next(p for p in staging.store.iter(PODS) if not p["metadata"].get("ownerReferences") and p["spec"].get("nodeName"))
    seq = len(staging.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "node_names": [bare["spec"]["nodeName"]], "delete_emptydir_data": True})
    assert result.state == "success", result.task_states
    stop = [line for line in result.audit if line["action"] == "preflight-stop"]
    unmanaged = f"pod/{bare['metadata']['namespace']}/{bare['metadata']['name']}: not managed by a controller"
    assert len(stop) == 1 and stop[0]["outcome"] == "planned" and unmanaged in "\n".join(stop[0]["detail"]["problems"])
    summary = next(line for line in result.audit if line["action"] == "summary")
    assert unmanaged in "\n".join(summary["after"]["a_real_run_would_stop"])
    assert writes_since(world, "staging", seq) == []


@pytest.mark.parametrize(
    "conf,message",
    [
        ({"batch_size": 0}, "Invalid input for param batch_size: 0 is less than the minimum of 1"),
        ({"max_nodes": 2, "batch_size": 1, "node_names": ["a"], "exclude_nodes": ["a"]}, "exclude_nodes: ['a'] are also in node_names"),
        ({"node_names": ["ip-10-9-9-9.eu-west-1.compute.internal"]}, "no such node(s) in the cluster: ip-10-9-9-9"),
        ({"node_selector": "workload-type in (general"}, "node_selector: invalid label selector"),
    ],
)
def test_bad_parameters_fail_before_any_change(dag_runner: DagRunner, world: World, conf: dict, message: str) -> None:
    seq = len(world.clusters["staging"].cluster.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, **conf})
    # Refused by the trigger form's own validation, or by the plan task: either way before any change.
    assert result.state == "rejected" or (result.state == "failed" and "plan" in result.failed_tasks())
    assert message in result.text()
    assert writes_since(world, "staging", seq) == []


def test_a_run_against_one_cluster_never_touches_the_other(dag_runner: DagRunner, world: World) -> None:
    production = world.clusters["production"].cluster
    seq = len(production.requests)
    prod_instances = instance_states(world, "production")
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "max_nodes": 1, "node_selector": "workload-type=batch"})
    assert result.state == "success", result.failed_tasks()
    assert [r for r in production.requests.since(seq) if "kube-maintenance" in r.user_agent] == []
    assert instance_states(world, "production") == prod_instances


def test_injected_faults_give_the_same_end_state(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    old_batch = {n["metadata"]["name"] for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "batch"}
    staging.faults.configure(
        {
            "errors": [
                {"code": 500, "rate": 0.15, "verb": "list"},
                {"code": 429, "rate": 0.2, "verb": "patch", "resource": "nodes"},
                {"code": 503, "rate": 0.1, "verb": "get"},
            ],
            "watch_cut_after_events": 1,
        }
    )
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "max_nodes": 2, "batch_size": 1, "node_selector": "workload-type=batch"})
    staging.faults.clear()
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert not (old_batch & node_names(world))
    assert len(node_names(world)) == 6
    assert staging.monitor.report()["max_nodes_out_of_service"] <= 1


def test_rerun_after_a_failed_batch_replaces_the_rest_and_nothing_twice(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    old_general = {n["metadata"]["name"] for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"}
    conf = {**AS_RUNBOOK, "dry_run": False, "max_nodes": 4, "batch_size": 1, "node_selector": "workload-type=general", "min_node_age_hours": 1, "drain_timeout_seconds": 4}

    def block_evictions_after_first_batch() -> None:
        if staging.wait_for(lambda: len(old_general & node_names(world)) < 4, timeout=120):
            staging.faults.configure({"errors": [{"code": 429, "verb": "create", "resource": "pods/eviction"}]})

    blocker = threading.Thread(target=block_evictions_after_first_batch, daemon=True)
    blocker.start()
    first = dag_runner.run(DAG_FILE, DAG_ID, conf)
    blocker.join()
    staging.faults.clear()
    assert first.state == "failed" and "batch[1]" in first.failed_tasks(), first.failed_tasks()
    assert len(old_general - node_names(world)) == 1
    assert not any(n["spec"].get("unschedulable") for n in staging.store.iter(NODES)), "batch 2 was uncordoned"

    second = dag_runner.run(DAG_FILE, DAG_ID, conf)
    assert second.state == "success", second.failed_tasks()
    assert not (old_general & node_names(world)), "every old node is replaced"
    terminated = [l["target"] for run in (first, second) for l in run.audit if l["action"] == "terminate" and l["outcome"] == "done"]
    assert len(terminated) == 4 and len(set(terminated)) == 4, terminated


def test_another_operation_holding_the_cluster_lock_stops_the_run_before_any_change(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    now = staging.clock.iso_micro()
    staging.store.create(
        "leases.coordination.k8s.io",
        {"metadata": {"name": "kube-maintenance-lock"}, "spec": {"holderIdentity": "rollout_restart__staging/manual__other", "leaseDurationSeconds": 3600, "acquireTime": now, "renewTime": now}},
        namespace="default",
    )
    seq = len(staging.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "max_nodes": 1, "node_selector": "workload-type=batch"})
    assert result.state == "failed" and "preflight" in result.failed_tasks()
    assert "cluster is busy: rollout_restart__staging/manual__other holds the maintenance lock" in result.text()
    assert [r for r in writes_since(world, "staging", seq) if r.resource != "leases"] == []
    assert staging.store.get("leases.coordination.k8s.io", "default", "kube-maintenance-lock")["spec"]["holderIdentity"] == "rollout_restart__staging/manual__other"


def test_a_manual_run_outside_the_window_needs_ignore_window(dag_runner: DagRunner, world: World) -> None:
    from harness import registry_for

    registry = registry_for(world)
    for cluster in registry["clusters"]:
        cluster["maintenance_window"] = {"days": ["mon"], "start": "00:00", "duration_minutes": 1}
        cluster["timezone"] = "Pacific/Kiritimati"
    dag_runner.set_registry(registry)
    seq = len(world.clusters["staging"].cluster.requests)
    conf = {**AS_RUNBOOK, "dry_run": False, "max_nodes": 1, "node_selector": "workload-type=batch"}
    closed = dag_runner.run(DAG_FILE, DAG_ID, conf)
    assert closed.state == "failed" and "outside the maintenance window" in closed.text() and "set ignore_window" in closed.text()
    assert writes_since(world, "staging", seq) == []
    forced = dag_runner.run(DAG_FILE, DAG_ID, {**conf, "ignore_window": True})
    assert forced.state == "success", (forced.failed_tasks(), forced.errors())
    assert len([l for l in forced.audit if l["action"] == "terminate"]) == 1
    summary = [l for l in forced.audit if l["action"] == "summary"][-1]["after"]
    assert len(summary["replaced"]) == 1 and summary["not_replaced"] == [] and summary["lock_released"] is True


def test_surge_launches_each_replacement_in_its_nodes_zone_first_and_shrinks_back(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1", endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")

    def group() -> dict:
        return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["staging-general"])["AutoScalingGroups"][0]

    def instances_per_zone() -> dict[str, int]:
        counts: dict[str, int] = {}
        for instance in group()["Instances"]:
            counts[instance["AvailabilityZone"]] = counts.get(instance["AvailabilityZone"], 0) + 1
        return counts

    before_desired, before_zones = group()["DesiredCapacity"], instances_per_zone()
    general = [n for n in staging.store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"]
    zone_of = {n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in general}
    # Two nodes of one zone: a plain desired-capacity surge would launch into the two emptiest
    # zones (Auto Scaling balances launches), and removing both nodes would leave their zone short.
    zone = max(before_zones, key=lambda z: before_zones[z])
    victims = sorted(name for name, z in zone_of.items() if z == zone)[:2]
    assert len(victims) == 2, before_zones
    staging.monitor.reset()
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "surge": True, "node_names": victims, "batch_size": 2})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    actions = [line["action"] for line in result.audit]
    assert actions.index("surge-launch") < actions.index("cordon"), "replacements are launched before anything is cordoned"
    launches = [line for line in result.audit if line["action"] == "surge-launch"]
    assert sorted(line["detail"]["replaces"] for line in launches) == victims
    assert all(line["after"]["zone"] == zone for line in launches), "each replacement in its node's zone"
    attached = [line for line in result.audit if line["action"] == "surge"]
    assert [(l["before"]["desired"], l["after"]["desired"]) for l in attached] == [(before_desired, before_desired + 1), (before_desired + 1, before_desired + 2)]
    assert all(line["detail"]["should_decrement_desired_capacity"] for line in result.audit if line["action"] == "terminate")
    assert group()["DesiredCapacity"] == before_desired, "the group is back to its size"
    assert instances_per_zone() == before_zones, "every zone keeps its count: nothing for AZRebalance to do"
    assert not set(victims) & node_names(world) and len(node_names(world)) == 6
    surge_ids = [line["target"].split("/", 1)[1] for line in launches]
    tags = {t["Key"]: t["Value"] for r in ec2.describe_instances(InstanceIds=surge_ids)["Reservations"] for i in r["Instances"] for t in i["Tags"]}
    assert tags.get("kubernetes.io/cluster/staging") == "owned", "the group's propagated tags are on the launched instances"
    assert staging.monitor.report()["max_nodes_out_of_service"] <= 2
    dry = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "surge": True, "node_names": sorted(node_names(world))[:1]})
    assert dry.state == "success" and not [l for l in dry.audit if l["action"].startswith("surge")], "a dry run launches nothing"


def test_a_node_cordoned_by_hand_stays_cordoned_when_its_drain_fails(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = block_a_pdb(world)
    store.mutate(NODES, None, victim, lambda n: n["spec"].update(unschedulable=True))  # someone's hand cordon
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 3})
    assert result.state == "failed" and "batch[0]" in result.failed_tasks()
    node = store.get(NODES, None, victim)
    assert node["spec"].get("unschedulable") is True, "left cordoned, as it was before the run"
    assert not any(k.startswith("kube-maintenance.io/") for k in node["metadata"].get("annotations") or {})
    uncordon = [l for l in result.audit if l["action"] == "uncordon"]
    assert len(uncordon) == 1 and uncordon[0]["after"] == "unschedulable (cordoned before the run)"


def test_a_hand_cordon_made_after_the_plan_survives_the_cleanup(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = block_a_pdb(world)
    assert not store.get(NODES, None, victim)["spec"].get("unschedulable"), "schedulable when the plan looks at it"

    def cordon_by_hand_once_planned() -> None:
        # Someone cordons the node while the run is past its plan (the Lease is taken in preflight).
        if staging.wait_for(lambda: store.try_get(LEASES, "default", "kube-maintenance-lock") is not None, timeout=60):
            store.mutate(NODES, None, victim, lambda n: n["spec"].update(unschedulable=True))

    hand = threading.Thread(target=cordon_by_hand_once_planned, daemon=True)
    hand.start()
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 3})
    hand.join()
    assert result.state == "failed" and "batch[0]" in result.failed_tasks(), result.failed_tasks()
    cordon = next(line for line in result.audit if line["action"] == "cordon")
    assert cordon["before"] == "unschedulable", "the cordon step saw the hand cordon"
    node = store.get(NODES, None, victim)
    assert node["spec"].get("unschedulable") is True, "left cordoned, as the person who cordoned it wanted"
    assert not any(k.startswith("kube-maintenance.io/") for k in node["metadata"].get("annotations") or {})


def test_a_cordon_left_by_an_earlier_run_is_taken_over_and_rolled_back(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = block_a_pdb(world)
    # An earlier run died after cordoning, and its rollback never ran.
    left = {"kube-maintenance.io/cordoned-by": "node_replacement__staging/manual__dead", "kube-maintenance.io/cordoned-at": "2026-01-01T00:00:00+00:00"}
    store.mutate(NODES, None, victim, lambda n: (n["spec"].update(unschedulable=True), n["metadata"].setdefault("annotations", {}).update(left)))
    result = dag_runner.run(DAG_FILE, DAG_ID, {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 3})
    assert result.state == "failed" and "batch[0]" in result.failed_tasks()
    node = store.get(NODES, None, victim)
    assert not node["spec"].get("unschedulable"), "this run took the cordon over, so its rollback undid it"
    assert [l["target"] for l in result.audit if l["action"] == "uncordon"] == [f"node/{victim}"]
