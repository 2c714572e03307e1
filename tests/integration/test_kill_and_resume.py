"""Kill and resume: a node replacement's task process dies right after a step changed something,
the run ends (its cleanup runs, as after a worker lost mid-task), and the operator clears the run
and runs it again. Whatever the step, the cluster must converge: the node replaced, its instance
terminated exactly once, no node left cordoned, no lock held, no Auto Scaling process left
suspended, and no budget (PodDisruptionBudget, nodes out of service) ever exceeded.

A "kill" is an exception raised inside the task right after the change (no retries, so nothing
in the task gets a second chance); the re-run is ``dag.test`` again on the same run, which clears
it, as *Clear* in the UI does.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest

from kube_maintenance.core import cloud
from kube_maintenance.node_replacement import node_ops
from kube_maintenance.node_replacement import tasks as node_replacement
from sandbox.aws import NodeGroup
from sandbox.resources import NODES
from sandbox.scenario import ClusterPlan, World, start_world

from harness import DagRunner, fast_world_config, registry_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILE = "node_replacement.py"
DAG_ID = "node_replacement__staging"
LEASES = "leases.coordination.k8s.io"
DAY = 86400.0


class TaskProcessKilled(Exception):
    """Stands for the task process dying at this point (SIGKILL, a lost worker)."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    staging = ClusterPlan(
        "staging",
        "eu-west-1",
        (NodeGroup("staging-general", "m5.large", desired=4, min_size=3, max_size=8, labels={"workload-type": "general"}, age_seconds=40 * DAY),),
    )
    w = start_world(tmp_path / "sandbox", (staging,), fast_world_config())
    try:
        yield w
    finally:
        w.stop()


def kill_after(module: Any, name: str, calls: int = 1) -> Callable[[pytest.MonkeyPatch], None]:
    """Let ``module.name`` do its work ``calls`` times, then die right after (its change made,
    nothing after it: no audit line, no XCom, no next step)."""

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        original = getattr(module, name)
        seen = {"calls": 0}

        def dying(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            seen["calls"] += 1
            if seen["calls"] == calls:
                raise TaskProcessKilled(f"killed right after {name}")
            return result

        monkeypatch.setattr(module, name, dying)

    return install


def kill_before(module: Any, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    """Die when the step ``module.name`` starts (the steps before it done)."""

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        def dying(*args: Any, **kwargs: Any) -> Any:
            raise TaskProcessKilled(f"killed before {name}")

        monkeypatch.setattr(module, name, dying)

    return install


KILL_POINTS = {
    # between the cordon and the drain
    "after-cordon": kill_before(node_replacement, "drain"),
    # mid-drain: one pod evicted, the others not yet
    "mid-drain": kill_after(node_ops, "evict_one"),
    # the instance terminated, the task dies before it records it
    "after-terminate-call": kill_after(cloud.Cloud, "terminate_in_group"),
    # terminated and recorded, before the replacement joins
    "before-replacement-joins": kill_before(node_replacement, "wait_for_replacement"),
    # holding the lock, with the group's Auto Scaling processes just suspended
    "processes-suspended": kill_after(node_replacement, "_suspend_autoscaling_processes"),
}


def suspended(world: World) -> dict[str, Any]:
    autoscaling = boto3.client("autoscaling", region_name="eu-west-1", endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["staging-general"])["AutoScalingGroups"][0]
    return {
        "processes": sorted(p["ProcessName"] for p in group.get("SuspendedProcesses") or ()),
        "our_tags": sorted(t["Key"] for t in group.get("Tags") or () if t["Key"].startswith("kube-maintenance.io/")),
    }


def instance_state(world: World, instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_run_killed_at_any_step_and_run_again_converges(dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    victim = sorted(n["metadata"]["name"] for n in store.iter(NODES))[0]
    instance = store.get(NODES, None, victim)["spec"]["providerID"].rsplit("/", 1)[1]
    dag_runner.set_registry(registry_for(world, node_replacement={"retries": 0}))
    conf = {"dry_run": False, "force_unmanaged_pods": True, "delete_emptydir_data": True, "node_names": [victim]}
    same_run = {"logical_date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)}
    same_run["run_after"] = same_run["logical_date"]
    staging.monitor.reset()

    with monkeypatch.context() as patched:
        KILL_POINTS[point](patched)
        killed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert killed.state == "failed", (point, killed.task_states)
    assert "killed " in killed.text(), "the kill happened where it was meant to"
    # What the dead run left is safe: the lock released by its cleanup, no process left suspended.
    assert store.try_get(LEASES, "default", "kube-maintenance-lock") is None
    assert suspended(world) == {"processes": [], "our_tags": []}

    resumed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert resumed.state == "success", (point, resumed.failed_tasks(), resumed.errors())
    assert instance_state(world, instance) in ("shutting-down", "terminated")
    terminations = [l for run in (killed, resumed) for l in run.audit if l["action"] == "terminate" and l["outcome"] == "done"]
    assert len(terminations) <= 1, f"{instance} terminated more than once: {terminations}"
    assert staging.wait_for(lambda: store.try_get(NODES, None, victim) is None or store.get(NODES, None, victim)["spec"]["providerID"].rsplit("/", 1)[1] != instance, timeout=30)
    assert not [n["metadata"]["name"] for n in store.iter(NODES) if n["spec"].get("unschedulable")], "no node left cordoned"
    assert store.try_get(LEASES, "default", "kube-maintenance-lock") is None, "no lock held"
    assert suspended(world) == {"processes": [], "our_tags": []}, "no Auto Scaling process left suspended"
    report = staging.monitor.report()
    assert report["max_nodes_out_of_service"] <= 1 and [v for v in report["violations"] if "pdb" in v["kind"].lower()] == [], report
