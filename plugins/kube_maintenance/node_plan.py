"""Rolling node replacement: the parameters and the plan (which nodes, in which batches). Pure."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .selectors import SelectorError, parse_label_selector

_PROVIDER_ID = re.compile(r"^aws:///(?P<zone>[^/]+)/(?P<instance>i-[0-9a-f]+)$")
# Annotation we put on nodes we cordon, so a retry or a rollback knows the cordon was ours.
CORDONED_BY_ANNOTATION = "kube-maintenance.io/cordoned-by"


class ParamError(ValueError):
    """A parameter is wrong; the message says which and how to fix it."""


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
    ignore_window: bool = False
    dry_run: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "NodeReplacementParams":
        """Validate a trigger form / conf; every problem is reported at once, naming the field."""
        problems: list[str] = []

        def as_int(key: str, low: int, high: int | None = None, optional: bool = False) -> Any:
            value = raw.get(key)
            if value is None or value == "":
                if optional:
                    return None
                value = getattr(cls, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                problems.append(f"{key}: expected a whole number, got {value!r}")
                return getattr(cls, key)
            try:
                number = int(value)
                if float(value) != number:
                    raise ValueError
            except ValueError:
                problems.append(f"{key}: expected a whole number, got {value!r}")
                return getattr(cls, key)
            if number < low or (high is not None and number > high):
                problems.append(f"{key}: must be between {low} and {high}, got {number}" if high is not None else f"{key}: must be at least {low}, got {number}")
            return number

        def as_names(key: str) -> tuple[str, ...]:
            value = raw.get(key) or ()
            if isinstance(value, str):
                value = [v.strip() for v in value.replace("\n", ",").split(",")]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                problems.append(f"{key}: expected a list of node names")
                return ()
            return tuple(v for v in value if v)

        def as_bool(key: str) -> bool:
            value = raw.get(key, getattr(cls, key))
            if not isinstance(value, bool):
                problems.append(f"{key}: expected true or false, got {value!r}")
                return bool(getattr(cls, key))
            return value

        selector = raw.get("node_selector") or ""
        if not isinstance(selector, str):
            problems.append("node_selector: expected a label selector string such as 'role=worker'")
            selector = ""
        else:
            try:
                parse_label_selector(selector)
            except SelectorError as exc:
                problems.append(f"node_selector: {exc}")
        age = raw.get("min_node_age_hours", 0) or 0
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            problems.append(f"min_node_age_hours: expected a number of hours >= 0, got {age!r}")
            age = 0
        params = cls(
            node_selector=selector,
            min_node_age_hours=float(age),
            node_names=as_names("node_names"),
            exclude_nodes=as_names("exclude_nodes"),
            max_nodes=as_int("max_nodes", 1, 1000),
            batch_size=as_int("batch_size", 1, 100),
            surge=as_bool("surge"),
            drain_timeout_seconds=as_int("drain_timeout_seconds", 1, 24 * 3600),
            pod_grace_period_seconds=as_int("pod_grace_period_seconds", 0, 3600, optional=True),
            delete_emptydir_data=as_bool("delete_emptydir_data"),
            force_unmanaged_pods=as_bool("force_unmanaged_pods"),
            replacement_timeout_seconds=as_int("replacement_timeout_seconds", 1, 24 * 3600),
            validation_interval_seconds=as_int("validation_interval_seconds", 0, 600),
            ignore_window=as_bool("ignore_window"),
            dry_run=as_bool("dry_run"),
        )
        if params.surge:
            problems.append("surge: launching replacements before draining is not supported yet; set surge to false (replace in place)")
        if set(params.node_names) & set(params.exclude_nodes):
            problems.append(f"exclude_nodes: {sorted(set(params.node_names) & set(params.exclude_nodes))} are also in node_names")
        if problems:
            raise ParamError("invalid parameters:\n- " + "\n- ".join(problems))
        return params


@dataclass(frozen=True)
class PlannedNode:
    name: str
    instance_id: str
    zone: str
    created: str
    cordoned_before_run: bool
    asg: str | None = None


@dataclass
class Plan:
    batches: list[list[PlannedNode]]
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it is not replaced
    ready_nodes_before: int = 0
    ready_by_group_before: dict[str, int] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "batches": [[asdict(n) for n in batch] for batch in self.batches],
            "skipped": self.skipped,
            "ready_nodes_before": self.ready_nodes_before,
            "ready_by_group_before": self.ready_by_group_before,
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> "Plan":
        return cls(
            batches=[[PlannedNode(**n) for n in batch] for batch in data["batches"]],
            skipped=dict(data.get("skipped") or {}),
            ready_nodes_before=int(data.get("ready_nodes_before", 0)),
            ready_by_group_before=dict(data.get("ready_by_group_before") or {}),
        )

    @property
    def nodes(self) -> list[PlannedNode]:
        return [n for batch in self.batches for n in batch]


def instance_of(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(zone, instance id) from ``spec.providerID`` (``aws:///us-east-1a/i-0abc``)."""
    m = _PROVIDER_ID.match(node.get("spec", {}).get("providerID", ""))
    return (m.group("zone"), m.group("instance")) if m else None


def is_node_ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions") or ())


def _created(node: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(node["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def plan_replacement(nodes: list[Mapping[str, Any]], params: NodeReplacementParams, now: dt.datetime, max_batches: int = 10) -> Plan:
    """Which nodes to replace, oldest first, in batches of ``batch_size`` (at most ``max_batches``).

    Raises ParamError for explicit node names that do not exist or cannot be replaced, so a typo
    never silently shrinks the run.
    """
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
        else:
            chosen.append(node)
    bad_explicit = [n for n in params.node_names if n in skipped and n not in params.exclude_nodes]
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
