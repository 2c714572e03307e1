"""Namespace-wide rollout restart: the work each task of the DAG does.

plan (namespaces, workloads, shards) -> preflight (lock) -> restart, mapped over shards of namespaces
(``shards.RestartShardOperator``: each look runs in a worker and returns quickly; while rollouts
roll, the task is deferred to the triggerer, holding no worker slot) -> release the lock and
summarise.

Within a shard, namespaces go one after the other and, in each, the kinds in the order the form
gives them. A look at one kind in one namespace is a single list: it starts restarts while the
shard's share of the cluster's ``max_concurrent_rollouts`` allows, judges each rollout as
``kubectl rollout status`` does, marks the ones seen complete, and fails on a failed one. Until the
next look the shard waits on those workloads only (``RolloutProgressTrigger``: a watch resumed from
that list's resourceVersion), so a namespace costs a list per change of its rollouts, not a poll
per workload.

Every look starts from what the cluster says, so retries, triggerer restarts and re-runs are safe: a
workload whose template carries a restartedAt at or after the run's start is never patched again,
only waited for.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kube_maintenance.rollout_restart import decisions as rules
from kube_maintenance.core.audit import AuditTrail
from kube_maintenance.core.k8s import DAEMONSETS, DEPLOYMENTS, NAMESPACES, PODS, STATEFULSETS, STRATEGIC_MERGE_PATCH, KubeApiError, KubeClient, ResourceRef
from kube_maintenance.rollout_restart.decisions import ParamError, RolloutRestartParams, Shard, Verdict, WorkloadView
from kube_maintenance.core.forms import run_conf
from kube_maintenance.core.selectors import selector_string
from kube_maintenance.core.runtime import TaskRuntime, begin_run, label_map_index, drop_lock, fail, fail_if_steps_failed, renew_lock, runtime_for, skip, take_lock

log = logging.getLogger("kube_maintenance.rollout_restart")

STOPPED_BY_FAILURE = "not starting more restarts: another shard failed"
STOPPED_BY_WINDOW = "not starting more restarts"
STOP_CHECK_SECONDS = 1.0  # how stale a shard's view of the stop signal may be within a look

KIND_REFS: dict[str, ResourceRef] = {rules.DEPLOYMENT: DEPLOYMENTS, rules.DAEMONSET: DAEMONSETS, rules.STATEFULSET: STATEFULSETS}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _params(cluster_name: str, context: Mapping[str, Any]) -> tuple[RolloutRestartParams, TaskRuntime]:
    from kube_maintenance.core.registry import load_registry

    cluster = load_registry().cluster(cluster_name)
    try:
        params = RolloutRestartParams.from_mapping(run_conf(context, cluster.operation("rollout_restart").get("defaults")), cluster.protected_namespaces)
    except ParamError as exc:
        fail(str(exc))
    return params, runtime_for(cluster_name, context, params.dry_run)


def run_started(context: Mapping[str, Any]) -> dt.datetime:
    """When the run began, to the second: its ``run_after`` (the trigger time, or the window opening
    of a scheduled run). Fixed for the run's life, so clearing and re-running its tasks keeps it."""
    dag_run = context.get("dag_run")
    for attr in ("run_after", "logical_date", "start_date"):
        value = getattr(dag_run, attr, None)
        if isinstance(value, dt.datetime):
            return rules.run_start_second(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    return rules.run_start_second(_now())


# ------------------------------------------------------------------------------------------------ plan
@dataclass
class RestartPlan:
    since: dt.datetime
    namespaces: tuple[str, ...]
    views: list[WorkloadView]
    shards: list[Shard]
    left_out: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)  # workload -> what its restart will not change

    def refs(self, *verdicts: Verdict) -> list[str]:
        return [v.ref for v in self.views if v.verdict in verdicts]

    @property
    def pending(self) -> int:
        return sum(1 for v in self.views if v.verdict in (Verdict.RESTART, Verdict.ROLLING, Verdict.FAILED))

    def to_xcom(self, params: RolloutRestartParams) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "namespaces": list(self.namespaces),
            "kinds": list(params.kinds),
            "left_out": self.left_out,
            "restart": self.refs(Verdict.RESTART),
            "rolling": self.refs(Verdict.ROLLING),
            "complete": self.refs(Verdict.COMPLETE),
            "failed": {v.ref: v.why for v in self.views if v.verdict is Verdict.FAILED},
            "skipped": {v.ref: v.why for v in self.views if v.verdict is Verdict.SKIP},
            "dry_run": params.dry_run,
        }


def list_workloads(kube: KubeClient, kinds: tuple[str, ...], namespaces: tuple[str, ...], workload_selector: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, object) for every workload of the kinds in the namespaces: one cluster-wide list per kind."""
    wanted = set(namespaces)
    found = []
    for kind in kinds:
        items, _ = kube.list(KIND_REFS[kind], label_selector=workload_selector or None)
        found += [(kind, obj) for obj in items if obj["metadata"].get("namespace") in wanted]
    return found


def recent_since(params: RolloutRestartParams, since: dt.datetime) -> dt.datetime | None:
    """Restarts at or after this time, before the run, count as done (None: the option is off)."""
    if params.skip_if_restarted_within_minutes <= 0:
        return None
    return since - dt.timedelta(minutes=params.skip_if_restarted_within_minutes)


def make_plan(kube: KubeClient, params: RolloutRestartParams, protected: tuple[str, ...], since: dt.datetime, max_shards: int) -> RestartPlan:
    namespace_objects, _ = kube.list(NAMESPACES)
    selection = rules.select_namespaces(namespace_objects, params, protected)
    now = _now()
    recent = recent_since(params, since)
    found = list_workloads(kube, params.kinds, selection.namespaces, params.workload_selector)
    views = [rules.judge(obj, kind, since, now, params.rollout_timeout_seconds, recent_since=recent) for kind, obj in found]
    if recent is not None:
        # A deploy that replaced every pod since ``recent`` restarted the workload as well as we
        # would: look at the pods of the namespaces that still have something to restart.
        pods_by_namespace = {ns: kube.list(PODS, ns)[0] for ns in sorted({v.namespace for v in views if v.verdict is Verdict.RESTART})}
        for i, (view, (kind, obj)) in enumerate(zip(views, found)):
            if view.verdict is Verdict.RESTART:
                replaced_at = rules.oldest_pod_created(obj, pods_by_namespace[view.namespace])
                views[i] = rules.judge(obj, kind, since, now, params.rollout_timeout_seconds, recent_since=recent, pods_replaced_at=replaced_at)
    pending: dict[str, int] = {}
    for view in views:
        if view.verdict in (Verdict.RESTART, Verdict.ROLLING, Verdict.FAILED):
            pending[view.namespace] = pending.get(view.namespace, 0) + 1
    shards = rules.shard_namespaces(pending, max_shards, params.max_concurrent_rollouts, rules.last_restarted_by_namespace(found))
    warnings = {rules.workload_ref(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]): w for kind, obj in found if (w := rules.partial_restart_warning(obj, kind))}
    return RestartPlan(since, selection.namespaces, sorted(views, key=lambda v: v.ref), shards, selection.left_out, warnings)


def _max_map_length() -> int:
    """Airflow's limit on a mapped task's length ([core] max_map_length)."""
    try:
        from airflow.sdk.configuration import conf

        return conf.getint("core", "max_map_length", fallback=1024)
    except Exception:  # noqa: BLE001 - no configuration to read: Airflow's default
        return 1024


def plan(cluster_name: str, max_parallel_tasks: int = 8, **context: Any) -> list[dict[str, Any]]:
    """Validate, choose namespaces and workloads, log the plan; return the shards to map over
    (the plan itself goes to the XCom key "plan")."""
    params, rt = _params(cluster_name, context)
    begin_run(rt, params)
    since = run_started(context)
    try:
        the_plan = make_plan(rt.kube, params, rt.cluster.protected_namespaces, since, min(max_parallel_tasks, _max_map_length()))
    except ParamError as exc:
        fail(str(exc))
    for ns, why in sorted(the_plan.left_out.items()):
        log.info("not restarting namespace %s: %s", ns, why)
        if why.startswith("opted out"):
            rt.audit.record("skip-namespace", f"namespace/{ns}", outcome="skipped", why=why)
    for view in the_plan.views:
        if view.verdict is Verdict.RESTART:
            extra = {"warning": the_plan.warnings[view.ref]} if view.ref in the_plan.warnings else {}
            if extra:
                log.warning("%s: %s", view.ref, extra["warning"])
            rt.audit.record("plan-restart", view.ref, before=rules.format_restarted_at(view.restarted_at) if view.restarted_at else None, after="restarted", outcome="planned", kind=view.kind, **extra)
        elif view.verdict is Verdict.SKIP:
            rt.audit.record("skip-restart", view.ref, outcome="skipped", kind=view.kind, why=view.why)
        else:
            log.info("%s: already restarted since the run began (%s): %s", view.ref, view.verdict.value, view.why)
    log.info(
        "plan for %s since %s: %d namespace(s) %s; %d to restart, %d rolling, %d complete, %d skipped, %d failed; shards %s",
        rt.cluster.name,
        since.isoformat(),
        len(the_plan.namespaces),
        list(the_plan.namespaces),
        len(the_plan.refs(Verdict.RESTART)),
        len(the_plan.refs(Verdict.ROLLING)),
        len(the_plan.refs(Verdict.COMPLETE)),
        len(the_plan.refs(Verdict.SKIP)),
        len(the_plan.refs(Verdict.FAILED)),
        [(s.namespaces, s.max_in_flight) for s in the_plan.shards],
    )
    context["ti"].xcom_push(key="plan", value=the_plan.to_xcom(params))
    return [s.to_xcom() for s in the_plan.shards]


def _plan_from(context: Mapping[str, Any]) -> dict[str, Any] | None:
    return context["ti"].xcom_pull(task_ids="plan", key="plan")


# ------------------------------------------------------------------------------------------- preflight
def preflight(cluster_name: str, **context: Any) -> str:
    params, rt = _params(cluster_name, context)
    the_plan = _plan_from(context)
    if not the_plan:
        fail("no plan: the plan task produced nothing")
    assert the_plan is not None
    if not (the_plan["restart"] or the_plan["rolling"] or the_plan["failed"]):
        skip(f"nothing to restart in {', '.join(the_plan['namespaces']) or 'no namespace'}")
    outcome = take_lock(rt, params.dry_run)
    if params.dry_run:
        skip("dry run: plan logged, nothing changed")
    return outcome


# --------------------------------------------------------------------------------------------- restart
class RolloutFailed(Exception):
    """A workload's rollout failed; the message names it."""


@dataclass
class ShardResult:
    finished: bool = False  # every namespace of the shard is done (or stopped, see ``stopped``)
    restarted: list[str] = field(default_factory=list)  # patched by this call
    failures: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None  # why restarts stopped starting (the window closing)


@dataclass
class Wait:
    """What a shard waits on after a look: its rollouts in flight, of one kind in one namespace, as
    the look saw them (the resourceVersion of its list, and each one's after the look's own
    patches), until ``wake_at`` at the latest (None: nothing is due; the caller's longest sleep)."""

    ref: ResourceRef
    namespace: str
    label_selector: str | None
    resource_version: str
    seen: dict[str, str]
    wake_at: dt.datetime | None
    why: str
    kind: str = rules.DEPLOYMENT

    def relevant(self, obj: dict[str, Any]) -> bool:
        """As the trigger has it: only a rollout settling (or going) wakes the shard."""
        return rules.rollout_settled(obj, self.kind)

    @property
    def watch(self) -> dict[str, Any]:
        from kube_maintenance.core.watches import watch_target

        return watch_target(self.ref, self.namespace, self.resource_version, self.seen, self.label_selector, only_seen=True)


class KindRollout:
    """The workloads of one kind in one namespace: restart at most ``max_in_flight`` at once and
    look again (``look``) until each rollout completed, or one failed. Between looks the caller
    waits for a change of these workloads (``Wait``): in the triggerer, or in process (``run``)."""

    def __init__(
        self,
        kube: KubeClient,
        audit: AuditTrail,
        params: RolloutRestartParams,
        since: dt.datetime,
        namespace: str,
        kind: str,
        max_in_flight: int,
        result: ShardResult,
        may_start: Callable[[], str | None] = lambda: None,
        planned_skips: Mapping[str, str] | None = None,
        event: Callable[[Mapping[str, Any], str, str], None] = lambda obj, reason, message: None,
        patched: Mapping[str, int] | None = None,
    ) -> None:
        self.kube, self.audit, self.params, self.since = kube, audit, params, since
        self.namespace, self.kind, self.max_in_flight = namespace, kind, max_in_flight
        self.ref = KIND_REFS[kind]
        self.result = result
        self.may_start = may_start
        self.planned_skips = planned_skips or {}  # the plan's skips (restarted recently, opted out, ...)
        self.event = event
        self.patched: dict[str, int] = dict(patched or {})  # name -> generation our patch produced
        self.written: dict[str, str] = {}  # name -> resourceVersion our own last write left

    def _views(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> list[tuple[WorkloadView, dict[str, Any]]]:
        now = _now()
        out = []
        for (_, name), obj in sorted(objects.items()):
            view = rules.judge(obj, self.kind, self.since, now, self.params.rollout_timeout_seconds, self.patched.get(name))
            if view.verdict is Verdict.RESTART and view.ref in self.planned_skips:
                view = WorkloadView(view.kind, view.namespace, view.name, Verdict.SKIP, self.planned_skips[view.ref], view.restarted_at)
            out.append((view, obj))
        return out

    def _wrote(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta.get("resourceVersion"):
            self.written[meta["name"]] = meta["resourceVersion"]

    def _mark_rolled_out(self, view: WorkloadView, obj: dict[str, Any]) -> None:
        """First time a restart is seen complete: say so on the workload, so that a later dip of
        it (HPA, a crash, an eviction) is never judged a failure of this restart."""
        value = rules.restarted_at_value(obj)
        if value is None or rules.rolled_out_value(obj) == value:
            return
        try:
            marked = self.kube.patch(self.ref, view.name, rules.rolled_out_patch(value), namespace=self.namespace)
        except KubeApiError as err:
            if err.status == 404:
                return
            raise
        self._wrote(marked)
        self.audit.record("rolled-out", view.ref, before=view.why, after=value, kind=self.kind, namespace=self.namespace)
        self.event(marked, "RolloutComplete", f"rollout of restart {value} complete: {view.why}")

    def fail(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> str | None:
        failed = [v for v, _ in self._views(objects) if v.verdict is Verdict.FAILED]
        for view in failed:
            self.result.failures[view.ref] = view.why
        return "; ".join(f"{v.ref}: {v.why}" for v in failed) or None

    def step(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> bool:
        """One look at the namespace's workloads of the kind: start restarts while the budget
        allows; True once nothing is left rolling or to restart (or may be started)."""
        views = self._views(objects)
        for view, obj in views:
            if view.verdict is Verdict.COMPLETE:
                self._mark_rolled_out(view, obj)
        rolling = sum(1 for v, _ in views if v.verdict is Verdict.ROLLING)
        waiting = [(v, obj) for v, obj in views if v.verdict is Verdict.RESTART]
        for view, obj in waiting:
            if rolling >= self.max_in_flight:
                break
            closing = self.may_start()
            if closing:
                self.result.stopped = closing
                break
            if self._restart(view, obj):
                rolling += 1
        started = sum(1 for v, _ in waiting if v.name in self.patched)
        left = len(waiting) - started
        return rolling == 0 and (left == 0 or self.result.stopped is not None)

    def _restart(self, view: WorkloadView, obj: dict[str, Any]) -> bool:
        value = rules.format_restarted_at(_now())
        try:
            patched = self.kube.patch(self.ref, view.name, rules.restart_patch(value), namespace=self.namespace, content_type=STRATEGIC_MERGE_PATCH)
        except KubeApiError as err:
            if err.status == 404:
                log.info("%s is gone: nothing to restart", view.ref)
                return False
            raise
        generation = int(patched["metadata"].get("generation") or 0)
        self.patched[view.name] = generation
        self._wrote(patched)
        self.result.restarted.append(view.ref)
        self.audit.record("restart", view.ref, before=rules.restarted_at_value(obj), after=value, kind=self.kind, namespace=self.namespace, generation=generation)
        self.event(patched, "RolloutRestarted", f"restarted as kubectl rollout restart does ({rules.RESTARTED_AT_ANNOTATION}={value})")
        return True

    def look(self) -> Wait | None:
        """One look: list the kind in the namespace, fail on a failed rollout (RolloutFailed naming
        the workload), start what may start; None once this kind is done in the namespace, else
        what to wait on and until when at the latest."""
        selector = self.params.workload_selector or None
        items, resource_version = self.kube.list(self.ref, self.namespace, label_selector=selector)
        objects = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in items}
        reason = self.fail(objects)
        if reason:
            raise RolloutFailed(reason)
        if self.step(objects):
            return None
        now = _now()
        due = [self._check_stuck_pods(objects, now)]
        rolling = [(v, obj) for v, obj in self._views(objects) if v.verdict is Verdict.ROLLING]
        for view, obj in rolling:
            # A rollout that never completes changes nothing more to watch: look at its timeout
            # (judge calls it failed once it is past), and at a Deployment's progress deadline.
            if view.restarted_at is not None:
                due.append(view.restarted_at + dt.timedelta(seconds=self.params.rollout_timeout_seconds + 1))
            if self.kind == rules.DEPLOYMENT:
                deadline = rules.progress_deadline_at(obj)
                due.append(deadline + dt.timedelta(seconds=1) if deadline else None)
        # Only the rollouts in flight can change what the shard does next (progress, a slot freed,
        # a failure): the trigger wakes it for those alone, as this look left them.
        seen = {v.name: self.written.get(v.name) or obj["metadata"].get("resourceVersion") or "" for v, obj in rolling}
        why = f"{len(rolling)} {self.kind} rollout(s) in {self.namespace}: " + "; ".join(f"{v.name}: {v.why}" for v, _ in rolling[:5])
        # (A time already past is nothing to wake for: a progress deadline the controller has not
        # reported yet is left to the next look, at the longest sleep at the latest.)
        wake_at = min((d for d in due if d is not None and d > now), default=None)
        return Wait(self.ref, self.namespace, selector, resource_version, seen, wake_at, why, self.kind)

    def _check_stuck_pods(self, objects: Mapping[tuple[str, str], dict[str, Any]], now: dt.datetime) -> dt.datetime | None:
        """Fail (RolloutFailed) a StatefulSet or DaemonSet whose new pod is not Ready
        ``stuck_pod_seconds`` after it was created (they have no progress deadline of their own);
        when to look again for that (None: a Deployment, whose controller's progress deadline says it)."""
        if self.kind == rules.DEPLOYMENT:
            return None
        due: dt.datetime | None = None
        stuck_seconds = self.params.stuck_pod_seconds
        for view, obj in self._views(objects):
            if view.verdict is not Verdict.ROLLING or view.restarted_at is None:
                continue
            if (now - view.restarted_at).total_seconds() < stuck_seconds:
                at = view.restarted_at + dt.timedelta(seconds=stuck_seconds)
            else:
                pods, _ = self.kube.list(PODS, self.namespace, label_selector=selector_string(obj["spec"].get("selector")) or None)
                stuck = rules.stuck_pods(obj, pods, view.restarted_at, now, stuck_seconds)
                if stuck:
                    why = f"rollout stuck: new pod(s) {', '.join(stuck)}; {view.why}"
                    self.result.failures[view.ref] = why
                    raise RolloutFailed(f"{view.ref}: {why}")
                at = rules.next_stuck_check(obj, pods, view.restarted_at, now, stuck_seconds)
            due = at if due is None else min(due, at)
        return due


KIND_ORDER_KEY = "at"  # the shard's position, [namespace index, kind index], in a look's state


def look_at_shard(
    kube: KubeClient,
    audit: AuditTrail,
    params: RolloutRestartParams,
    since: dt.datetime,
    shard: Shard,
    state: dict[str, Any],
    result: ShardResult,
    may_start: Callable[[], str | None] = lambda: None,
    planned_skips: Mapping[str, str] | None = None,
    event: Callable[[Mapping[str, Any], str, str], None] = lambda obj, reason, message: None,
) -> Wait | None:
    """One look at a shard, from where ``state`` says it stands (its namespace and kind, and the
    generations this task instance's patches produced there; updated in place): namespaces one
    after the other, in each the kinds in order, each done before the next starts. None once the
    shard is done (or stopped: ``result.stopped``; or failed: ``result.failures``), else what the
    shard waits on."""
    position = state.get(KIND_ORDER_KEY) or [0, 0]
    ns_index, kind_index = int(position[0]), int(position[1])
    while ns_index < len(shard.namespaces):
        namespace, kind = shard.namespaces[ns_index], params.kinds[kind_index]
        rollout = KindRollout(kube, audit, params, since, namespace, kind, shard.max_in_flight, result, may_start, planned_skips, event, state.get("patched"))
        try:
            wait = rollout.look()
        except RolloutFailed as exc:
            if not result.failures:  # the failing workload is recorded where it is found; just in case
                result.failures[f"{kind.lower()}s in {namespace}"] = str(exc)
            return None
        if wait is not None:  # (stopped or not: what the shard started is followed to its end)
            state[KIND_ORDER_KEY] = [ns_index, kind_index]
            state["patched"] = rollout.patched
            return wait
        if result.stopped:
            result.finished = True
            return None
        state["patched"] = {}
        kind_index += 1
        if kind_index == len(params.kinds):
            ns_index, kind_index = ns_index + 1, 0
    state[KIND_ORDER_KEY] = [ns_index, 0]
    result.finished = True
    return None


def roll_shard(
    kube: KubeClient,
    audit: AuditTrail,
    params: RolloutRestartParams,
    since: dt.datetime,
    shard: Shard,
    seconds: float,
    may_start: Callable[[], str | None] = lambda: None,
    planned_skips: Mapping[str, str] | None = None,
    event: Callable[[Mapping[str, Any], str, str], None] = lambda obj, reason, message: None,
) -> ShardResult:
    """Restart and verify the shard's namespaces in process, for at most ``seconds``, waiting between
    looks as the triggerer does (the benchmark runs it without Airflow). Failures are in the result."""
    from kube_maintenance.core.watches import first_relevant_change

    result = ShardResult()
    state: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    while True:
        wait = look_at_shard(kube, audit, params, since, shard, state, result, may_start, planned_skips, event)
        remaining = deadline - time.monotonic()
        if wait is None or remaining <= 0:
            return result
        if wait.wake_at is not None:
            remaining = min(remaining, max(0.0, (wait.wake_at - _now()).total_seconds()))
        try:
            first_relevant_change(kube, wait.watch, remaining, wait.relevant)
        except Exception as exc:  # noqa: BLE001 - as in the triggerer: a wait cut short just looks again
            log.info("watching %s ended early: %s", wait.why, exc)


# How long a shard may take in all, as its sensor's timeout was: the task's own deadline.
SHARD_TIMEOUT_SECONDS = 48 * 3600


@dataclass
class ShardWaits:
    """A shard's look ended waiting: defer with this (see ``RestartShardOperator``)."""

    wait: Wait
    moment: dt.datetime
    state: dict[str, Any]


def restart(cluster_name: str, shard: dict[str, Any], state: dict[str, Any] | None = None, poke_interval: float = 15.0, **context: Any) -> dict[str, Any] | ShardWaits:
    """One look at a shard (``state``: where the last look left it, carried by the deferral).

    Restarts what may start now and judges every rollout as ``kubectl rollout status`` does; returns
    the shard's summary once every workload of it rolled out, else what to wait on (``ShardWaits``:
    the task defers, holding no worker slot, until one of those workloads changes or the next time
    it must look anyway, ``poke_interval`` at the latest). Fails fast, naming the workload, when a
    rollout fails (progress deadline, a pod never Ready, the timeout), and tells the other shards.
    """
    label_map_index(shard.get("namespaces"))
    params, rt = _params(cluster_name, context)
    if params.dry_run:
        skip("dry run")
    the_shard = Shard.from_xcom(shard)
    state = dict(state or {})
    now = _now()
    began = dt.datetime.fromisoformat(state["began"]) if state.get("began") else now
    state["began"] = began.isoformat()
    where = f"shard {the_shard.index} ({', '.join(the_shard.namespaces)})"
    if (now - began).total_seconds() > SHARD_TIMEOUT_SECONDS:
        fail(f"{where}: still not rolled out {SHARD_TIMEOUT_SECONDS // 3600} h after it began ({began.isoformat()}); the workloads left are in the summary")
    renew_lock(rt)
    lock = rt.lock
    stop_checked = {"at": 0.0, "why": None}

    def may_start() -> str | None:
        # Another shard's failure stops this one from starting restarts (what it started is still
        # followed). Read on the Lease at most once a second while starting restarts. A shard only
        # waits when it has nothing it may start (its budget is full), so a wait needs no timer for
        # it: the next look, at the first rollout that completes, reads it again before starting.
        if time.monotonic() - stop_checked["at"] >= STOP_CHECK_SECONDS:
            stop_checked.update(at=time.monotonic(), why=lock.stop_requested())
        if stop_checked["why"]:
            return f"{STOPPED_BY_FAILURE}: {stop_checked['why']}"
        if params.ignore_window:
            return None
        closed = rt.cluster.window.why_not(_now())
        return f"{STOPPED_BY_WINDOW}: {closed}" if closed else None

    planned_skips = (_plan_from(context) or {}).get("skipped") or {}
    result = ShardResult()
    wait = look_at_shard(rt.kube, rt.audit, params, run_started(context), the_shard, state, result, may_start, planned_skips, rt.event)
    state["restarted"] = int(state.get("restarted") or 0) + len(result.restarted)
    if result.failures:
        context["ti"].xcom_push(key="failures", value=result.failures)
        why = "; ".join(f"{ref}: {why}" for ref, why in sorted(result.failures.items()))
        try:
            lock.request_stop(why)
        except Exception as exc:  # noqa: BLE001 - the failure itself is what must be reported
            log.warning("could not tell the run's other shards to stop: %s", exc)
        fail("rollout failed: " + why)
    if wait is None and result.stopped:
        context["ti"].xcom_push(key="stopped", value=result.stopped)
        skip(f"{result.stopped}; the workloads not restarted wait for the next run")
    if wait is None:
        log.info("%s: every workload rolled out (%d restarted by this task)", where, state["restarted"])
        return {"shard": the_shard.index, "namespaces": list(the_shard.namespaces), "restarted": state["restarted"]}
    latest = min(now + dt.timedelta(seconds=poke_interval), began + dt.timedelta(seconds=SHARD_TIMEOUT_SECONDS))
    moment = max(now, min(wait.wake_at, latest)) if wait.wake_at is not None else latest
    log.info("%s: %s; restarted %d this look; waiting for a change until %s at the latest", where, wait.why, len(result.restarted), moment.isoformat())
    return ShardWaits(wait, moment, state)


# ---------------------------------------------------------------------------------------------- finish
def _pulled_list(context: Mapping[str, Any], key: str) -> list[Any]:
    """What every mapped ``restart`` task pushed under ``key`` (absent ones left out)."""
    pulled = context["ti"].xcom_pull(task_ids="restart", key=key)
    return [item for item in (pulled if isinstance(pulled, list) else [pulled]) if item]


def _shard_failures(context: Mapping[str, Any]) -> dict[str, str]:
    failures: dict[str, str] = {}
    for item in _pulled_list(context, "failures"):
        if isinstance(item, dict):
            failures.update(item)
    return failures


def cleanup(cluster_name: str, **context: Any) -> dict[str, Any]:
    """The run's teardown, whatever ended it (bad parameters, a failure, a run marked failed or
    successful): release the lock if this run holds it, summarise from the cluster, and fail the
    run if a step failed. Rollouts already started are not undone: they complete on their own."""
    from kube_maintenance.core.registry import load_registry

    cluster = load_registry().cluster(cluster_name)
    raw = run_conf(context, cluster.operation("rollout_restart").get("defaults"))
    try:
        params: RolloutRestartParams | None = RolloutRestartParams.from_mapping(raw, cluster.protected_namespaces)
    except ParamError:
        params = None
    dry_run = params.dry_run if params else raw.get("dry_run") is not False
    rt = runtime_for(cluster_name, context, dry_run)
    released = drop_lock(rt, dry_run)
    the_plan = _plan_from(context)
    if not the_plan or params is None:
        summary: dict[str, Any] = {"restarted": [], "skipped": {}, "failed": {}, "not_completed": {}, "note": "nothing planned"}
    elif dry_run:
        summary = {
            "would_restart": the_plan["restart"],
            "skipped": the_plan["skipped"],
            "already_restarted": the_plan["complete"] + the_plan["rolling"],
            "failed": the_plan["failed"],
        }
    else:
        # The truth at the end, from the cluster: what rolled out since the run began and what not.
        since = dt.datetime.fromisoformat(the_plan["since"])
        now = _now()
        found = list_workloads(rt.kube, params.kinds, tuple(the_plan["namespaces"]), params.workload_selector)
        planned_skips = the_plan.get("skipped") or {}
        views = []
        for kind, obj in found:
            view = rules.judge(obj, kind, since, now, params.rollout_timeout_seconds)
            if view.verdict is Verdict.RESTART and view.ref in planned_skips:
                view = WorkloadView(view.kind, view.namespace, view.name, Verdict.SKIP, planned_skips[view.ref], view.restarted_at)
            views.append(view)
        summary = rules.summarise(views, _shard_failures(context))
    cut_by_window = sorted({why for why in _pulled_list(context, "stopped") if not why.startswith(STOPPED_BY_FAILURE)})
    if cut_by_window and not dry_run:
        summary["cut_by_window"] = cut_by_window
    summary["namespaces"] = the_plan["namespaces"] if the_plan else []
    summary["lock_released"] = released
    rt.audit.record("summary", f"cluster/{rt.cluster.name}", after=summary, outcome="done")
    fail_if_steps_failed(context, f"lock released: {released}")
    if cut_by_window and not dry_run:
        left = len(summary.get("not_completed") or {})
        fail(
            f"incomplete: the maintenance window closed with {left} workload(s) not restarted ({cut_by_window[0]}); "
            "the next run starts with the namespaces restarted longest ago, and skips what was restarted within "
            "skip_if_restarted_within_minutes"
        )
    return summary
