"""The EC2 / Auto Scaling side of the sandbox: moto node groups become Nodes, and follow their instances."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import pytest

from sandbox import podutil
from sandbox.aws import (
    CLUSTER_TAG_PREFIX,
    NODEGROUP_LABEL,
    CloudBridge,
    MotoServer,
    NodeGroup,
    aws_client,
    provision_node_groups,
)
from sandbox.cluster import SandboxCluster
from sandbox.resources import NODES, PODS
from sandbox.testing import add_pod, fast_config

pytestmark = pytest.mark.timeout(60)

REGION = "eu-west-1"
DAY = 86_400


def _new_cluster(**config: Any) -> SandboxCluster:
    # Clusters share the module's moto server: unique names keep their groups and VPCs apart.
    cluster = SandboxCluster(f"c{uuid.uuid4().hex[:8]}", fast_config(**config))
    cluster.bootstrap()
    cluster.manager.start()
    return cluster


@pytest.fixture
def cluster() -> Iterator[SandboxCluster]:
    c = _new_cluster()
    try:
        yield c
    finally:
        c.stop()


def _groups(cluster: SandboxCluster) -> list[NodeGroup]:
    return [
        NodeGroup(f"{cluster.name}-general", "m5.large", desired=3, labels={"workload-type": "general"}),
        NodeGroup(f"{cluster.name}-batch", "c5.xlarge", desired=2, labels={"workload-type": "batch"}),
    ]


def _ready_nodes(cluster: SandboxCluster) -> list[dict[str, Any]]:
    return [n for n in cluster.store.iter(NODES) if podutil.is_node_ready(n)]


def _instances(moto: MotoServer, cluster: SandboxCluster, region: str = REGION) -> dict[str, dict[str, Any]]:
    ec2 = aws_client("ec2", moto.url, region)
    out = {}
    for reservation in ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": [CLUSTER_TAG_PREFIX + cluster.name]}])["Reservations"]:
        for instance in reservation["Instances"]:
            out[instance["InstanceId"]] = instance
    return out


def _start(moto: MotoServer, cluster: SandboxCluster, groups: list[NodeGroup] | None = None, region: str = REGION) -> CloudBridge:
    groups = groups if groups is not None else _groups(cluster)
    provision_node_groups(moto.url, region, cluster.name, groups)
    bridge = CloudBridge(cluster, moto.url, region).start()
    expected = sum(g.desired for g in groups)
    assert cluster.wait_for(lambda: len(_ready_nodes(cluster)) == expected, 10), [n["metadata"]["name"] for n in cluster.store.iter(NODES)]
    return bridge


def _record_node_events(cluster: SandboxCluster) -> list[tuple[str, str, str | None]]:
    """(event, node name, Ready status) for every Node write from now on."""
    seen: list[tuple[str, str, str | None]] = []

    def listener(key: str, event: str, old: Any, new: Any) -> None:
        if key == NODES:
            obj = new if new is not None else old
            ready = podutil.condition(obj, "Ready")
            seen.append((event, obj["metadata"]["name"], ready.get("status") if ready else None))

    cluster.store.add_listener(listener)
    return seen


def test_auto_scaling_groups_become_ready_nodes_named_and_labelled_like_eks(moto: MotoServer, cluster: SandboxCluster) -> None:
    bridge = _start(moto, cluster)

    assert cluster.cloud is bridge
    instances = _instances(moto, cluster)
    nodes = {n["metadata"]["name"]: n for n in cluster.store.iter(NODES)}
    assert sorted(nodes) == sorted(i["PrivateDnsName"] for i in instances.values())
    for instance in instances.values():
        name = instance["PrivateDnsName"]
        assert name.startswith("ip-") and name.endswith(".eu-west-1.compute.internal")
        node = nodes[name]
        zone = instance["Placement"]["AvailabilityZone"]
        group = next(t["Value"] for t in instance["Tags"] if t["Key"] == "aws:autoscaling:groupName")
        assert node["spec"]["providerID"] == f"aws:///{zone}/{instance['InstanceId']}"
        labels = node["metadata"]["labels"]
        assert labels["node.kubernetes.io/instance-type"] == instance["InstanceType"]
        assert labels["topology.kubernetes.io/zone"] == zone
        assert labels["topology.kubernetes.io/region"] == REGION
        assert labels["kubernetes.io/hostname"] == name
        assert labels[NODEGROUP_LABEL] == group
        assert labels["workload-type"] == ("general" if group.endswith("-general") else "batch")
        assert {"type": "InternalIP", "address": instance["PrivateIpAddress"]} in node["status"]["addresses"]
        assert not node["spec"].get("taints")
    general = [n for n in nodes.values() if n["metadata"]["labels"][NODEGROUP_LABEL].endswith("-general")]
    assert [n["metadata"]["labels"]["node.kubernetes.io/instance-type"] for n in general] == ["m5.large"] * 3
    # An Auto Scaling group balances its instances across its zones.
    assert len({n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in general}) == 3
    assert {n["status"]["allocatable"]["pods"] for n in general} == {"29"}


def test_us_east_1_nodes_use_the_ec2_internal_domain(moto: MotoServer, cluster: SandboxCluster) -> None:
    _start(moto, cluster, [NodeGroup(f"{cluster.name}-general", desired=2)], region="us-east-1")

    names = [n["metadata"]["name"] for n in cluster.store.iter(NODES)]
    assert len(names) == 2 and all(name.endswith(".ec2.internal") for name in names)


def test_initial_nodes_are_as_old_as_their_instances(moto: MotoServer, cluster: SandboxCluster) -> None:
    groups = [
        NodeGroup(f"{cluster.name}-old", desired=2, age_seconds=40 * DAY),
        NodeGroup(f"{cluster.name}-new", desired=1),
    ]
    _start(moto, cluster, groups)

    now = cluster.clock.time()
    for instance in _instances(moto, cluster).values():
        node = cluster.store.get(NODES, None, instance["PrivateDnsName"])
        age = now - podutil.parse_time(node["metadata"]["creationTimestamp"])
        launched_ago = now - instance["LaunchTime"].timestamp()
        if node["metadata"]["labels"][NODEGROUP_LABEL].endswith("-old"):
            assert abs(age - 40 * DAY) < 60 and abs(launched_ago - 40 * DAY) < 60
        else:
            assert age < 60 and launched_ago < 60


def test_terminated_instance_node_goes_not_ready_then_away_and_a_replacement_joins(moto: MotoServer) -> None:
    # A boot delay long enough to see the replacement register NotReady before it turns Ready.
    cluster = _new_cluster(node_boot_seconds=0.6, node_notready_seconds=0.1, node_delete_seconds=0.3)
    try:
        bridge = _start(moto, cluster)
        autoscaling = aws_client("autoscaling", moto.url, REGION)
        group = f"{cluster.name}-general"
        victim = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
        victim_node = bridge.node_name_for(victim)
        assert victim_node is not None
        pod = add_pod(cluster, "on-victim", node_name=victim_node)
        assert cluster.wait_for(lambda: cluster.store.get(PODS, "default", "on-victim")["status"].get("phase") == "Running", 5)
        events = _record_node_events(cluster)
        before = {n["metadata"]["name"] for n in cluster.store.iter(NODES)}

        autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)

        assert cluster.wait_for(lambda: cluster.store.try_get(NODES, None, victim_node) is None, 10)
        victim_states = [(event, ready) for event, name, ready in events if name == victim_node]
        first_unknown = victim_states.index(("MODIFIED", "Unknown"))
        assert victim_states[-1][0] == "DELETED" and first_unknown < len(victim_states) - 1
        assert all(ready == "True" for _, ready in victim_states[:first_unknown])
        assert cluster.wait_for(lambda: cluster.store.try_get(PODS, "default", pod["metadata"]["name"]) is None, 5)

        assert cluster.wait_for(lambda: len(_ready_nodes(cluster)) == 5, 10)
        (replacement,) = {n["metadata"]["name"] for n in cluster.store.iter(NODES)} - before
        replacement_states = [(event, ready) for event, name, ready in events if name == replacement]
        assert replacement_states[0] == ("ADDED", "False")  # registered before its network was up
        assert ("MODIFIED", "True") in replacement_states
        new_instance = bridge.instance_for_node(replacement)
        assert new_instance is not None and new_instance != victim
        described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        assert described["DesiredCapacity"] == 3
        assert new_instance in {i["InstanceId"] for i in described["Instances"]}
        assert _instances(moto, cluster)[victim]["State"]["Name"] == "terminated"
    finally:
        cluster.stop()


def test_plain_ec2_terminate_is_replaced_by_the_group(moto: MotoServer, cluster: SandboxCluster) -> None:
    bridge = _start(moto, cluster)
    ec2 = aws_client("ec2", moto.url, REGION)
    victim = next(iter(bridge._instances))
    victim_node = bridge.node_name_for(victim)

    ec2.terminate_instances(InstanceIds=[victim])

    assert cluster.wait_for(lambda: cluster.store.try_get(NODES, None, victim_node) is None, 10)
    assert cluster.wait_for(lambda: len(_ready_nodes(cluster)) == 5, 10)


def test_stopped_instance_is_replaced_by_the_groups_health_check(moto: MotoServer, cluster: SandboxCluster) -> None:
    bridge = _start(moto, cluster)
    ec2 = aws_client("ec2", moto.url, REGION)
    group = f"{cluster.name}-batch"
    victim = next(i for i, t in bridge._instances.items() if t.group == group)
    victim_node = bridge.node_name_for(victim)

    ec2.stop_instances(InstanceIds=[victim])

    assert cluster.wait_for(lambda: cluster.store.try_get(NODES, None, victim_node) is None, 10)
    assert cluster.wait_for(lambda: len(_ready_nodes(cluster)) == 5, 10)
    assert _instances(moto, cluster)[victim]["State"]["Name"] == "terminated"
    described = aws_client("autoscaling", moto.url, REGION).describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    assert described["DesiredCapacity"] == 2 and victim not in {i["InstanceId"] for i in described["Instances"]}


def test_never_ready_fault_gives_a_replacement_node_that_stays_not_ready(moto: MotoServer, cluster: SandboxCluster) -> None:
    bridge = _start(moto, cluster)
    before = {n["metadata"]["name"] for n in cluster.store.iter(NODES)}
    cluster.faults.never_ready_nodes = 1
    victim = next(iter(bridge._instances))

    aws_client("autoscaling", moto.url, REGION).terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)

    assert cluster.wait_for(lambda: len(set(n["metadata"]["name"] for n in cluster.store.iter(NODES)) - before) == 1, 10)
    (newcomer,) = {n["metadata"]["name"] for n in cluster.store.iter(NODES)} - before
    time.sleep(10 * cluster.config.node_boot_seconds)
    node = cluster.store.get(NODES, None, newcomer)
    ready = podutil.condition(node, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "KubeletNotReady"
    assert {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert cluster.faults.never_ready_nodes == 0
    assert len(_ready_nodes(cluster)) == 4


def test_cluster_stop_stops_the_bridge(moto: MotoServer) -> None:
    cluster = _new_cluster()
    bridge = _start(moto, cluster, [NodeGroup(f"{cluster.name}-general", desired=1)])
    thread = bridge._thread
    assert thread is not None and thread.is_alive()

    cluster.stop()

    assert not thread.is_alive()
    assert bridge.errors == []


def test_an_instance_records_the_launch_template_version_it_was_launched_from(moto: MotoServer, cluster: SandboxCluster) -> None:
    # As AWS does: a group on "$Latest" launches from the newest version, and its older instances
    # keep reporting the version they came from (moto alone reports the template's current default).
    group = NodeGroup(f"{cluster.name}-lt", "m5.large", desired=1)
    network = provision_node_groups(moto.url, REGION, cluster.name, [group])
    ec2, autoscaling = aws_client("ec2", moto.url, REGION), aws_client("autoscaling", moto.url, REGION)
    template = network.launch_templates[group.name]
    ec2.create_launch_template_version(LaunchTemplateId=template, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-0fedcba987654321"})
    autoscaling.set_desired_capacity(AutoScalingGroupName=group.name, DesiredCapacity=2)
    instances = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])["AutoScalingGroups"][0]["Instances"]
    versions = sorted(i["LaunchTemplate"]["Version"] for i in instances)
    assert versions == ["1", "2"]
    images = {i["InstanceId"]: i["ImageId"] for r in ec2.describe_instances(InstanceIds=[i["InstanceId"] for i in instances])["Reservations"] for i in r["Instances"]}
    newest = next(i["InstanceId"] for i in instances if i["LaunchTemplate"]["Version"] == "2")
    assert images[newest] == "ami-0fedcba987654321"
