"""Approval for production: a run on a cluster marked ``requires_approval`` waits, after its plan,
for a person to approve that plan in Airflow's human-in-the-loop approval task.

The task (``approval``) stands between the plan and the step that takes the cluster's lock, so a
run waiting for an answer holds no lock and has changed nothing. It shows the plan in the order it
will run, as markdown, bounded in size: which nodes are cordoned and terminated, batch by batch;
which Jobs are deleted and which fresh Jobs started; which workloads are restarted, shard by shard.

- *Approve*: the run goes on; an ``approve`` audit line names who approved.
- *Reject* (or no answer within the cluster's ``approval_timeout_hours``): every step after the
  approval is skipped, the ``cleanup`` teardown still runs (and releases nothing: no lock was
  taken), and a ``reject`` audit line names who rejected (``nobody`` when the time ran out).
- A dry run, or a plan with nothing to change, passes at once without asking anyone.

Clusters without ``requires_approval`` have no approval task at all: their DAGs keep their shape.

The plan summaries are pure functions of the plan tasks' XComs (unit-tested); the operator is
Airflow's ``ApprovalOperator`` (standard provider) with the summary as its body.
Kept cheap to import: the provider's HITL module loads in about 10 ms; nothing here reaches a
cluster, and the operations' decision modules load only when a summary is made.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from airflow.providers.standard.operators.hitl import ApprovalOperator

from kube_maintenance.core.registry import ClusterConfig

log = logging.getLogger("kube_maintenance.approval")

APPROVAL_TASK = "approval"
# The body shows at most this many plan lines; past them it says how many more and of what.
MAX_LINES = 300
MAX_LINE_CHARS = 400

TITLES = {
    "node_replacement": "Rolling node replacement",
    "cronjob_refresh": "CronJob image refresh",
    "rollout_restart": "Namespace-wide rollout restart",
}

APPROVAL_DOC = (
    "**Approval** (this cluster has `requires_approval` in the registry). Shows the plan in the order it "
    "will run and waits for a person to *Approve* or *Reject* it (the task's *Required actions*). Approve: "
    "the run goes on. Reject, or no answer in time: every later step is skipped and nothing changes on the "
    "cluster; `cleanup` still runs. Both write an audit line naming who answered. A dry run, or a plan "
    "with nothing to change, passes at once."
)


# -------------------------------------------------------------------------------------- summaries
@dataclass
class PlanSummary:
    """A plan as a person approving it reads it: a subject, lines of markdown, how many changes.

    ``lines`` are ``(text, unit)``: ``unit`` names what the line stands for ("node", "Job", ...),
    or None for headings and prose; the bound counts what it leaves out by unit.
    """

    subject: str
    changes: int
    intro: list[str] = field(default_factory=list)
    lines: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, text: str, unit: str | None = None) -> None:
        self.lines.append((text, unit))

    def markdown(self, max_lines: int = MAX_LINES) -> str:
        return "\n".join([*self.intro, "", *bounded(self.lines, max_lines)]).strip() + "\n"


def _plural(count: int, unit: str) -> str:
    """``1 node``, ``2 nodes``, ``3 batches``, ``4 stale Jobs`` (the last word takes the plural)."""
    if count == 1:
        return f"{count} {unit}"
    return f"{count} {unit}{'es' if unit.endswith(('ch', 'sh', 's', 'x')) else 's'}"


def bounded(lines: Sequence[tuple[str, str | None]], max_lines: int = MAX_LINES) -> list[str]:
    """At most ``max_lines`` lines (each at most ``MAX_LINE_CHARS``); past them, one line saying how
    many more there are and what they stand for (e.g. "... 1200 more lines: 1150 nodes, 50 batches")."""
    out = [text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 3] + "..." for text, _ in lines[:max_lines]]
    hidden = lines[max_lines:]
    if hidden:
        counts: dict[str, int] = {}
        for _, unit in hidden:
            if unit:
                counts[unit] = counts.get(unit, 0) + 1
        what = ", ".join(_plural(n, unit) for unit, n in counts.items())
        out.append("")
        more = sum(1 for text, _ in hidden if text.strip())
        out.append(f"*... and {more} more lines not shown{': ' + what if what else ''}. The plan's audit lines, in its task logs, list every one.*")
    return out


def _short(name: str) -> str:
    return name.split(".")[0]


def node_replacement_summary(cluster: str, plan_xcom: Mapping[str, Any] | None, params: Mapping[str, Any]) -> PlanSummary:
    """Which nodes are cordoned, drained and terminated, batch by batch (the plan task's XCom "plan")."""
    from kube_maintenance.node_replacement.plan import Plan

    plan = Plan.from_xcom((plan_xcom or {}).get("plan") or {"batches": []})
    nodes = plan.nodes
    batches = [b for b in plan.batches if b]
    surge = params.get("surge") is True
    summary = PlanSummary(f"Approve: replace {_plural(len(nodes), 'node')} in {_plural(len(batches), 'batch')} on {cluster}"[:200], len(nodes))
    how = (
        "with surge: each batch's replacements are launched first (in the zones of the nodes they replace), then its nodes are "
        "cordoned, drained and terminated, and the groups shrink back"
        if surge
        else "in place: each batch's nodes are cordoned, drained (Eviction API, PodDisruptionBudgets respected) and their instances "
        "terminated in their Auto Scaling groups, which launch the replacements"
    )
    summary.intro = [
        f"## {TITLES['node_replacement']} on `{cluster}`",
        "",
        f"**{_plural(len(nodes), 'node')} in {_plural(len(batches), 'batch')}**, one batch after another, {how}; "
        "after each batch the cluster must be healthy again before the next one starts.",
    ]
    for number, batch in enumerate(batches, start=1):
        summary.add(f"### Batch {number} of {len(batches)}: cordon, drain, terminate", "batch")
        summary.add("")
        for node in batch:
            extra = [f"instance `{node.instance_id}`", f"group `{node.asg}`" if node.asg else "", f"zone {node.zone}" if node.zone else "", f"created {node.created}" if node.created else ""]
            if node.drift:
                extra.append(f"drifted: {node.drift}")
            if node.cordoned_before_run:
                extra.append("already cordoned before the run (stays cordoned if not terminated)")
            summary.add(f"- `{node.name}` ({', '.join(e for e in extra if e)})", "node")
        summary.add("")
    if plan.skipped:
        summary.add(f"**Left alone: {_plural(len(plan.skipped), 'node')}**", None)
        summary.add("")
        for name, why in sorted(plan.skipped.items()):
            summary.add(f"- `{_short(name)}`: {why}", "skipped node")
    return summary


def rollout_restart_summary(cluster: str, plan_xcom: Mapping[str, Any] | None, shards: Sequence[Mapping[str, Any]] | None) -> PlanSummary:
    """Which workloads are restarted, shard by shard, namespace by namespace, in the order they roll
    (the plan task's XCom "plan" and its return value, the shards)."""
    plan = dict(plan_xcom or {})
    restart = list(plan.get("restart") or ())
    rolling = set(plan.get("rolling") or ())
    kinds = [k.lower() for k in plan.get("kinds") or ()]
    by_namespace: dict[str, list[str]] = {}
    for ref in [*restart, *sorted(rolling)]:
        kind, namespace, name = ref.split("/", 2)
        by_namespace.setdefault(namespace, []).append(ref)
    order = {kind: i for i, kind in enumerate(kinds)}
    shards = [s for s in shards or () if isinstance(s, Mapping)]
    summary = PlanSummary(f"Approve: restart {_plural(len(restart), 'workload')} in {_plural(len(by_namespace), 'namespace')} on {cluster}"[:200], len(restart))
    summary.intro = [
        f"## {TITLES['rollout_restart']} on `{cluster}`",
        "",
        f"**{_plural(len(restart), 'workload')} restarted** (`kubectl rollout restart`: a new `restartedAt` on the pod template) "
        f"in {_plural(len(by_namespace), 'namespace')}, {_plural(len(shards), 'shard')} side by side; within a shard the namespaces "
        f"go in the order shown, and in each namespace the kinds in this order: {', '.join(plan.get('kinds') or ())}. "
        "Each rollout is followed until it completes; a failed one stops the run from starting more.",
    ]
    for shard in shards:
        namespaces = [ns for ns in shard.get("namespaces") or () if ns in by_namespace]
        summary.add(f"### Shard {int(shard.get('index', 0)) + 1} of {len(shards)} (at most {shard.get('max_in_flight')} rolling at once): {', '.join(namespaces)}", "shard")
        summary.add("")
        for namespace in namespaces:
            refs = sorted(by_namespace[namespace], key=lambda r: (order.get(r.split("/", 1)[0], len(order)), r))
            summary.add(f"- namespace `{namespace}`", None)
            for ref in refs:
                kind, _, name = ref.split("/", 2)
                note = " (already restarted by this run: followed to completion, not restarted again)" if ref in rolling else ""
                summary.add(f"  - {kind} `{name}`{note}", "workload")
        summary.add("")
    skipped = dict(plan.get("skipped") or {})
    if skipped:
        summary.add(f"**Left alone: {_plural(len(skipped), 'workload')}**", None)
        summary.add("")
        for ref, why in sorted(skipped.items()):
            summary.add(f"- `{ref}`: {why}", "skipped workload")
    return summary


def cronjob_refresh_summary(cluster: str, judged: Sequence[Mapping[str, Any]] | None, params: Mapping[str, Any]) -> PlanSummary:
    """Which stale Jobs are deleted and which fresh Jobs started, CronJob by CronJob, group by group
    (the ``refresh.judge`` tasks' return values)."""
    from kube_maintenance.cronjob_refresh.decisions import CronJobVerdict, fresh_job_name

    create_fresh = params.get("create_fresh_job") is True
    groups = sorted((g for g in judged or () if isinstance(g, Mapping)), key=lambda g: int(g.get("index", 0)))
    deletions = fresh_jobs = 0
    cronjobs = 0
    body: list[tuple[str, str | None]] = []
    left: list[tuple[str, str | None]] = []
    for group in groups:
        verdicts = [CronJobVerdict.from_xcom(v) for v in group.get("verdicts") or ()]
        shown: list[tuple[str, str | None]] = []
        for v in verdicts:
            to_delete = v.jobs_to_delete
            owed = bool(v.owed_for) and not v.opted_out and not v.suspended
            if not to_delete and not (owed and create_fresh):
                for name, why in sorted(v.left_alone.items()):
                    left.append((f"- Job `{v.namespace}/{name}` of `{v.ref}`: {why}", "kept Job"))
                if v.stale and (v.suspended or v.opted_out):
                    left.append((f"- CronJob `{v.ref}` ({'suspended' if v.suspended else v.opted_out}): {_plural(len(v.stale), 'stale Job')} left", "kept CronJob"))
                continue
            cronjobs += 1
            shown.append((f"- CronJob `{v.ref}` (concurrencyPolicy {v.concurrency_policy})", None))
            for number, job in enumerate(to_delete, start=1):
                changed = ", ".join(f"{c}: {job.old_images.get(c) or '(none)'} -> {job.new_images.get(c) or '(none)'}" for c in sorted(set(job.old_images) | set(job.new_images)))
                shown.append((f"  {number}. delete Job `{job.ref}` with its pods ({changed})", "stale Job"))
                deletions += 1
            if owed and not to_delete:
                shown.append((f"  - its stale Jobs were deleted by an earlier run ({', '.join(v.owed_for)})", None))
            why_not = v.why_no_fresh_job
            if create_fresh and not why_not:
                fresh = fresh_job_name(v.name, v.uid, v.generation)
                images = ", ".join(f"{c}: {i}" for c, i in sorted(v.images.items()))
                shown.append((f"  - then start fresh Job `{v.namespace}/{fresh}` from the CronJob's template ({images})", "fresh Job"))
                fresh_jobs += 1
            elif create_fresh:
                shown.append((f"  - no fresh Job: {why_not}", None))
            else:
                shown.append((f"  - no fresh Job (create_fresh_job is off): its next scheduled Job runs the new image ({v.next_run})", None))
            for name, why in sorted(v.left_alone.items()):
                left.append((f"- Job `{v.namespace}/{name}` of `{v.ref}`: {why}", "kept Job"))
        if shown:
            body.append((f"### Group {int(group.get('index', 0)) + 1}: {group.get('label') or ''}", "group"))
            body.append(("", None))
            body += shown
            body.append(("", None))
    changes = deletions + fresh_jobs
    summary = PlanSummary(
        f"Approve: delete {_plural(deletions, 'stale Job')}, start {_plural(fresh_jobs, 'fresh Job')} on {cluster}"[:200], changes
    )
    summary.intro = [
        f"## {TITLES['cronjob_refresh']} on `{cluster}`",
        "",
        f"**{_plural(deletions, 'stale Job')} deleted** (with their pods: propagation Background, UID precondition, each judged again "
        f"right before) and **{_plural(fresh_jobs, 'fresh Job')} started**, for {_plural(cronjobs, 'CronJob')}. The groups of "
        "namespaces run side by side; within a group, CronJob by CronJob in the order shown: its stale Jobs deleted, their pods "
        "gone, then its fresh Job started.",
    ]
    summary.lines = body
    if left:
        summary.add(f"**Left alone: {len(left)}**", None)
        summary.add("")
        summary.lines += left
    return summary


# ----------------------------------------------------------------------------- reading the run
def _all_mapped(ti: Any, task_id: str) -> list[Any]:
    values = ti.xcom_pull(task_ids=task_id)
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [values]
    return [v for v in values if v is not None]


def _node_replacement(cluster: str, ti: Any, params: Mapping[str, Any]) -> PlanSummary:
    return node_replacement_summary(cluster, ti.xcom_pull(task_ids="plan", key="plan"), params)


def _rollout_restart(cluster: str, ti: Any, params: Mapping[str, Any]) -> PlanSummary:
    shards = ti.xcom_pull(task_ids="plan")
    return rollout_restart_summary(cluster, ti.xcom_pull(task_ids="plan", key="plan"), shards if isinstance(shards, list) else [])


def _cronjob_refresh(cluster: str, ti: Any, params: Mapping[str, Any]) -> PlanSummary:
    return cronjob_refresh_summary(cluster, _all_mapped(ti, "refresh.judge"), params)


# The plan each operation shows: read from the XComs of the tasks upstream of the approval.
READERS: dict[str, Callable[[str, Any, Mapping[str, Any]], PlanSummary]] = {
    "node_replacement": _node_replacement,
    "rollout_restart": _rollout_restart,
    "cronjob_refresh": _cronjob_refresh,
}


def responder(event: Mapping[str, Any]) -> tuple[str, str | None]:
    """Who answered (name, id) from the HITL response; ``nobody`` when the timeout chose."""
    user = event.get("responded_by_user")
    if isinstance(user, Mapping) and (user.get("name") or user.get("id")):
        return str(user.get("name") or user.get("id")), (str(user["id"]) if user.get("id") is not None else None)
    return "nobody", None


def record_decision(context: Mapping[str, Any], cluster: str, operation: str, event: Mapping[str, Any], approved: bool, subject: str = "") -> dict[str, Any]:
    """The audit line of the answer: ``approve`` or ``reject``, naming who answered and the operation."""
    from kube_maintenance.core.audit import AuditTrail

    name, user_id = responder(event)
    at = event.get("responded_at")
    timed_out = bool(event.get("timedout")) or (not approved and name == "nobody")
    detail: dict[str, Any] = {"operation": operation, "by": name, "by_id": user_id, "responded_at": at.isoformat() if isinstance(at, dt.datetime) else at}
    if timed_out:
        detail["timed_out"] = True
    if subject:
        detail["plan"] = subject
    trail = AuditTrail.from_context(context, cluster, dry_run=False)
    return trail.record(
        "approve" if approved else "reject",
        f"cluster/{cluster}",
        before="awaiting approval",
        after=f"approved by {name}" if approved else (f"rejected by {name}" if not timed_out else "rejected: no answer in time"),
        outcome="done",
        **detail,
    )


# ------------------------------------------------------------------------------------ the task
class PlanApprovalOperator(ApprovalOperator):
    """Airflow's approval task with the run's plan as its body; passes at once (asking no one) for a
    dry run or a plan that changes nothing."""

    def __init__(self, *, cluster_name: str, operation: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Approve the {TITLES.get(operation, operation).lower()} on {cluster_name}")
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)  # what an unanswered request ends as
        super().__init__(ignore_downstream_trigger_rules=True, **kwargs)
        self.cluster_name = cluster_name
        self.operation = operation

    def _run_params(self, context: Mapping[str, Any]) -> dict[str, Any]:
        from kube_maintenance.core.forms import run_conf
        from kube_maintenance.core.registry import load_registry

        return run_conf(context, load_registry().cluster(self.cluster_name).operation(self.operation).get("defaults"))

    def execute(self, context: Any) -> Any:
        params = self._run_params(context)
        if params.get("dry_run") is not False:  # as every step reads it: a dry run unless explicitly off
            log.info("dry run: nothing will change, so no approval is asked for")
            return {"approval": "not needed", "why": "dry run"}
        summary = READERS[self.operation](self.cluster_name, context["ti"], params)
        if summary.changes == 0:
            log.info("the plan changes nothing on %s: no approval is asked for", self.cluster_name)
            return {"approval": "not needed", "why": "the plan changes nothing"}
        self.subject = summary.subject
        self.body = summary.markdown()
        log.info("waiting for a person to approve or reject this plan (the task's Required actions):\n%s", self.body)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            approved = list(event.get("chosen_options") or ()) == [self.APPROVE]
            try:  # what was answered, for the audit line (resumed in a new process: read the plan again)
                subject = READERS[self.operation](self.cluster_name, context["ti"], self._run_params(context)).subject
            except Exception:  # noqa: BLE001 - the answer is recorded whatever the plan's XComs say
                log.warning("could not read the plan again for the audit line", exc_info=True)
                subject = str(self.subject)
            line = record_decision(context, self.cluster_name, self.operation, event, approved, subject)
            log.info("%s", line["after"])
        # Approve: the run goes on. Reject: the provider skips every later step but the cleanup teardown.
        return super().execute_complete(context, event)


def approval_gate(cluster: ClusterConfig, operation: str) -> list[Any]:
    """The approval task of one DAG, to chain between its plan and the step taking the lock (``[]``
    for a cluster without ``requires_approval``: nothing is added to the DAG)."""
    if not cluster.requires_approval:
        return []
    return [
        PlanApprovalOperator(
            task_id=APPROVAL_TASK,
            cluster_name=cluster.name,
            operation=operation,
            response_timeout=dt.timedelta(hours=cluster.approval_timeout_hours),
            doc_md=APPROVAL_DOC,
        )
    ]
