"""Rolling node replacement: the parameters and the plan (which nodes, in which batches). Pure."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from kube_maintenance.core.params import FieldReader, ParamError
from kube_maintenance.core.selectors import parse_label_selector

_PROVIDER_ID = re.compile(r"^aws:///(?P<zone>[^/]+)/(?P<instance>i-[0-9a-f]+)$")
__all__ = ["NodeReplacementParams", "ParamError", "Plan", "PlannedNode", "plan_replacement", "surge_placement_problems", "surge_problems"]
# Annotation we put on nodes we cordon, so a retry or a rollback knows the cordon was ours.
CORDONED_BY_ANNOTATION = "kube-maintenance.io/cordoned-by"


@dataclass(frozen=True)
class NodeReplacementParams:
    node_selector: str = ""
    min_node_age_hours: float = 0.0
    node_names: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    max_nodes: int = 10
    batch_size: int = 1
    surge: bool = False
    drain_timeout_seconds: int = 900
    pod_grace_period_seconds: int | None = None  # None: each pod's own terminationGracePeriodSeconds
    delete_emptydir_data: bool = False
    force_unmanaged_pods: bool = False
    replacement_timeout_seconds: int = 900
    validation_interval_seconds: int = 10
    validation_passes: int = 2  # consecutive healthy checks after a batch (kops validates twice)
    validation_timeout_seconds: int = 1800  # after the replacements are Ready
    include_control_plane: bool = False  # control-plane nodes are replaced only when named and this is on
    leave_eks_managed_nodes: bool = False  # nodes of EKS managed node groups left to EKS's own updates
    only_drifted: bool = False  # only nodes whose instance differs from what its group launches now
    protect_lone_workloads: bool = True  # scale up a Deployment whose every Ready pod the batch would evict (no PDB)
    # On a node that is not Ready: how long after their grace period pods still terminating are
    # waited for before they are left to the pod GC (kubectl drain --skip-wait-for-delete-timeout).
    skip_wait_for_delete_timeout_seconds: int = 120
    ignore_window: bool = False
    dry_run: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "NodeReplacementParams":
        """Validate a trigger form / conf; every problem is reported at once, naming the field."""
        read = FieldReader(raw, cls)
        params = cls(
            node_selector=read.selector("node_selector", example="role=worker"),
            min_node_age_hours=read.number("min_node_age_hours", 0),
            node_names=read.names("node_names", "node names"),
            exclude_nodes=read.names("exclude_nodes", "node names"),
            max_nodes=read.integer("max_nodes", 1, 1000),
            batch_size=read.integer("batch_size", 1, 100),
            surge=read.boolean("surge"),
            drain_timeout_seconds=read.integer("drain_timeout_seconds", 1, 24 * 3600),
            pod_grace_period_seconds=read.integer("pod_grace_period_seconds", 0, 3600, optional=True),
            delete_emptydir_data=read.boolean("delete_emptydir_data"),
            force_unmanaged_pods=read.boolean("force_unmanaged_pods"),
            replacement_timeout_seconds=read.integer("replacement_timeout_seconds", 1, 24 * 3600),
            validation_interval_seconds=read.integer("validation_interval_seconds", 0, 600),
            validation_passes=read.integer("validation_passes", 1, 10),
            validation_timeout_seconds=read.integer("validation_timeout_seconds", 1, 24 * 3600),
            skip_wait_for_delete_timeout_seconds=read.integer("skip_wait_for_delete_timeout_seconds", 0, 24 * 3600),
            include_control_plane=read.boolean("include_control_plane"),
            leave_eks_managed_nodes=read.boolean("leave_eks_managed_nodes"),
            only_drifted=read.boolean("only_drifted"),
            protect_lone_workloads=read.boolean("protect_lone_workloads"),
            ignore_window=read.boolean("ignore_window"),
            dry_run=read.boolean("dry_run"),
        )
        both = sorted(set(params.node_names) & set(params.exclude_nodes))
        read.check(not both, f"exclude_nodes: {both} are also in node_names")
        read.raise_if_problems()
        return params


@dataclass(frozen=True)
class PlannedNode:
    name: str
    instance_id: str
    zone: str
    created: str
    cordoned_before_run: bool
    asg: str | None = None
    drift: str = ""  # how its instance differs from what its group launches now (only_drifted runs)


@dataclass
class Plan:
    batches: list[list[PlannedNode]]
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it is not replaced
    ready_nodes_before: int = 0
    ready_by_group_before: dict[str, int] = field(default_factory=dict)
    desired_by_group_before: dict[str, int] = field(default_factory=dict)
    instances_by_group_before: dict[str, list[str]] = field(default_factory=dict)  # to tell new nodes apart
    unavailable_before: list[str] = field(default_factory=list)  # workloads already short before the run

    def to_xcom(self) -> dict[str, Any]:
        """What the later tasks need, and nothing that grows with the nodes left alone: ``skipped``
        (a reason for every node not chosen: 4,900 of them when 100 of 5,000 nodes are replaced,
        about 600 KB, pulled by every batch step) stays in the plan task's log."""
        return {
            "batches": [[asdict(n) for n in batch] for batch in self.batches],
            "ready_nodes_before": self.ready_nodes_before,
            "ready_by_group_before": self.ready_by_group_before,
            "desired_by_group_before": self.desired_by_group_before,
            "instances_by_group_before": self.instances_by_group_before,
            "unavailable_before": self.unavailable_before,
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> "Plan":
        return cls(
            batches=[[PlannedNode(**n) for n in batch] for batch in data["batches"]],
            skipped=dict(data.get("skipped") or {}),
            ready_nodes_before=int(data.get("ready_nodes_before", 0)),
            ready_by_group_before=dict(data.get("ready_by_group_before") or {}),
            desired_by_group_before=dict(data.get("desired_by_group_before") or {}),
            instances_by_group_before={g: list(i) for g, i in (data.get("instances_by_group_before") or {}).items()},
            unavailable_before=list(data.get("unavailable_before") or ()),
        )

    @property
    def nodes(self) -> list[PlannedNode]:
        return [n for batch in self.batches for n in batch]

    def surge_by_group(self, index: int) -> dict[str, int]:
        """Extra instances each group needs while batch ``index`` is drained (surge mode)."""
        out: dict[str, int] = {}
        for node in self.batches[index]:
            if node.asg:
                out[node.asg] = out.get(node.asg, 0) + 1
        return out


def surge_problems(plan: Plan, max_by_group: Mapping[str, int]) -> list[str]:
    """Groups whose MaxSize leaves no room to launch a batch's replacements first."""
    problems = []
    for index in range(len(plan.batches)):
        for group, extra in plan.surge_by_group(index).items():
            wanted = plan.desired_by_group_before.get(group, 0) + extra
            if wanted > max_by_group.get(group, 0):
                problems.append(
                    f"surge: batch {index + 1} needs {group} at {wanted} instances but its MaxSize is {max_by_group.get(group)}; "
                    "lower batch_size, raise the group's MaxSize, or replace in place (surge false)"
                )
    return sorted(set(problems))


def surge_placement_problems(plan: Plan, zone_subnets: Mapping[str, Mapping[str, str]], cannot_launch: Mapping[str, str]) -> list[str]:
    """Nodes whose replacement cannot be launched ahead of the drain in the node's own zone.

    A surge adds each replacement in the zone of the node it replaces and then removes that
    node, so every zone keeps its count and Auto Scaling has nothing to rebalance (a rebalance
    terminates instances nobody drained).
    """
    problems = []
    for node in plan.nodes:
        if not node.asg:
            continue
        if node.asg in cannot_launch:
            problems.append(f"surge: cannot launch a replacement for {node.name} in its own zone: group {node.asg}: {cannot_launch[node.asg]}; replace in place (surge false)")
        elif node.zone not in zone_subnets.get(node.asg, {}):
            zones = ", ".join(sorted(zone_subnets.get(node.asg, {}))) or "none"
            problems.append(
                f"surge: cannot launch a replacement for {node.name} in its zone {node.zone}: group {node.asg} has no subnet there "
                f"(its zones: {zones}); replace in place (surge false)"
            )
    return problems


def instance_of(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(zone, instance id) from ``spec.providerID`` (``aws:///us-east-1a/i-0abc``)."""
    m = _PROVIDER_ID.match(node.get("spec", {}).get("providerID", ""))
    return (m.group("zone"), m.group("instance")) if m else None


def is_node_ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions") or ())


def _created(node: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(node["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"
EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"


def not_ours_to_replace(node: Mapping[str, Any], params: NodeReplacementParams) -> str | None:
    """Why a node is left to someone else, or None: the control plane, Karpenter's nodes, EKS's."""
    labels = node["metadata"].get("labels") or {}
    name = node["metadata"]["name"]
    if any(label in labels for label in CONTROL_PLANE_LABELS) and not (params.include_control_plane and name in params.node_names):
        return "a control-plane node: replaced only when named in node_names with include_control_plane on"
    if KARPENTER_NODEPOOL_LABEL in labels:
        return f"owned by Karpenter (NodePool {labels[KARPENTER_NODEPOOL_LABEL]}): Karpenter replaces its own nodes"
    if EKS_NODEGROUP_LABEL in labels and params.leave_eks_managed_nodes:
        return f"in EKS managed node group {labels[EKS_NODEGROUP_LABEL]}, left to EKS (leave_eks_managed_nodes)"
    return None


def plan_replacement(
    nodes: list[Mapping[str, Any]],
    params: NodeReplacementParams,
    now: dt.datetime,
    max_batches: int = 10,
    unreplaceable: Mapping[str, str] | None = None,
) -> Plan:
    """Which nodes to replace, oldest first, in batches of ``batch_size`` (at most ``max_batches``).

    ``unreplaceable``: nodes found out of reach elsewhere (no Auto Scaling group), with why; they
    are skipped, and the plan takes others in their place. Raises ParamError for explicit node
    names that do not exist or are refused here, so a typo never silently shrinks the run.
    """
    unreplaceable = unreplaceable or {}
    by_name = {n["metadata"]["name"]: n for n in nodes}
    unknown = [n for n in params.node_names if n not in by_name]
    if unknown:
        raise ParamError(f"node_names: no such node(s) in the cluster: {', '.join(unknown)}")
    matches = parse_label_selector(params.node_selector)
    min_created = now - dt.timedelta(hours=params.min_node_age_hours)
    chosen: list[Mapping[str, Any]] = []
    skipped: dict[str, str] = {}
    candidates = [by_name[n] for n in params.node_names] if params.node_names else list(nodes)
    for node in candidates:
        name = node["metadata"]["name"]
        if name in params.exclude_nodes:
            skipped[name] = "excluded by the exclude_nodes parameter"
        elif not matches(node["metadata"].get("labels") or {}):
            skipped[name] = f"labels do not match {params.node_selector!r}"
        elif _created(node) > min_created:
            skipped[name] = f"younger than {params.min_node_age_hours:g}h"
        elif instance_of(node) is None:
            skipped[name] = f"spec.providerID {node.get('spec', {}).get('providerID')!r} is not an EC2 instance"
        elif why := not_ours_to_replace(node, params):
            skipped[name] = why
        elif name in unreplaceable:
            skipped[name] = unreplaceable[name]
        else:
            chosen.append(node)
    bad_explicit = [n for n in params.node_names if n in skipped and n not in params.exclude_nodes and n not in unreplaceable]
    if bad_explicit:
        raise ParamError("node_names: cannot replace " + "; ".join(f"{n} ({skipped[n]})" for n in bad_explicit))
    chosen.sort(key=lambda n: (n["metadata"]["creationTimestamp"], n["metadata"]["name"]))
    for node in chosen[params.max_nodes :]:
        skipped[node["metadata"]["name"]] = f"beyond max_nodes={params.max_nodes} for this run"
    chosen = chosen[: params.max_nodes]
    planned = []
    for node in chosen:
        zone, instance = instance_of(node)  # type: ignore[misc]
        planned.append(
            PlannedNode(
                name=node["metadata"]["name"],
                instance_id=instance,
                zone=zone,
                created=node["metadata"]["creationTimestamp"],
                cordoned_before_run=bool(node.get("spec", {}).get("unschedulable"))
                and CORDONED_BY_ANNOTATION not in (node["metadata"].get("annotations") or {}),
            )
        )
    batches = [planned[i : i + params.batch_size] for i in range(0, len(planned), params.batch_size)]
    if len(batches) > max_batches:
        raise ParamError(
            f"max_nodes / batch_size: {len(planned)} nodes in batches of {params.batch_size} need {len(batches)} batches, "
            f"but this DAG runs at most {max_batches} (max_batches in the registry); raise batch_size or lower max_nodes"
        )
    ready = sum(1 for n in nodes if is_node_ready(n))
    return Plan(batches=batches, skipped=skipped, ready_nodes_before=ready)
