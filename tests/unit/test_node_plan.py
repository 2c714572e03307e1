"""Which nodes a replacement run picks, and how it batches them."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from kube_maintenance.node_replacement.plan import CORDONED_BY_ANNOTATION, NodeReplacementParams, ParamError, Plan, PlannedNode, plan_replacement, surge_placement_problems, surge_problems

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


def node(name: str, age_hours: float, labels: dict | None = None, unschedulable: bool = False, provider: str | None = "auto", annotations: dict | None = None) -> dict:
    created = (NOW - dt.timedelta(hours=age_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spec: dict = {"unschedulable": True} if unschedulable else {}
    if provider == "auto":
        spec["providerID"] = f"aws:///us-east-1a/i-{abs(hash(name)) % 10**12:012x}"
    elif provider:
        spec["providerID"] = provider
    return {
        "metadata": {"name": name, "creationTimestamp": created, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


NODES = [
    node("n-old", 500, {"role": "worker"}),
    node("n-mid", 200, {"role": "worker"}),
    node("n-new", 2, {"role": "worker"}),
    node("n-db", 900, {"role": "db"}),
    node("n-hand", 300, {"role": "worker"}, unschedulable=True),
]


def params(**kw: object) -> NodeReplacementParams:
    return NodeReplacementParams.from_mapping(kw)


def names(plan) -> list[list[str]]:
    return [[n.name for n in b] for b in plan.batches]


def test_oldest_first_by_selector_and_age_in_batches() -> None:
    plan = plan_replacement(NODES, params(node_selector="role=worker", min_node_age_hours=24, batch_size=2), NOW)
    assert names(plan) == [["n-old", "n-hand"], ["n-mid"]]
    assert plan.skipped["n-new"] == "younger than 24h"
    assert "do not match" in plan.skipped["n-db"]
    assert plan.ready_nodes_before == 5


def test_hand_cordoned_nodes_are_marked_so_they_stay_cordoned() -> None:
    plan = plan_replacement(NODES, params(node_names=["n-hand", "n-old"]), NOW)
    by_name = {n.name: n for n in plan.nodes}
    assert by_name["n-hand"].cordoned_before_run and not by_name["n-old"].cordoned_before_run
    ours = node("n-ours", 300, unschedulable=True, annotations={CORDONED_BY_ANNOTATION: "dag/run"})
    assert not plan_replacement([ours], params(), NOW).nodes[0].cordoned_before_run


def test_max_nodes_exclusions_and_explicit_names() -> None:
    plan = plan_replacement(NODES, params(max_nodes=2, exclude_nodes=["n-db"]), NOW)
    assert names(plan) == [["n-old"], ["n-hand"]]
    assert plan.skipped["n-db"].startswith("excluded")
    assert "beyond max_nodes=2" in plan.skipped["n-mid"]


def test_a_plan_needing_more_batches_than_the_dag_has_is_refused() -> None:
    plan = plan_replacement(NODES, params(max_nodes=4, batch_size=2), NOW, max_batches=2)
    assert len(plan.batches) == 2
    with pytest.raises(ParamError, match="5 nodes in batches of 1 need 5 batches, but this DAG runs at most 3"):
        plan_replacement(NODES, params(max_nodes=10, batch_size=1), NOW, max_batches=3)


def test_unknown_or_unreplaceable_explicit_nodes_fail_loudly() -> None:
    with pytest.raises(ParamError, match="no such node.*n-typo"):
        plan_replacement(NODES, params(node_names=["n-old", "n-typo"]), NOW)
    with pytest.raises(ParamError, match="cannot replace n-new .younger than 24h"):
        plan_replacement(NODES, params(node_names=["n-new"], min_node_age_hours=24), NOW)
    kind = node("kind-node", 100, provider="kind://docker/kind/kind-node")
    with pytest.raises(ParamError, match="not an EC2 instance"):
        plan_replacement([kind], params(node_names=["kind-node"]), NOW)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"batch_size": 0}, "batch_size: must be between 1 and 100, got 0"),
        ({"batch_size": "two"}, "batch_size: expected a whole number"),
        ({"max_nodes": 2.5}, "max_nodes: expected a whole number"),
        ({"node_selector": "role in (a"}, "node_selector: invalid label selector"),
        ({"dry_run": "yes"}, "dry_run: expected true or false"),
        ({"min_node_age_hours": -1}, "min_node_age_hours"),
        ({"node_names": ["a"], "exclude_nodes": ["a"]}, "exclude_nodes: ['a'] are also in node_names"),
    ],
)
def test_bad_parameters_say_what_to_fix(raw: dict, message: str) -> None:
    with pytest.raises(ParamError) as err:
        params(**raw)
    assert message in str(err.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ParamError) as err:
        params(batch_size=0, max_nodes=0)
    assert "batch_size" in str(err.value) and "max_nodes" in str(err.value)


def test_surge_needs_room_under_each_group_maxsize() -> None:
    def planned(name: str, asg: str) -> PlannedNode:
        return PlannedNode(name, f"i-{name}", "z", "t", False, asg)

    plan = Plan(batches=[[planned("a", "general"), planned("b", "general")], [planned("c", "batch")]], desired_by_group_before={"general": 4, "batch": 2})
    assert plan.surge_by_group(0) == {"general": 2} and plan.surge_by_group(1) == {"batch": 1}
    assert surge_problems(plan, {"general": 6, "batch": 3}) == []
    problems = surge_problems(plan, {"general": 5, "batch": 3})
    assert problems == ["surge: batch 1 needs general at 6 instances but its MaxSize is 5; lower batch_size, raise the group's MaxSize, or replace in place (surge false)"]


def test_surge_launches_only_where_the_nodes_zone_has_a_subnet_of_its_group() -> None:
    plan = Plan(batches=[[PlannedNode("a", "i-a", "eu-west-1a", "t", False, "general"), PlannedNode("b", "i-b", "eu-west-1c", "t", False, "general")], [PlannedNode("c", "i-c", "eu-west-1a", "t", False, "spot")]])
    zones = {"general": {"eu-west-1a": "subnet-a", "eu-west-1b": "subnet-b"}, "spot": {"eu-west-1a": "subnet-a"}}
    problems = surge_placement_problems(plan, zones, {"spot": "it mixes instance types"})
    assert problems == [
        "surge: cannot launch a replacement for b in its zone eu-west-1c: group general has no subnet there (its zones: eu-west-1a, eu-west-1b); replace in place (surge false)",
        "surge: cannot launch a replacement for c in its own zone: group spot: it mixes instance types; replace in place (surge false)",
    ]
    assert surge_placement_problems(plan, {**zones, "general": {**zones["general"], "eu-west-1c": "subnet-c"}}, {}) == []


def test_nodes_others_replace_are_left_to_them() -> None:
    control = node("cp-1", 900, labels={"node-role.kubernetes.io/control-plane": ""})
    karpenter = node("kp-1", 900, labels={"karpenter.sh/nodepool": "default"})
    eks = node("mng-1", 900, labels={"eks.amazonaws.com/nodegroup": "general"})
    worker = node("w-1", 900)
    nodes = [control, karpenter, eks, worker]
    the_plan = plan_replacement(nodes, NodeReplacementParams(max_nodes=10), NOW)
    assert [n.name for n in the_plan.nodes] == ["mng-1", "w-1"]
    assert "control-plane" in the_plan.skipped["cp-1"] and "Karpenter" in the_plan.skipped["kp-1"]
    left_to_eks = plan_replacement(nodes, NodeReplacementParams(max_nodes=10, leave_eks_managed_nodes=True), NOW)
    assert [n.name for n in left_to_eks.nodes] == ["w-1"] and "left to EKS" in left_to_eks.skipped["mng-1"]
    # A control-plane node only when named and allowed; named without the flag, the run is refused.
    with pytest.raises(ParamError, match="cp-1 \\(a control-plane node"):
        plan_replacement(nodes, NodeReplacementParams(node_names=("cp-1",)), NOW)
    named = plan_replacement(nodes, NodeReplacementParams(node_names=("cp-1",), include_control_plane=True), NOW)
    assert [n.name for n in named.nodes] == ["cp-1"]


def test_a_node_outside_any_auto_scaling_group_is_skipped_and_another_takes_its_place() -> None:
    nodes = [node("a", 900), node("b", 800), node("c", 700)]
    the_plan = plan_replacement(nodes, NodeReplacementParams(max_nodes=2), NOW, unreplaceable={"a": "not in an Auto Scaling group"})
    assert [n.name for n in the_plan.nodes] == ["b", "c"] and the_plan.skipped["a"] == "not in an Auto Scaling group"
    # Named explicitly, it is skipped with its reason too: the run does the rest, it does not fail.
    named = plan_replacement(nodes, NodeReplacementParams(node_names=("a", "b")), NOW, unreplaceable={"a": "not in an Auto Scaling group"})
    assert [n.name for n in named.nodes] == ["b"]


def test_drift_is_any_difference_from_what_the_group_launches_now() -> None:
    from kube_maintenance.node_replacement.drift import GroupTemplate, LaunchedInstance, drift_reasons

    now = GroupTemplate("lt-1", "3", "ami-new", "m5.large")
    assert drift_reasons(LaunchedInstance("lt-1", "3", "ami-new", "m5.large"), now) == []
    assert drift_reasons(LaunchedInstance("lt-1", "2", "ami-old", "m5.large"), now) == [
        "launch template version 2, the group now launches version 3",
        "AMI ami-old, the template's is ami-new",
    ]
    assert drift_reasons(LaunchedInstance("lt-0", "9", "ami-new", "m5.large"), now) == ["launch template lt-0, the group now launches lt-1"]
    assert drift_reasons(LaunchedInstance("lt-1", "3", "ami-new", "c5.large"), now) == ["instance type c5.large, the template's is m5.large"]
    # A group mixing instance types (no single type to compare) never calls the type drift.
    assert drift_reasons(LaunchedInstance("lt-1", "3", "ami-new", "c5.large"), GroupTemplate("lt-1", "3", "ami-new", None)) == []


def test_the_plans_xcom_does_not_grow_with_the_nodes_left_alone() -> None:
    """100 of 5,000 nodes replaced: the plan's XCom, which every batch step pulls, stays well under
    64 KB (issue 10's target) and keeps what the batches need; the reasons for the 4,900 nodes left
    alone are in the plan task's log, not carried (with them: about 600 KB, against 20 KB)."""
    nodes = [
        node(f"ip-10-250-{i // 250}-{i % 250 + 1}.eu-west-1.compute.internal", 1000 - i / 10, {"karpenter.sh/nodepool": "default"} if i >= 110 else {})
        for i in range(5000)
    ]
    the_plan = plan_replacement(nodes, params(max_nodes=100, batch_size=10), NOW, 10)
    assert len(the_plan.nodes) == 100 and len(the_plan.skipped) == 4900
    data = the_plan.to_xcom()
    assert len(json.dumps(data)) < 64 * 1024
    again = Plan.from_xcom(json.loads(json.dumps(data)))
    assert again.batches == the_plan.batches and again.ready_nodes_before == 5000
