"""Rolling node replacement: the work each task of the DAG does.

plan -> preflight (health, lock) -> per batch: cordon -> drain -> terminate -> wait for the
replacement -> validate -> next batch; rollback (uncordon what was not terminated) on failure;
release the lock and summarise at the end. Every step is safe to retry or re-run:
- cordon marks nodes with an annotation saying which run cordoned them and when, so the drain
  deadline survives reschedules and a rollback uncordons only what this run cordoned;
- terminate asks EC2 first and never terminates an instance twice or one not in the plan;
- waits defer to the triggerer (``batches.ReplaceBatchOperator``): no worker slot is held while
  nodes drain or boot or the cluster settles; a waiting step says what its trigger should watch.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
from dataclasses import replace
from typing import Any, Mapping

from kube_maintenance.node_replacement import drain as drain_rules
from kube_maintenance.node_replacement import projections
from kube_maintenance.node_replacement.health import health_report, preflight_report, unavailable_workloads
from kube_maintenance.core.cloud import GONE_STATES
from kube_maintenance.core.k8s import DAEMONSETS, DEPLOYMENTS, NODES, PDBS, PODS, REPLICASETS, STATEFULSETS, STRATEGIC_MERGE_PATCH
from kube_maintenance.node_replacement.protect import REPLICAS_BEFORE_ANNOTATION, SCALED_BY_ANNOTATION, needs_a_spare, ready_pods_elsewhere, scale_back_to
from kube_maintenance.core.selectors import selector_string
from kube_maintenance.node_replacement.node_ops import drain_pass
from kube_maintenance.node_replacement.views import (
    READY, health_view, joining_nodes_view, nodes_of_instances, problems_in, ready_instances_of, ready_nodes_not_tracked, unavailable_in,
)
from kube_maintenance.node_replacement.plan import (
    CORDONED_BY_ANNOTATION,
    NodeReplacementParams,
    ParamError,
    Plan,
    PlannedNode,
    instance_of,
    is_node_ready,
    plan_replacement,
    surge_placement_problems,
    surge_problems,
)
from kube_maintenance.core.forms import run_conf
from kube_maintenance.core.registry import load_registry
from kube_maintenance.core.runtime import TaskRuntime, begin_run, drop_lock, fail, fail_if_steps_failed, renew_lock, runtime_for, skip, take_lock

log = logging.getLogger("kube_maintenance.node_replacement")

OPERATION = "node_replacement"
CORDONED_AT_ANNOTATION = "kube-maintenance.io/cordoned-at"
# What the node was before this run cordoned it ("true": cordoned already, by hand or by a run that
# died): kept on the node itself, so a cleanup restores exactly that, whatever ended the run.
UNSCHEDULABLE_BEFORE_ANNOTATION = "kube-maintenance.io/unschedulable-before"
# Set just before the instance is terminated: the cleanup leaves such a node to its fate.
TERMINATING_ANNOTATION = "kube-maintenance.io/terminating-instance"
# The cluster autoscaler leaves a node with this annotation alone; the run marks the plan's nodes
# and the new ones that join for it, and removes only the marks it added (SCALE_DOWN_MARKED_BY).
SCALE_DOWN_DISABLED_ANNOTATION = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
SCALE_DOWN_MARKED_BY_ANNOTATION = "kube-maintenance.io/scale-down-disabled-by"
# Auto Scaling processes that could replace or rebalance instances behind the run's back (Launch
# and Terminate keep working: the replacements need them). What the run suspends is written on
# the group itself (a tag: "<holder> <process,...>") so a retry, a cleanup or the next run after a
# dead one resumes exactly that and nothing suspended before.
SUSPENDED_PROCESSES = ("AZRebalance", "InstanceRefresh", "ScheduledActions")
SUSPENDED_BY_TAG = "kube-maintenance.io/suspended-processes"
PENDING_GRACE_SECONDS = 300.0
# A poke watches evicted pods go for at most this long, then frees its worker slot.


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _raw_params(cluster_name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    return run_conf(context, load_registry().cluster(cluster_name).operation(OPERATION).get("defaults"))


def _params(cluster_name: str, context: Mapping[str, Any]) -> tuple[NodeReplacementParams, TaskRuntime]:
    raw = _raw_params(cluster_name, context)
    try:
        params = NodeReplacementParams.from_mapping(raw)
    except ParamError as exc:
        fail(str(exc))
    return params, runtime_for(cluster_name, context, params.dry_run)


def _plan_from(context: Mapping[str, Any]) -> Plan:
    data = context["ti"].xcom_pull(task_ids="plan", key="plan")
    if not data:
        fail("no plan: the plan task produced nothing")
    return Plan.from_xcom(data["plan"])


# ----------------------------------------------------------------------------------------------- plan
def plan(cluster_name: str, max_batches: int = 10, **context: Any) -> list[dict[str, Any]]:
    params, rt = _params(cluster_name, context)
    begin_run(rt, params)
    now = _now()
    nodes, _ = rt.kube.list(NODES, project=projections.node)
    params = _without_nodes_already_gone(rt, params, {n["metadata"]["name"] for n in nodes})
    # Which Auto Scaling group each instance is in (needed to wait for the right replacement). A
    # node outside any is skipped with the reason and another takes its place: plan again, at most
    # once per such node.
    unreplaceable: dict[str, str] = {}
    drifted: dict[str, list[str]] = {}
    if params.only_drifted:
        # Every node the filters allow, judged at once; those up to date are left alone.
        everyone = len(nodes) or 1
        try:
            candidates = plan_replacement(nodes, replace(params, max_nodes=everyone, batch_size=everyone), now, 1)
        except ParamError as exc:
            fail(str(exc))
        drifted = rt.cloud.drift([n.instance_id for n in candidates.nodes])
        for n in candidates.nodes:
            if n.instance_id in drifted and not drifted[n.instance_id]:
                unreplaceable[n.name] = "not drifted: its instance is what its Auto Scaling group launches now"
    states: dict[str, Any] = {}
    while True:
        try:
            the_plan = plan_replacement(nodes, params, now, max_batches, unreplaceable)
        except ParamError as exc:
            fail(str(exc))
        states.update(rt.cloud.instance_states([n.instance_id for n in the_plan.nodes if n.instance_id not in states]))
        outside = {n.name: n.instance_id for n in the_plan.nodes if states[n.instance_id].asg is None or states[n.instance_id].gone}
        if not outside:
            break
        for name, instance in outside.items():
            unreplaceable[name] = f"instance {instance} is not running in an Auto Scaling group: nothing would replace it"
    for name, why in sorted(unreplaceable.items()):
        rt.audit.record("plan-skip", f"node/{name}", after="left alone", outcome="skipped", why=why)
    the_plan.batches = [
        [replace(n, asg=states[n.instance_id].asg, drift="; ".join(drifted.get(n.instance_id, []))) for n in batch] for batch in the_plan.batches
    ]
    groups = sorted({n.asg for n in the_plan.nodes if n.asg})
    described = rt.cloud.groups(groups)
    ready_instances = _ready_instances(nodes)
    the_plan.ready_by_group_before = {
        g: sum(1 for i in described.get(g, {}).get("Instances", []) if i["InstanceId"] in ready_instances) for g in groups
    }
    the_plan.desired_by_group_before = {g: int(described.get(g, {}).get("DesiredCapacity", 0)) for g in groups}
    the_plan.instances_by_group_before = {g: sorted(i["InstanceId"] for i in described.get(g, {}).get("Instances", [])) for g in groups}
    the_plan.unavailable_before = sorted(unavailable_workloads(*_workloads(rt)))
    if the_plan.unavailable_before:
        log.info("not fully available before the run (validation will not wait for them): %s", ", ".join(the_plan.unavailable_before[:20]))
    if params.surge:
        problems = surge_problems(the_plan, {g: int(described.get(g, {}).get("MaxSize", 0)) for g in groups})
        cannot_launch = {g: why for g in groups if (why := rt.cloud.launch_template_of(described.get(g, {}))[1])}
        problems += surge_placement_problems(the_plan, rt.cloud.zone_subnets(list(described.values())), cannot_launch)
        if problems:
            fail("\n".join(problems))
    for i, batch in enumerate(the_plan.batches, start=1):
        for node in batch:
            target = f"node/{node.name}"
            detail = {"batch": i, "instance": node.instance_id, "asg": node.asg, "created": node.created}
            if node.drift:
                detail["drift"] = node.drift
            rt.audit.record("plan-replace", target, before={"instance": node.instance_id}, after="replaced by its Auto Scaling group", outcome="planned", **detail)
    for name, why in sorted(the_plan.skipped.items()):
        log.info("not replacing %s: %s", name, why)
    log.info(
        "plan for %s: %d node(s) in %d batch(es) of at most %d: %s",
        rt.cluster.name,
        len(the_plan.nodes),
        len(the_plan.batches),
        params.batch_size,
        [[n.name for n in b] for b in the_plan.batches],
    )
    context["ti"].xcom_push(key="plan", value={"plan": the_plan.to_xcom(), "dry_run": params.dry_run})
    # What the batch task is mapped over: one entry per batch, named by its nodes in the grid.
    return [batch_label(i, [n.name for n in batch]) for i, batch in enumerate(the_plan.batches)]


def batch_label(index: int, nodes: list[str]) -> dict[str, Any]:
    """One batch as the mapped ``batch`` task sees it: its index, and a label for the grid."""
    names = ", ".join(n.split(".")[0] for n in nodes)
    label = f"batch {index + 1}: {names}"
    return {"index": index, "label": label if len(label) <= 120 else label[:117] + "..."}


def _without_nodes_already_gone(rt: TaskRuntime, params: NodeReplacementParams, existing: set[str]) -> NodeReplacementParams:
    """A named node that no longer exists because its instance was terminated (by this run before
    it was cleared and run again, say) has been replaced: say so and leave it out. A name EC2 never
    knew stays in, for the plan to refuse (a typo must not silently do nothing)."""
    missing = [n for n in params.node_names if n not in existing]
    if not missing:
        return params
    gone = {name: instance for name, (instance, state) in rt.cloud.instances_by_dns_name(missing).items() if state in GONE_STATES}
    for name, instance in sorted(gone.items()):
        rt.audit.record("plan-skip", f"node/{name}", after="already gone", outcome="skipped", why=f"its instance {instance} is terminated: replaced already")
    if gone and len(gone) == len(params.node_names):
        skip(f"nothing to replace: {', '.join(sorted(gone))} already gone (instances terminated)")
    return replace(params, node_names=tuple(n for n in params.node_names if n not in gone))


def _ready_instances(nodes: list[Mapping[str, Any]]) -> set[str]:
    """EC2 instance ids of the Ready nodes."""
    return {ids[1] for n in nodes if is_node_ready(n) and (ids := instance_of(n))}


# ------------------------------------------------------------------------------------------ preflight
def preflight(cluster_name: str, max_batches: int = 10, **context: Any) -> str:
    params, rt = _params(cluster_name, context)
    the_plan = _plan_from(context)
    if not the_plan.nodes:
        skip("nothing to replace")
    nodes, _ = rt.kube.list(NODES, project=projections.node)
    pods, _ = rt.kube.list(PODS, field_selector="status.phase=Pending", project=projections.pod)
    report = preflight_report(nodes, pods, {n.name for n in the_plan.nodes}, _now(), PENDING_GRACE_SECONDS)
    for note in report.notes:
        log.info(note)
    stops = [] if report.healthy else [f"cluster {rt.cluster.name} is not healthy enough to disrupt: {report.summary()}"]
    # Pods a drain would refuse (unmanaged, emptyDir) are known now: say so before cordoning anything.
    opts = drain_rules.DrainOptions(params.delete_emptydir_data, params.force_unmanaged_pods)
    for planned in the_plan.nodes:
        on_node, _ = rt.kube.list(PODS, field_selector=f"spec.nodeName={planned.name}")
        message = drain_rules.refusal_message(planned.name, drain_rules.decide_all(on_node, opts))
        if message:
            stops.append(message)
    if stops and not params.dry_run:
        fail("\n".join(stops))
    if stops:
        # A dry run shows the whole plan, blockers included, rather than failing on the first.
        rt.audit.record("preflight-stop", f"cluster/{rt.cluster.name}", after="a real run would stop here, before any change", problems=stops)
        log.warning("a real run would stop in preflight:\n%s", "\n".join(stops))
        context["ti"].xcom_push(key="would_stop", value=stops)
    if params.dry_run and params.protect_lone_workloads:
        for i, batch in enumerate(the_plan.batches):
            _scale_up_lone_deployments(rt, {n.name for n in batch}, i, dry_run=True)
    outcome = take_lock(rt, params.dry_run)
    _suspend_autoscaling_processes(rt, sorted({n.asg for n in the_plan.nodes if n.asg}), params.dry_run)
    if params.dry_run:
        skip("dry run: plan logged, nothing changed" + ("; a real run would stop in preflight (see above)" if stops else ""))
    planned = {n.name for n in the_plan.nodes}
    _disable_scale_down(rt, [n for n in nodes if n["metadata"]["name"] in planned])
    return outcome


def _suspend_autoscaling_processes(rt: TaskRuntime, groups: list[str], dry_run: bool) -> None:
    """Suspend, for the run, the processes that could replace or rebalance instances behind it;
    what was suspended before is left as it is (and never resumed by this run)."""
    described = rt.cloud.groups(groups)
    for group in groups:
        info = described.get(group, {})
        already = sorted(p["ProcessName"] for p in info.get("SuspendedProcesses") or ())
        record = {t["Key"]: t["Value"] for t in info.get("Tags") or ()}.get(SUSPENDED_BY_TAG, "")
        # A record is this run's (a retry) or a dead run's (this run holds the lock now): either
        # way, what it lists is this run's to resume.
        recorded = [p for p in record.partition(" ")[2].split(",") if p]
        to_suspend = [p for p in SUSPENDED_PROCESSES if p not in already]
        ours = sorted(set(recorded) | set(to_suspend))
        left_alone = [p for p in already if p not in ours]
        if not dry_run:
            if ours and record != f"{rt.holder} {','.join(ours)}":
                rt.cloud.tag_group(group, SUSPENDED_BY_TAG, f"{rt.holder} {','.join(ours)}")  # first the record, then the change
            if to_suspend:
                rt.cloud.suspend_processes(group, to_suspend)
        rt.audit.record(
            "suspend-processes", f"asg/{group}", before={"suspended": already}, after={"suspended": sorted(set(already) | set(ours))},
            suspended_by_this_run=ours, suspended_before_and_left_alone=left_alone,
        )


def _resume_autoscaling_processes(rt: TaskRuntime, groups: list[str]) -> dict[str, list[str]]:
    """Resume exactly what this run (or the dead run it took over from) suspended."""
    resumed: dict[str, list[str]] = {}
    described = rt.cloud.groups(groups)
    for group in groups:
        record = {t["Key"]: t["Value"] for t in described.get(group, {}).get("Tags") or ()}.get(SUSPENDED_BY_TAG, "")
        holder, _, listed = record.partition(" ")
        if holder != rt.holder:
            continue  # not this run's record (none, or a later run's): nothing of ours to resume
        ours = [p for p in listed.split(",") if p]
        if ours:
            rt.cloud.resume_processes(group, ours)
        rt.cloud.untag_group(group, SUSPENDED_BY_TAG)
        rt.audit.record("resume-processes", f"asg/{group}", before={"suspended_by_this_run": ours}, after="resumed")
        resumed[group] = ours
    return resumed


def _disable_scale_down(rt: TaskRuntime, nodes: list[Mapping[str, Any]]) -> None:
    """Keep the cluster autoscaler away from these nodes while the run needs them; a mark someone
    else put there stays theirs."""
    for node in nodes:
        name = node["metadata"]["name"]
        annotations = node["metadata"].get("annotations") or {}
        marked_by = annotations.get(SCALE_DOWN_MARKED_BY_ANNOTATION)
        if marked_by == rt.holder:
            continue  # marked by an earlier try of this run
        if marked_by is None and annotations.get(SCALE_DOWN_DISABLED_ANNOTATION) == "true":
            continue  # someone else's mark: left as it is, and never removed
        # Unmarked, or marked by a run that died (this run holds the lock now): this run's mark.
        patch = {"metadata": {"annotations": {SCALE_DOWN_DISABLED_ANNOTATION: "true", SCALE_DOWN_MARKED_BY_ANNOTATION: rt.holder}}}
        rt.kube.patch(NODES, name, patch, content_type=STRATEGIC_MERGE_PATCH)
        rt.audit.record("disable-scale-down", f"node/{name}", before=annotations.get(SCALE_DOWN_DISABLED_ANNOTATION), after="true")


def _new_nodes(view: Mapping[str, Any], the_plan: Plan, groups: list[str], group_instances: Mapping[str, list[Mapping[str, Any]]]) -> list[str]:
    """Ready nodes whose instance joined these groups since the plan (surge and replacement nodes),
    by name, as a joining-nodes view (``views``) knows them."""
    before = {i for g in groups for i in the_plan.instances_by_group_before.get(g, [])}
    joined = {i["InstanceId"] for g in groups for i in group_instances.get(g, []) if i["InstanceId"] not in before}
    return nodes_of_instances(view, joined & ready_instances_of(view))


def _members_not_ready(view: Mapping[str, Any], members: list[Mapping[str, Any]], replaced: set[str]) -> str:
    """The group's members not replaced and not Ready yet, for the log line of a wait ("; i-1
    (InService): no node yet, i-2 (InService): node x NotReady"): which instance to look at when a
    replacement does not come."""
    nodes = {instance: (name, judged) for name, (instance, judged) in view["nodes"].items() if instance}
    waiting = []
    for member in members:
        instance = member["InstanceId"]
        name, judged = nodes.get(instance, ("", ""))
        if instance in replaced or judged == READY:
            continue
        waiting.append(f"{instance} ({member.get('LifecycleState', '?')}): " + (f"node {name} {judged}" if name else "no node yet"))
    return "; " + ", ".join(waiting) if waiting else ""


def _nodes_named(rt: TaskRuntime, names: list[str]) -> list[Mapping[str, Any]]:
    """These Nodes as they are now (those that still exist)."""
    return [node for name in names if (node := rt.kube.get_or_none(NODES, name)) is not None]


def _run_started(context: Mapping[str, Any]) -> dt.datetime | None:
    started = getattr(context.get("dag_run"), "start_date", None)
    if not isinstance(started, dt.datetime):
        return None
    return started if started.tzinfo else started.replace(tzinfo=dt.timezone.utc)


def _joining_nodes(rt: TaskRuntime, context: Mapping[str, Any], instances: set[str]) -> dict[str, Any]:
    """The nodes a wait for joining nodes may count (``views.joining_nodes_view``: those of
    ``instances``, those not Ready, those created since the run started), as the step's trigger
    kept them current since its first look. Listed on the first look, and again whenever no trigger
    kept the view since (its watch failed: e.g. its resourceVersion expired; or the step was not
    resumed by its trigger): a view nobody kept current is never counted from."""
    state = batch_state(context)
    view = state.get("nodes_view")
    if view is None or (state.get("woken_by") or {}).get("view_kept") != "nodes_view":
        nodes, resource_version = rt.kube.list(NODES, project=projections.node_joining)
        view = joining_nodes_view(nodes, resource_version, instances, _run_started(context))
        del nodes
        state["nodes_view"] = view
    return view


# --------------------------------------------------------------------------------------------- batches
def batch_state(context: Mapping[str, Any]) -> dict[str, Any]:
    """What the batch's earlier steps left for the later ones (carried by ``ReplaceBatchOperator``
    across its deferrals): the Deployments scaled up, the terminations, when replacements joined."""
    return context.setdefault("batch_state", {})  # type: ignore[attr-defined]


def _batch(context: Mapping[str, Any], index: int) -> list[PlannedNode]:
    the_plan = _plan_from(context)
    if index >= len(the_plan.batches):
        skip(f"no batch {index + 1}: the plan has {len(the_plan.batches)}")
    return the_plan.batches[index]


# Task states of the batch before that mean it will not complete: this batch does not start.
_NOT_COMPLETED = frozenset({"failed", "upstream_failed", "skipped", "removed"})


def previous_batch_done(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> bool:
    """Batches go strictly one after another: this one starts once the one before it succeeded,
    and never while a node of an earlier batch is still cordoned by this run and not terminated
    (an earlier batch marked successful by hand mid-drain, say): the budget is one batch out."""
    if index == 0:
        return True
    ti = context["ti"]
    run_id = getattr(context.get("dag_run"), "run_id", None) or ti.run_id
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id], task_ids=[ti.task_id]).get(run_id, {})
    previous = states.get(f"{ti.task_id}_{index - 1}")
    state = str(getattr(previous, "value", previous))
    if state in _NOT_COMPLETED:
        skip(f"batch {index} did not complete ({state}): not starting batch {index + 1}; its nodes wait for the next run")
    if state != "success":
        return False
    params, rt = _params(cluster_name, context)
    the_plan = _plan_from(context)
    still_out = []
    for planned in (n for b in the_plan.batches[:index] for n in b):
        node = rt.kube.get_or_none(NODES, planned.name)
        if node is None or not _same_instance(node, planned):
            continue
        annotations = node["metadata"].get("annotations") or {}
        if node.get("spec", {}).get("unschedulable") and annotations.get(CORDONED_BY_ANNOTATION) == rt.holder and TERMINATING_ANNOTATION not in annotations:
            still_out.append(planned.name)
    if still_out:
        fail(
            f"batch {index} ended without terminating {', '.join(still_out)}, still cordoned by this run (marked successful by hand?): "
            f"not starting batch {index + 1}; the cleanup uncordons them"
        )
    return True


def cordon(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> list[str]:
    params, rt = _params(cluster_name, context)
    if params.dry_run:
        skip("dry run")
    batch = _batch(context, index)
    now = _now()
    renew_lock(rt)
    cordoned = []
    for planned in batch:
        node = rt.kube.get_or_none(NODES, planned.name)
        if node is None or not _same_instance(node, planned):
            # Gone, or EC2 gave its private DNS name to a new instance: not the node the plan chose.
            found = "missing" if node is None else f"instance {_instance_id(node)}"
            rt.audit.record("cordon", f"node/{planned.name}", before=found, after=found, outcome="skipped", planned_instance=planned.instance_id)
            continue
        annotations = node["metadata"].get("annotations") or {}
        if node.get("spec", {}).get("unschedulable") and annotations.get(CORDONED_BY_ANNOTATION) == rt.holder:
            cordoned.append(planned.name)  # this run's, from an earlier try: keep its drain deadline
            continue
        # Otherwise (schedulable, cordoned by hand, or left cordoned by another run that failed to
        # roll back) it becomes this run's: a fresh deadline, and this run's rollback undoes it.
        was = "unschedulable" if node.get("spec", {}).get("unschedulable") else "schedulable"
        if annotations.get(CORDONED_BY_ANNOTATION):
            # A cordon left by a run that died: what was before it is that run's record (a run
            # too old to keep one cordoned the node itself).
            before = annotations.get(UNSCHEDULABLE_BEFORE_ANNOTATION, "false")
        else:
            before = "true" if was == "unschedulable" else "false"
        patch = {
            "metadata": {
                "annotations": {
                    CORDONED_BY_ANNOTATION: rt.holder,
                    CORDONED_AT_ANNOTATION: now.isoformat(),
                    UNSCHEDULABLE_BEFORE_ANNOTATION: before,
                }
            },
            "spec": {"unschedulable": True},
        }
        rt.kube.patch(NODES, planned.name, patch, content_type=STRATEGIC_MERGE_PATCH)
        rt.audit.record("cordon", f"node/{planned.name}", before=was, after="unschedulable", batch=index + 1, cordoned_by_hand_before=planned.cordoned_before_run)
        cordoned.append(planned.name)
    if params.protect_lone_workloads:
        batch_state(context)["scaled_up"] = _scale_up_lone_deployments(rt, {n.name for n in batch}, index)
    return cordoned


def _controller(obj: Mapping[str, Any], kind: str) -> str | None:
    return next((r["name"] for r in obj["metadata"].get("ownerReferences") or () if r.get("controller") and r.get("kind") == kind), None)


def _lone_deployments(rt: TaskRuntime, batch_nodes: set[str]) -> list[dict[str, Any]]:
    """Deployments whose every Ready pod is on these nodes and that no PDB covers (or that this run
    scaled up already): a drain of the nodes would leave them with no Ready pod at all."""
    owners: set[tuple[str, str]] = set()
    replica_sets: dict[tuple[str, str], Any] = {}
    for node in sorted(batch_nodes):
        pods, _ = rt.kube.list(PODS, field_selector=f"spec.nodeName={node}")
        for pod in pods:
            namespace, rs_name = pod["metadata"].get("namespace", ""), _controller(pod, "ReplicaSet")
            if rs_name is None:
                continue
            if (namespace, rs_name) not in replica_sets:
                replica_sets[(namespace, rs_name)] = rt.kube.get_or_none(REPLICASETS, rs_name, namespace)
            rs = replica_sets[(namespace, rs_name)]
            if rs is not None and (deployment := _controller(rs, "Deployment")):
                owners.add((namespace, deployment))
    budgets: dict[str, list[Any]] = {}
    lone = []
    for namespace, name in sorted(owners):
        deployment = rt.kube.get_or_none(DEPLOYMENTS, name, namespace)
        if deployment is None:
            continue
        if (deployment["metadata"].get("annotations") or {}).get(SCALED_BY_ANNOTATION) == rt.holder:
            lone.append(deployment)  # scaled up by an earlier try of this step
            continue
        pods, _ = rt.kube.list(PODS, namespace, label_selector=selector_string(deployment["spec"].get("selector")))
        if namespace not in budgets:
            budgets[namespace] = rt.kube.list(PDBS, namespace)[0]
        if needs_a_spare(deployment, pods, batch_nodes, budgets[namespace]):
            lone.append(deployment)
    return lone


def _scale_up_lone_deployments(rt: TaskRuntime, batch_nodes: set[str], index: int, dry_run: bool = False) -> list[list[str]]:
    """One more replica for each Deployment the batch's drain would leave with no Ready pod; what
    it was is written on it, so a scale back (or a later cleanup) knows. A dry run only lists them."""
    scaled = []
    for deployment in _lone_deployments(rt, batch_nodes):
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        scaled.append([namespace, name])
        if (deployment["metadata"].get("annotations") or {}).get(SCALED_BY_ANNOTATION) == rt.holder:
            continue
        before = int(deployment["spec"].get("replicas", 1))
        if not dry_run:
            patch = {"metadata": {"annotations": {SCALED_BY_ANNOTATION: rt.holder, REPLICAS_BEFORE_ANNOTATION: str(before)}}, "spec": {"replicas": before + 1}}
            rt.kube.patch(DEPLOYMENTS, name, patch, namespace)
        rt.audit.record("scale-up", f"deployment/{namespace}/{name}", before={"replicas": before}, after={"replicas": before + 1}, batch=index + 1, why="every Ready pod is on this batch's nodes and no PodDisruptionBudget covers it")
    return scaled


def _spares_not_ready(rt: TaskRuntime, scaled: list[list[str]], batch_nodes: set[str]) -> list[str]:
    """Scaled-up Deployments with no Ready pod off the batch's nodes yet: the drain waits for them."""
    waiting = []
    for namespace, name in scaled:
        deployment = rt.kube.get_or_none(DEPLOYMENTS, name, namespace)
        if deployment is None:
            continue
        pods, _ = rt.kube.list(PODS, namespace, label_selector=selector_string(deployment["spec"].get("selector")))
        if ready_pods_elsewhere(pods, batch_nodes) == 0:
            waiting.append(f"deployment/{namespace}/{name}")
    return waiting


def _scale_back(rt: TaskRuntime, deployments: list[Mapping[str, Any]]) -> list[str]:
    """Each Deployment this run scaled up back to what it was, unless it was changed meanwhile."""
    done = []
    for deployment in deployments:
        if (deployment["metadata"].get("annotations") or {}).get(SCALED_BY_ANNOTATION) != rt.holder:
            continue  # not scaled up by this run
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        replicas, why = scale_back_to(deployment, rt.holder)
        patch: dict[str, Any] = {"metadata": {"annotations": {SCALED_BY_ANNOTATION: None, REPLICAS_BEFORE_ANNOTATION: None}}}
        if replicas is not None:
            patch["spec"] = {"replicas": replicas}
        rt.kube.patch(DEPLOYMENTS, name, patch, namespace)
        current = deployment["spec"].get("replicas")
        rt.audit.record("scale-down", f"deployment/{namespace}/{name}", before={"replicas": current}, after={"replicas": replicas if replicas is not None else current}, outcome="done" if replicas is not None else "skipped", why=why)
        done.append(f"deployment/{namespace}/{name}")
    return done


def launch_surge(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> bool:
    """Surge mode: launch each of this batch's replacements in the zone of the node it replaces,
    attach it to the node's group, and wait for its node to be Ready.

    Returns True at once when replacing in place. Each launch is tagged with the instance it
    stands in for, so a retry (or the next run, after a dead one) finds it instead of launching
    another; attaching raises the group's desired capacity by one, and terminating the replaced
    node later lowers it again: every zone keeps its count, and there is nothing to rebalance.
    """
    params, rt = _params(cluster_name, context)
    if params.dry_run:
        skip("dry run")
    batch = _batch(context, index)
    renew_lock(rt)
    if not params.ignore_window:
        # The first step of a batch: a batch may take its whole drain and boot allowance, so
        # start none the window cannot fit.
        needed = dt.timedelta(seconds=params.drain_timeout_seconds + params.replacement_timeout_seconds)
        closing = rt.cluster.window.why_not(_now(), needed)
        if closing:
            skip(f"not starting batch {index + 1}: {closing}; the remaining nodes wait for the next run")
    if not params.surge:
        return True
    in_groups = [n for n in batch if n.asg]
    described = rt.cloud.groups(sorted({n.asg for n in in_groups if n.asg}))
    members = {i["InstanceId"]: name for name, g in described.items() for i in g.get("Instances", [])}
    launched = rt.cloud.surge_instances([n.instance_id for n in in_groups])
    view = _joining_nodes(rt, context, {i["InstanceId"] for instances in launched.values() for i in instances})
    ready_instances = ready_instances_of(view)
    zone_subnets = rt.cloud.zone_subnets(list(described.values()))
    waiting: dict[str, str] = {}
    surge_ids: list[str] = []
    for planned in in_groups:
        group = described[planned.asg]
        alive = [i for i in launched.get(planned.instance_id, []) if i["State"]["Name"] not in GONE_STATES]
        if not alive:
            attempt = len(launched.get(planned.instance_id, []))
            subnet = zone_subnets[planned.asg][planned.zone]
            instance_id = rt.cloud.launch_like_group(group, subnet, planned.instance_id, rt.holder, attempt)
            rt.audit.record("surge-launch", f"instance/{instance_id}", before=None, after={"zone": planned.zone, "subnet": subnet}, replaces=planned.name, asg=planned.asg, batch=index + 1)
            waiting[planned.name] = f"{instance_id} launched in {planned.zone}"
            continue
        surge = alive[0]
        instance_id = surge["InstanceId"]
        surge_ids.append(instance_id)
        if instance_id not in members:
            if surge["State"]["Name"] != "running":
                waiting[planned.name] = f"{instance_id} {surge['State']['Name']}"
                continue
            desired = int(group.get("DesiredCapacity", 0))
            rt.cloud.attach_to_group(planned.asg, [instance_id])
            group["DesiredCapacity"] = desired + 1
            rt.audit.record(
                "surge", f"asg/{planned.asg}", before={"desired": desired}, after={"desired": desired + 1},
                instance=instance_id, zone=surge["Placement"]["AvailabilityZone"], replaces=planned.name, batch=index + 1,
            )
        if instance_id not in ready_instances:
            waiting[planned.name] = f"{instance_id} not a Ready node yet"
    if waiting:
        started = batch_state(context).setdefault("surge_started", _now().isoformat())
        if _now() > dt.datetime.fromisoformat(started) + dt.timedelta(seconds=params.replacement_timeout_seconds):
            fail(f"surge node(s) of batch {index + 1} not Ready within {params.replacement_timeout_seconds}s of their launch: {waiting}; nothing was cordoned")
        log.info("waiting for surge nodes: %s", waiting)
        batch_state(context)["wait_for_nodes"] = {"view": "nodes_view"}  # wake when a node joins or gets Ready
        return False
    _disable_scale_down(rt, _nodes_named(rt, nodes_of_instances(view, surge_ids)))
    batch_state(context).pop("nodes_view", None)  # the wait for replacements has a view of its own
    return True


def _instance_id(node: Mapping[str, Any]) -> str:
    return (instance_of(node) or ("", ""))[1]


def _same_instance(node: Mapping[str, Any], planned: PlannedNode) -> bool:
    """Nodes are told apart by their instance (spec.providerID), not their name: EC2 reuses names."""
    return _instance_id(node) == planned.instance_id


def _drain_options(params: NodeReplacementParams, node: Mapping[str, Any] | None) -> drain_rules.DrainOptions:
    """The drain rules for one node: the form's choices, and whether its kubelet is gone."""
    return drain_rules.DrainOptions(
        params.delete_emptydir_data,
        params.force_unmanaged_pods,
        skip_wait_for_delete_timeout_seconds=params.skip_wait_for_delete_timeout_seconds,
        node_unreachable=node is not None and not is_node_ready(node),
        now=_now(),
    )


def _drain_deadline(node: Mapping[str, Any], timeout: int) -> dt.datetime:
    stamp = (node["metadata"].get("annotations") or {}).get(CORDONED_AT_ANNOTATION)
    started = dt.datetime.fromisoformat(stamp) if stamp else _now()
    return started + dt.timedelta(seconds=timeout)


def drain(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> bool:
    """One pass of the batch's drain: evict what is left, and see what is still there.

    True once every node of the batch is empty; False to look again, once the pods left on a node
    are gone or a new one lands there, a PodDisruptionBudget that refused an eviction allows one
    again, or the poke interval passed: the batch then defers to a trigger watching the nodes'
    pods and those budgets (``watch_nodes``, ``watch_pods``, ``watch_budgets`` in the batch's
    state), holding no worker.
    The deadline counts from the cordon (an annotation on the node), so deferrals and retries do
    not extend it.
    """
    params, rt = _params(cluster_name, context)
    batch = _batch(context, index)
    renew_lock(rt)
    scaled = batch_state(context).get("scaled_up") or []
    waiting = _spares_not_ready(rt, scaled, {n.name for n in batch})
    if waiting:
        # A Ready pod elsewhere first, as the runbook says, then the drain.
        # The wait counts against the drain's own timeout (from the cordon).
        deadline = min((_drain_deadline(n, params.drain_timeout_seconds) for n in [rt.kube.get_or_none(NODES, p.name) for p in batch] if n), default=_now() + dt.timedelta(seconds=1))
        if _now() >= deadline:
            fail(f"drain of batch {index + 1} did not start within {params.drain_timeout_seconds}s: no Ready pod elsewhere yet for {', '.join(waiting)}")
        log.info("waiting for a Ready pod off the batch's nodes before draining: %s", ", ".join(waiting))
        return False
    passes: list[tuple[PlannedNode, dt.datetime, drain_rules.DrainOptions]] = []
    for planned in batch:
        node = rt.kube.get_or_none(NODES, planned.name)
        if node is None or not _same_instance(node, planned):
            continue  # gone already (an earlier try terminated it), or the name is another instance's now
        deadline = _drain_deadline(node, params.drain_timeout_seconds)
        opts = _drain_options(params, node)
        if opts.node_unreachable:
            # No kubelet: nothing on the node will change; the next look judges its pods again
            # (those past the grace go to the pod GC).
            log.warning("%s is not Ready (its kubelet is gone?): pods terminating %ds past their grace are left to the pod GC", planned.name, params.skip_wait_for_delete_timeout_seconds)
        passes.append((planned, deadline, opts))
    # The batch's nodes drain at once, none waiting inside the pass: the watching is the
    # trigger's (no worker slot held).
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(passes))) as pool:
        results = list(pool.map(lambda p: drain_pass(rt.kube, p[0].name, p[2], params.pod_grace_period_seconds, 0.0), passes))
    all_done = True
    watch_nodes: list[str] = []
    watch_pods: dict[str, list[str]] = {}
    budgets: set[str] = set()
    for (planned, deadline, opts), result in zip(passes, results):
        for decision in result.left_to_gc:
            log.info("%s: %s", decision.ref, decision.reason)
        if result.refusal or result.error:
            fail(result.refusal or result.error or "")
        for decision in result.evicted:
            rt.audit.record("evict", decision.ref, before={"node": planned.name, "uid": decision.uid}, after="evicted", batch=index + 1)
        for ref, why in sorted(result.blocked.items()):
            log.info("eviction of %s refused for now: %s", ref, why)
            if budget := drain_rules.refusing_budget(why):
                budgets.add(f"{ref.split('/')[1]}/{budget}")  # "pod/<ns>/<name>": the budget is in the pod's namespace
        if result.done:
            log.info("%s drained", planned.name)
            continue
        all_done = False
        if not opts.node_unreachable:
            watch_nodes.append(planned.name)
            watch_pods[planned.name] = [ref.removeprefix("pod/") for ref in result.left]
        if _now() >= deadline:
            reasons = sorted(set(result.blocked.values())) or ["pods did not terminate in time"]
            fail(
                f"drain of {planned.name} did not finish within {params.drain_timeout_seconds}s; "
                f"{len(result.left)} pod(s) left ({', '.join(result.left[:10])}); blocked by: {'; '.join(reasons)}"
            )
    state = batch_state(context)
    state["watch_nodes"] = watch_nodes
    state["watch_pods"] = watch_pods
    woken = (state.get("woken_by") or {}).get("budget")
    if woken in budgets and not any(r.evicted for r in results):
        # It seemed to allow, and the eviction still said no: its status is not to be trusted,
        # so for the rest of this drain it is left to the pods' changes and the poke interval
        # (never a loop of looks on a budget that says one thing and does another).
        state["budgets_not_watched"] = sorted({*state.get("budgets_not_watched", []), woken})
    state["watch_budgets"] = sorted(budgets - set(state.get("budgets_not_watched", [])))
    return all_done


def terminate(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> dict[str, Any]:
    params, rt = _params(cluster_name, context)
    batch = _batch(context, index)
    renew_lock(rt)
    states = rt.cloud.instance_states([n.instance_id for n in batch])
    terminated, already_gone, left_to_gc = [], [], []
    for planned in batch:
        state = states[planned.instance_id]
        target = f"instance/{planned.instance_id}"
        if state.gone:
            # e.g. a retry after the call went through but before this task could record it
            rt.audit.record("terminate", target, before=state.state, after=state.state, outcome="skipped", node=planned.name, why="already terminated")
            already_gone.append(planned.instance_id)
            continue
        node = rt.kube.get_or_none(NODES, planned.name)
        if node is not None and not _same_instance(node, planned):
            fail(f"node {planned.name} is now instance {_instance_id(node)}, not {planned.instance_id} as planned; not terminating")
        if node is not None and not node.get("spec", {}).get("unschedulable"):
            fail(f"node {planned.name} is schedulable again (uncordoned since the drain?); not terminating it")
        if node is not None:
            # Whatever the drain task's state says (it may have been marked successful by hand):
            # a node with pods a drain would evict is not terminated.
            on_node, _ = rt.kube.list(PODS, field_selector=f"spec.nodeName={planned.name}")
            decisions = drain_rules.decide_all(on_node, _drain_options(params, node))
            left = drain_rules.pods_left(decisions)
            if left:
                fail(
                    f"node {planned.name} still has {len(left)} pod(s) a drain would evict "
                    f"({', '.join(d.ref for d in left[:10])}); not terminating it: the drain has not finished"
                )
            for decision in drain_rules.left_to_gc(decisions):
                rt.audit.record("leave-to-gc", decision.ref, before={"node": planned.name, "uid": decision.uid}, after="left to the pod garbage collector", why=decision.reason, batch=index + 1)
                left_to_gc.append(decision.ref)
            rt.kube.patch(NODES, planned.name, {"metadata": {"annotations": {TERMINATING_ANNOTATION: planned.instance_id}}}, content_type=STRATEGIC_MERGE_PATCH)
        # In place: the group replaces the instance. After a surge the replacement already runs,
        # so the group shrinks back to the size the plan saw.
        activity = rt.cloud.terminate_in_group(planned.instance_id, decrement_desired=params.surge)
        rt.audit.record(
            "terminate",
            target,
            before=state.state,
            after="terminating",
            node=planned.name,
            asg=state.asg,
            should_decrement_desired_capacity=params.surge,
            activity=activity.get("ActivityId"),
        )
        terminated.append(planned.instance_id)
    result = {"terminated": terminated, "already_gone": already_gone, "left_to_gc": left_to_gc, "at": _now().isoformat()}
    batch_state(context)["terminated"] = result
    context["ti"].xcom_push(key="terminated", value=result)  # for the cleanup's summary
    return result


def wait_for_replacement(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> Any:
    """True once each affected group has as many Ready nodes as before, not counting replaced ones."""
    params, rt = _params(cluster_name, context)
    the_plan = _plan_from(context)
    batch = _batch(context, index)
    renew_lock(rt)
    replaced = {n.instance_id for b in the_plan.batches[: index + 1] for n in b}
    groups = sorted({n.asg for n in batch if n.asg})
    group_instances = rt.cloud.group_instances(groups)
    view = _joining_nodes(rt, context, {i["InstanceId"] for g in groups for i in group_instances.get(g, [])})
    ready_instances = ready_instances_of(view)
    terminated = batch_state(context).get("terminated") or {}
    started = dt.datetime.fromisoformat(terminated["at"]) if terminated.get("at") else _now()
    missing = {}
    for group in groups:
        ready = sum(1 for i in group_instances.get(group, []) if i["InstanceId"] in ready_instances and i["InstanceId"] not in replaced)
        want = the_plan.ready_by_group_before.get(group, 0)
        if ready < want:
            missing[group] = f"{ready}/{want} Ready" + _members_not_ready(view, group_instances.get(group, []), replaced)
    if missing:
        if _now() > started + dt.timedelta(seconds=params.replacement_timeout_seconds):
            fail(
                f"replacement node(s) did not join Ready within {params.replacement_timeout_seconds}s after batch {index + 1} "
                f"({', '.join(n.name for n in batch)}): {missing}; not starting the next batch"
            )
        log.info("waiting for replacements: %s", missing)
        batch_state(context)["wait_for_nodes"] = {"view": "nodes_view"}  # wake when a node joins or gets Ready
        return False
    _disable_scale_down(rt, _nodes_named(rt, _new_nodes(view, the_plan, groups, group_instances)))
    batch_state(context).pop("nodes_view", None)
    log.info("replacements Ready in %s", ", ".join(groups))
    # When they were Ready: the validation's timeout counts from then.
    batch_state(context)["ready_at"] = _now().isoformat()
    return True


def _workloads(rt: TaskRuntime) -> tuple[list[Any], list[Any], list[Any]]:
    """Every Deployment, DaemonSet and StatefulSet of the cluster (one list each), as ``projections.workload`` keeps them."""
    deployments, daemonsets, statefulsets = (rt.kube.list(ref, project=projections.workload)[0] for ref in (DEPLOYMENTS, DAEMONSETS, STATEFULSETS))
    return deployments, daemonsets, statefulsets


def validate(cluster_name: str, index: int, max_batches: int = 10, **context: Any) -> bool:
    """Healthy ``validation_passes`` times in a row, ``validation_interval_seconds`` apart (kops'
    model), before the next batch starts: Ready nodes back to their count, nothing stuck Pending,
    every workload that was available before the run available again, kube-system's pods Ready.
    Fails, naming what is still wrong, ``validation_timeout_seconds`` after the replacements were
    Ready.

    One check per call; the count so far is in the batch's state. Between two healthy checks the
    batch waits out the interval on the triggerer (``HealthChangeTrigger``), woken early by a
    regression (a node going NotReady or away, a workload going unavailable, none of those the run
    expects): the count then starts again, since "in a row" means healthy all along, not at two
    instants. While not healthy it waits for the next change of that judgement, or a poke interval.
    """
    params, rt = _params(cluster_name, context)
    the_plan = _plan_from(context)
    renew_lock(rt)
    state = batch_state(context)
    replaced = {n.name for b in the_plan.batches[: index + 1] for n in b}
    unavailable_before = frozenset(the_plan.unavailable_before)
    expected = unavailable_before | {f"node/{n}" for n in replaced}  # not this batch's doing, or its doing by design
    streak = int(state.get("validation_streak") or 0)
    next_at = state.get("validation_next_at")
    if streak:
        woken = state.get("woken_by") or {}
        regressions = sorted({c["ref"] for c in woken.get("changes") or () if c.get("worse") and c.get("ref") not in expected})
        if regressions:
            log.info("after batch %d: %s between two healthy checks: counting again", index + 1, "; ".join(regressions[:10]))
            streak = 0
        elif next_at and _now() < dt.datetime.fromisoformat(next_at):
            # Woken before the next check is due by nothing that breaks the count: wait on.
            state["wake_at"] = next_at
            state["wait_for_health"] = {"problems": state.get("validation_seen") or [], "fire_on": "worse"}
            return False
    view = _health(rt, state, replaced)
    pods, _ = rt.kube.list(PODS, field_selector="status.phase=Pending", project=projections.pod)
    system_pods, _ = rt.kube.list(PODS, "kube-system", project=projections.pod)
    report = health_report(
        ready_nodes_not_tracked(view), the_plan.ready_nodes_before, unavailable_in(view), pods, system_pods, _now(), PENDING_GRACE_SECONDS, unavailable_before,
    )
    for note in report.notes:
        log.info(note)
    seen = problems_in(view)
    if not report.healthy:
        state["validation_streak"] = 0
        ready_at = state.get("ready_at")
        since = dt.datetime.fromisoformat(ready_at) if ready_at else _now()
        if _now() > since + dt.timedelta(seconds=params.validation_timeout_seconds):
            fail(f"the cluster is not healthy {params.validation_timeout_seconds}s after batch {index + 1}'s replacements joined: {report.summary()}; not starting the next batch")
        log.info("not yet healthy after batch %d: %s", index + 1, report.summary())
        # Wake when the check may pass: what it waits for back, or a node Ready.
        state["wait_for_health"] = {"problems": seen, "fire_on": "any", "waiting_for": [r for r in seen if r not in expected]}
        return False
    streak += 1
    state["validation_streak"] = streak
    if streak < params.validation_passes:
        due = (_now() + dt.timedelta(seconds=params.validation_interval_seconds)).isoformat()
        state.update(validation_next_at=due, validation_seen=seen, wake_at=due)
        state["wait_for_health"] = {"problems": seen, "fire_on": "worse"}
        log.info("healthy after batch %d (check %d of %d in a row); next check in %ds", index + 1, streak, params.validation_passes, params.validation_interval_seconds)
        return False
    log.info("cluster healthy after batch %d (%d checks in a row, %ds apart)", index + 1, params.validation_passes, params.validation_interval_seconds)
    state.pop("health_view", None)
    scaled = state.get("scaled_up") or []
    _scale_back(rt, [d for ns, name in scaled if (d := rt.kube.get_or_none(DEPLOYMENTS, name, ns))])
    return True


def _health(rt: TaskRuntime, state: dict[str, Any], replaced: set[str]) -> dict[str, Any]:
    """What the validation judges of Nodes and workloads (``views.health_view``), as its trigger kept
    it current since the step's first look. Listed on the first look (a kind at a time, each list
    reduced to its view as it arrives), and again whenever no trigger kept the view since (as
    ``_joining_nodes``)."""
    view = state.get("health_view")
    if view is None or (state.get("woken_by") or {}).get("view_kept") != "health_view":
        view = {}
        for kind, ref in (("node", NODES), ("deployment", DEPLOYMENTS), ("daemonset", DAEMONSETS), ("statefulset", STATEFULSETS)):
            view.update(health_view({kind: rt.kube.list(ref, project=projections.FOR_HEALTH[kind])}, replaced))
        state["health_view"] = view
    return view


# ----------------------------------------------------------------------------------------------- finish
def cleanup(cluster_name: str, max_batches: int = 10, **context: Any) -> dict[str, Any]:
    """The run's teardown, whatever ended it: restore every node this run cordoned and did not
    terminate, report surge capacity left in place, release the lock, summarise, and fail the run
    if a step failed.

    Needs no valid parameters (bad input ends runs too) and only the Kubernetes API to restore
    nodes: what a node was before is written on the node itself when it is cordoned.
    """
    raw = _raw_params(cluster_name, context)
    dry_run = raw.get("dry_run") is not False
    rt = runtime_for(cluster_name, context, dry_run)
    data = context["ti"].xcom_pull(task_ids="plan", key="plan") or {}
    the_plan = Plan.from_xcom(data["plan"]) if data else Plan(batches=[])
    nodes = [] if dry_run else rt.kube.list(NODES, project=projections.node)[0]
    restored = [] if dry_run else _restore_cordoned_nodes(rt, the_plan, nodes)
    unmarked = [] if dry_run else _remove_scale_down_marks(rt, nodes)
    scaled_back = [] if dry_run else _scale_back(rt, rt.kube.list(DEPLOYMENTS, project=projections.workload)[0])
    surge_left = _report_surge_left(rt, the_plan) if raw.get("surge") is True and not dry_run else {}
    resumed: dict[str, list[str]] = {}
    resume_error = None
    if not dry_run and the_plan.nodes:
        try:
            resumed = _resume_autoscaling_processes(rt, sorted({n.asg for n in the_plan.nodes if n.asg}))
        except Exception as exc:  # noqa: BLE001 - report, release the lock, then fail (and retry) below
            resume_error = f"could not resume the Auto Scaling processes this run suspended: {exc}"
            log.error(resume_error)
    released = drop_lock(rt, dry_run)
    terminated: list[str] = []
    left_to_gc: list[str] = []
    pulled = context["ti"].xcom_pull(task_ids="batch", key="terminated") if the_plan.batches else None
    for result in (pulled if isinstance(pulled, (list, tuple)) else [pulled] if pulled else []):
        if not isinstance(result, dict):
            continue
        terminated += result.get("terminated", []) + result.get("already_gone", [])
        left_to_gc += result.get("left_to_gc", [])
    replaced = [n.name for n in the_plan.nodes if n.instance_id in set(terminated)]
    summary = {
        "planned": [n.name for n in the_plan.nodes],
        "replaced": replaced,
        "not_replaced": [n.name for n in the_plan.nodes if n.name not in replaced],
        "restored": restored,
        "scale_down_marks_removed": unmarked,
        "scaled_back": scaled_back,
        "processes_resumed": resumed,
        "pods_left_to_gc": left_to_gc,
        "surge_left": surge_left,
        "lock_released": released,
    }
    marked_done = [] if dry_run else _batches_marked_done_unreplaced(context, the_plan, set(replaced))
    if marked_done:
        # Marked successful by hand (the batch, or the run, which marks its running tasks so):
        # the operator's word stands, but the summary says what that left undone.
        summary["marked_successful_not_replaced"] = marked_done
        for note in marked_done:
            log.warning("%s: the cleanup restored them; a later run replaces them", note)
    would_stop = context["ti"].xcom_pull(task_ids="preflight", key="would_stop") if dry_run else None
    if would_stop:
        summary["a_real_run_would_stop"] = would_stop
    rt.audit.record("summary", f"cluster/{rt.cluster.name}", after=summary, outcome="done")
    if resume_error:
        raise RuntimeError(resume_error)  # retried: the cleanup has retries of its own
    fail_if_steps_failed(context, f"restored {restored or 'no node'}, lock released: {released}")
    return summary


def _batches_marked_done_unreplaced(context: Mapping[str, Any], the_plan: Plan, replaced: set[str]) -> list[str]:
    """Batches whose task succeeded with nodes not replaced: marked successful by hand (the batch,
    or the whole run, which Airflow does by marking its running tasks) mid-way."""
    if not the_plan.batches:
        return []
    ti = context["ti"]
    run_id = getattr(context.get("dag_run"), "run_id", None) or ti.run_id
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id], task_ids=["batch"]).get(run_id, {})
    out = []
    for index, batch in enumerate(the_plan.batches):
        state = states.get(f"batch_{index}")
        left = [n.name for n in batch if n.name not in replaced]
        if str(getattr(state, "value", state)) == "success" and left:
            out.append(f"batch {index + 1} is marked successful but {', '.join(left)} not replaced")
    return out


def _restore_cordoned_nodes(rt: TaskRuntime, the_plan: Plan, nodes: list[Mapping[str, Any]]) -> list[str]:
    """Uncordon every node this run cordoned and did not terminate; a node that was cordoned
    before the run stays cordoned, only this run's marks are removed."""
    ours = [n for n in nodes if (n["metadata"].get("annotations") or {}).get(CORDONED_BY_ANNOTATION) == rt.holder]
    terminating = {
        n["metadata"]["name"]: ann[TERMINATING_ANNOTATION] for n in ours if TERMINATING_ANNOTATION in (ann := n["metadata"].get("annotations") or {})
    }
    gone: set[str] = set()
    if terminating:
        try:
            states = rt.cloud.instance_states(sorted(set(terminating.values())))
            gone = {name for name, instance in terminating.items() if states[instance].gone}
        except Exception as exc:  # noqa: BLE001 - AWS failing must not stop the Kubernetes-side cleanup
            log.warning("cannot ask EC2 whether %s were terminated (%s): leaving them cordoned", sorted(terminating), exc)
            gone = set(terminating)
    cordoned_by_hand = {n.name for n in the_plan.nodes if n.cordoned_before_run}
    restored = []
    for node in ours:
        name = node["metadata"]["name"]
        if name in gone:
            continue  # its instance is terminated or terminating: the node is going away
        annotations = node["metadata"].get("annotations") or {}
        before = annotations.get(UNSCHEDULABLE_BEFORE_ANNOTATION)
        was_cordoned = before == "true" if before is not None else name in cordoned_by_hand
        marks = (CORDONED_BY_ANNOTATION, CORDONED_AT_ANNOTATION, UNSCHEDULABLE_BEFORE_ANNOTATION, TERMINATING_ANNOTATION)
        patch: dict[str, Any] = {"metadata": {"annotations": {k: None for k in marks}}}
        if not was_cordoned:
            patch["spec"] = {"unschedulable": None}
        rt.kube.patch(NODES, name, patch, content_type=STRATEGIC_MERGE_PATCH)
        after = "unschedulable (cordoned before the run)" if was_cordoned else "schedulable"
        rt.audit.record("uncordon", f"node/{name}", before="unschedulable", after=after)
        restored.append(name)
    return restored


def _remove_scale_down_marks(rt: TaskRuntime, nodes: list[Mapping[str, Any]]) -> list[str]:
    """Remove the cluster-autoscaler marks this run added (on plan, surge and replacement nodes)."""
    removed = []
    for node in nodes:
        annotations = node["metadata"].get("annotations") or {}
        if annotations.get(SCALE_DOWN_MARKED_BY_ANNOTATION) != rt.holder:
            continue
        patch = {"metadata": {"annotations": {SCALE_DOWN_DISABLED_ANNOTATION: None, SCALE_DOWN_MARKED_BY_ANNOTATION: None}}}
        rt.kube.patch(NODES, node["metadata"]["name"], patch, content_type=STRATEGIC_MERGE_PATCH)
        rt.audit.record("enable-scale-down", f"node/{node['metadata']['name']}", before="true", after=None)
        removed.append(node["metadata"]["name"])
    return removed


def _report_surge_left(rt: TaskRuntime, the_plan: Plan) -> dict[str, int]:
    """Groups still above the desired capacity the plan saw. Scaling them back in would let Auto
    Scaling pick which instance dies (perhaps one with pods), so a person decides."""
    groups = sorted(the_plan.desired_by_group_before)
    try:
        described = rt.cloud.groups(groups)
        _terminate_unattached_surge(rt, the_plan, described)
    except Exception as exc:  # noqa: BLE001 - a report, not a change: never fail the cleanup for it
        log.warning("cannot check surge capacity of %s: %s", groups, exc)
        return {}
    left = {}
    for group in groups:
        extra = int(described.get(group, {}).get("DesiredCapacity", 0)) - the_plan.desired_by_group_before[group]
        if extra > 0:
            left[group] = extra
            log.warning(
                "surge capacity left in place: %s keeps %d extra instance(s) (desired was %d before the run); "
                "a run replacing the same node uses it, or scale the group back once the failed node is dealt with",
                group,
                extra,
                the_plan.desired_by_group_before[group],
            )
            rt.audit.record("surge-left", f"asg/{group}", before={"desired": the_plan.desired_by_group_before[group]}, after={"desired": the_plan.desired_by_group_before[group] + extra}, outcome="skipped")
    return left


def _terminate_unattached_surge(rt: TaskRuntime, the_plan: Plan, described: Mapping[str, Mapping[str, Any]]) -> None:
    """Terminate instances launched for this plan's surge and never attached to their group: no
    group counts or replaces them, so nothing else would ever stop them. Attached ones are left
    (the group counts them; a run replacing the same node uses them)."""
    members = {i["InstanceId"] for g in described.values() for i in g.get("Instances", [])}
    launched = rt.cloud.surge_instances([n.instance_id for n in the_plan.nodes if n.asg])
    stray = sorted(
        i["InstanceId"] for instances in launched.values() for i in instances
        if i["InstanceId"] not in members and i["State"]["Name"] not in GONE_STATES
    )
    if stray:
        rt.cloud.terminate_unattached(stray)
        for instance_id in stray:
            rt.audit.record("surge-cancel", f"instance/{instance_id}", before="running outside its group", after="terminating")
