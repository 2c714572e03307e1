"""Namespace-wide rollout restart: parameters, which workloads to restart, and when a rollout is done. Pure.

- The restart is ``kubectl rollout restart``'s: a strategic merge patch setting the pod template
  annotation ``kubectl.kubernetes.io/restartedAt`` to the current time (RFC 3339).
- Completion is ``kubectl rollout status``'s judgement, kind by kind, message for message
  (kubectl pkg/polymorphichelpers/rollout_status.go), so our verdict and kubectl's cannot drift apart.
- Paused Deployments and workloads whose update strategy is OnDelete are skipped: a restart would
  change nothing that runs (and kubectl refuses to restart a paused Deployment).
- A run restarts each workload once: a template whose restartedAt is at or after the run's start
  was restarted by this run (or by someone since it began) and is only waited for, never bounced again.
- A rollout is judged complete once, as ``kubectl rollout status`` stops at its first success: the
  run marks the workload (``kube-maintenance.io/rolled-out`` = the restartedAt it completed) and a
  later dip (an HPA scale-up, a crash) is not a failure of the run.
- Restarts are remembered across runs: a workload restarted within ``skip_if_restarted_within_minutes``
  before the run (by a run, ``kubectl rollout restart``, or a deploy that replaced every pod) counts as
  done. Restarts that would change nothing (no replicas, a partition above them, a DaemonSet on no
  node) and workloads or namespaces that opted out are skipped with their reason.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping

from kube_maintenance.core.optout import opted_out
from kube_maintenance.core.params import FieldReader, ParamError
from kube_maintenance.core.selectors import parse_label_selector, selector_string

Obj = dict[str, Any]

DEPLOYMENT, DAEMONSET, STATEFULSET = "Deployment", "DaemonSet", "StatefulSet"
KINDS = (DEPLOYMENT, DAEMONSET, STATEFULSET)
# Form spellings people type (kubectl's resource names and short names) -> the kind.
_KIND_ALIASES = {
    **{k.lower(): k for k in KINDS},
    "deployments": DEPLOYMENT,
    "deploy": DEPLOYMENT,
    "daemonsets": DAEMONSET,
    "ds": DAEMONSET,
    "statefulsets": STATEFULSET,
    "sts": STATEFULSET,
}
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# On the workload's own metadata (no new generation, no rollout): the restartedAt whose rollout was
# seen complete. Later dips of that workload are not this restart's failure.
ROLLED_OUT_ANNOTATION = "kube-maintenance.io/rolled-out"
# deploymentutil.TimedOutReason: the Progressing condition's reason once progressDeadlineSeconds passed.
TIMED_OUT_REASON = "ProgressDeadlineExceeded"


# ---------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class RolloutRestartParams:
    namespace_selector: str = ""
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = KINDS  # also the order in which the kinds of a namespace roll
    workload_selector: str = ""
    max_concurrent_rollouts: int = 5  # workloads rolling at once on the cluster
    rollout_timeout_seconds: int = 900  # per workload, counted from its restart
    stuck_pod_seconds: int = 300  # a StatefulSet/DaemonSet pod not Ready this long after creation fails the run
    skip_if_restarted_within_minutes: int = 0  # restarted this recently before the run: done, not bounced again (0: off)
    ignore_window: bool = False
    dry_run: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], protected_namespaces: Iterable[str] = ()) -> "RolloutRestartParams":
        """Validate a trigger form / conf; every problem is reported at once, naming the field."""
        read = FieldReader(raw, cls)

        def kinds() -> tuple[str, ...]:
            value = raw.get("kinds")
            if value is None or value == "" or value == []:
                read.check(not ("kinds" in raw and value is not None), f"kinds: choose at least one of {', '.join(KINDS)}")
                return KINDS
            names = read.names("kinds", " or ".join(KINDS))
            unknown = [v for v in names if v.lower() not in _KIND_ALIASES]
            read.check(not unknown, f"kinds: unknown {', '.join(map(repr, unknown))}; expected some of {', '.join(KINDS)}")
            return tuple(dict.fromkeys(_KIND_ALIASES[v.lower()] for v in names if v.lower() in _KIND_ALIASES)) or KINDS

        example = "app.kubernetes.io/managed-by=Helm"
        params = cls(
            namespace_selector=read.selector("namespace_selector", example=example).strip(),
            namespaces=read.namespace_names("namespaces"),
            exclude_namespaces=read.namespace_names("exclude_namespaces"),
            kinds=kinds(),
            workload_selector=read.selector("workload_selector", example=example).strip(),
            max_concurrent_rollouts=read.integer("max_concurrent_rollouts", 1, 100),
            rollout_timeout_seconds=read.integer("rollout_timeout_seconds", 10, 24 * 3600),
            stuck_pod_seconds=read.integer("stuck_pod_seconds", 5, 24 * 3600),
            skip_if_restarted_within_minutes=read.integer("skip_if_restarted_within_minutes", 0, 30 * 24 * 60),
            ignore_window=read.boolean("ignore_window"),
            dry_run=read.boolean("dry_run"),
        )
        # Restarting a whole cluster is never what an empty form means; a dry run may show it.
        read.check(
            bool(params.namespace_selector or params.namespaces) or params.dry_run,
            "namespace_selector / namespaces: choose the namespaces to restart, by label selector "
            "(e.g. app.kubernetes.io/managed-by=Helm) and/or by name (a dry run with neither shows every namespace)",
        )
        protected = [n for n in params.namespaces if n in set(protected_namespaces)]
        read.check(not protected, f"namespaces: {', '.join(protected)} protected on this cluster: never restarted; remove from namespaces")
        both = sorted(set(params.namespaces) & set(params.exclude_namespaces))
        read.check(not both, f"exclude_namespaces: {both} are also in namespaces")
        read.raise_if_problems()
        return params



# ---------------------------------------------------------------------------------------- namespaces
@dataclass(frozen=True)
class NamespaceSelection:
    namespaces: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)  # namespace -> why not, for the log


def select_namespaces(namespace_objects: Iterable[Obj], params: RolloutRestartParams, protected: Iterable[str]) -> NamespaceSelection:
    """Namespaces matching the selector, plus the named ones; minus excluded, protected and terminating.

    Raises ParamError when a named namespace does not exist (a typo must not silently do nothing).
    """
    protected_set = set(protected)
    matches = parse_label_selector(params.namespace_selector) if params.namespace_selector else None
    every_namespace = matches is None and not params.namespaces  # a dry run's empty form: show them all
    by_name = {o["metadata"]["name"]: o for o in namespace_objects}
    missing = [n for n in params.namespaces if n not in by_name]
    if missing:
        raise ParamError(f"namespaces: no such namespace(s) in the cluster: {', '.join(missing)}")
    chosen: list[str] = []
    left_out: dict[str, str] = {}
    for name in sorted(by_name):
        obj = by_name[name]
        named = name in params.namespaces
        if not named and not every_namespace and not (matches is not None and matches(obj["metadata"].get("labels") or {})):
            continue
        if name in protected_set:
            left_out[name] = "protected namespace"
        elif name in params.exclude_namespaces:
            left_out[name] = "excluded by the exclude_namespaces parameter"
        elif obj.get("metadata", {}).get("deletionTimestamp") or (obj.get("status") or {}).get("phase") == "Terminating":
            left_out[name] = "terminating"
        elif opted_out({**obj, "kind": "Namespace"}):
            left_out[name] = opted_out({**obj, "kind": "Namespace"}) or ""
        else:
            chosen.append(name)
    return NamespaceSelection(tuple(chosen), left_out)


# ------------------------------------------------------------------------------------------- restart
def format_restarted_at(at: dt.datetime) -> str:
    """RFC 3339 to the second, as kubectl writes it (``time.Now().Format(time.RFC3339)``), in UTC."""
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def restart_patch(restarted_at: str) -> Obj:
    """The strategic merge patch ``kubectl rollout restart`` sends."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}}


def restarted_at_value(obj: Obj) -> str | None:
    annotations = ((obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
    return annotations.get(RESTARTED_AT_ANNOTATION)


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 time (kubectl writes local offsets, we write Z); None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def run_start_second(started: dt.datetime) -> dt.datetime:
    """The run's start to the whole second: restartedAt has second precision, so a restart in the
    run's first second must still count as made since the run began."""
    return started.astimezone(dt.timezone.utc).replace(microsecond=0)


def skip_reason(obj: Obj, kind: str) -> str | None:
    """Why the workload is left alone: it opted out, or a restart would change nothing that runs."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    opt_out = opted_out({**obj, "kind": kind})
    if opt_out:
        return opt_out
    if kind == DEPLOYMENT and spec.get("paused"):
        return "paused Deployment: a restart would not roll until it is resumed (kubectl refuses it too)"
    if kind in (DAEMONSET, STATEFULSET) and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "updateStrategy OnDelete: pods change only when deleted, so a restart would replace none"
    if kind in (DEPLOYMENT, STATEFULSET) and spec.get("replicas") == 0:
        return "scaled to zero: no pod to restart"
    if kind == STATEFULSET:
        partition = _partition(obj)
        replicas = spec.get("replicas", 1)
        if partition is not None and replicas is not None and partition >= int(replicas):
            return f"rollingUpdate partition {partition} >= replicas {replicas}: a restart would update no pod"
    if kind == DAEMONSET and "desiredNumberScheduled" in status and _int(status, "desiredNumberScheduled") == 0:
        return "no node runs it (desiredNumberScheduled 0): no pod to restart"
    return None


def _partition(obj: Obj) -> int | None:
    strategy = (obj.get("spec") or {}).get("updateStrategy") or {}
    value = (strategy.get("rollingUpdate") or {}).get("partition")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def partial_restart_warning(obj: Obj, kind: str) -> str | None:
    """A StatefulSet whose partition leaves some pods on the old template after a restart."""
    partition = _partition(obj) if kind == STATEFULSET else None
    if partition:
        return f"rollingUpdate partition {partition}: ordinals below {partition} keep their current pods"
    return None


def rolled_out_value(obj: Obj) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ROLLED_OUT_ANNOTATION)


def rolled_out_patch(restarted_at: str) -> Obj:
    """Marks, on the workload's metadata, that the rollout of this restartedAt completed."""
    return {"metadata": {"annotations": {ROLLED_OUT_ANNOTATION: restarted_at}}}


# ------------------------------------------------------------------------------------ rollout status
@dataclass(frozen=True)
class RolloutStatus:
    """What ``kubectl rollout status --watch=false`` says: its message, done, or an error."""

    message: str
    done: bool
    error: str | None = None


def _int(mapping: Mapping[str, Any] | None, key: str) -> int:
    value = (mapping or {}).get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _condition(status: Mapping[str, Any], cond_type: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == cond_type:
            return cond
    return None


def rollout_status(obj: Obj, kind: str) -> RolloutStatus:
    """kubectl's StatusViewer for the kind (revision 0), message for message."""
    if kind == DEPLOYMENT:
        return _deployment_status(obj)
    if kind == DAEMONSET:
        return _daemonset_status(obj)
    if kind == STATEFULSET:
        return _statefulset_status(obj)
    raise ValueError(f"no status viewer has been implemented for {kind}")


def _deployment_status(d: Obj) -> RolloutStatus:
    name = d["metadata"]["name"]
    spec, status = d.get("spec") or {}, d.get("status") or {}
    if _int(d["metadata"], "generation") > _int(status, "observedGeneration"):
        return RolloutStatus("Waiting for deployment spec update to be observed...\n", False)
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == TIMED_OUT_REASON:
        return RolloutStatus("", False, f'deployment "{name}" exceeded its progress deadline')
    replicas, updated = spec.get("replicas"), _int(status, "updatedReplicas")
    if replicas is not None and updated < int(replicas):
        return RolloutStatus(f'Waiting for deployment "{name}" rollout to finish: {updated} out of {replicas} new replicas have been updated...\n', False)
    if _int(status, "replicas") > updated:
        return RolloutStatus(f'Waiting for deployment "{name}" rollout to finish: {_int(status, "replicas") - updated} old replicas are pending termination...\n', False)
    if _int(status, "availableReplicas") < updated:
        return RolloutStatus(f'Waiting for deployment "{name}" rollout to finish: {_int(status, "availableReplicas")} of {updated} updated replicas are available...\n', False)
    return RolloutStatus(f'deployment "{name}" successfully rolled out\n', True)


def _daemonset_status(ds: Obj) -> RolloutStatus:
    name = ds["metadata"]["name"]
    spec, status = ds.get("spec") or {}, ds.get("status") or {}
    if (spec.get("updateStrategy") or {}).get("type") != "RollingUpdate":
        return RolloutStatus("", True, "rollout status is only available for RollingUpdate strategy type")
    if _int(ds["metadata"], "generation") > _int(status, "observedGeneration"):
        return RolloutStatus("Waiting for daemon set spec update to be observed...\n", False)
    desired, updated = _int(status, "desiredNumberScheduled"), _int(status, "updatedNumberScheduled")
    if updated < desired:
        return RolloutStatus(f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} new pods have been updated...\n', False)
    if _int(status, "numberAvailable") < desired:
        return RolloutStatus(f'Waiting for daemon set "{name}" rollout to finish: {_int(status, "numberAvailable")} of {desired} updated pods are available...\n', False)
    return RolloutStatus(f'daemon set "{name}" successfully rolled out\n', True)


def _statefulset_status(sts: Obj) -> RolloutStatus:
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") != "RollingUpdate":
        return RolloutStatus("", True, "rollout status is only available for RollingUpdate strategy type")
    observed = _int(status, "observedGeneration")
    if observed == 0 or _int(sts["metadata"], "generation") > observed:
        return RolloutStatus("Waiting for statefulset spec update to be observed...\n", False)
    replicas, ready = spec.get("replicas"), _int(status, "readyReplicas")
    if replicas is not None and ready < int(replicas):
        return RolloutStatus(f"Waiting for {int(replicas) - ready} pods to be ready...\n", False)
    updated = _int(status, "updatedReplicas")
    rolling_update = strategy.get("rollingUpdate")
    if rolling_update is not None:
        partition = rolling_update.get("partition")
        if replicas is not None and partition is not None and updated < int(replicas) - int(partition):
            return RolloutStatus(f"Waiting for partitioned roll out to finish: {updated} out of {int(replicas) - int(partition)} new pods have been updated...\n", False)
        return RolloutStatus(f"partitioned roll out complete: {updated} new pods have been updated...\n", True)
    if status.get("updateRevision") != status.get("currentRevision"):
        return RolloutStatus(f"waiting for statefulset rolling update to complete {updated} pods at revision {status.get('updateRevision', '')}...\n", False)
    return RolloutStatus(f"statefulset rolling update complete {_int(status, 'currentReplicas')} pods at revision {status.get('currentRevision', '')}...\n", True)


def rollout_settled(obj: Obj, kind: str) -> bool:
    """Whether ``kubectl rollout status`` would now stop waiting on the workload: its rollout is done
    or failed (a progress deadline exceeded). Only such a change can change what a waiting restart
    shard does next (start the next restart, mark it rolled out, fail): its trigger wakes it for
    those alone, and the shard judges for itself when it looks."""
    status = rollout_status(obj, kind)
    return status.done or status.error is not None


# -------------------------------------------------------------------------------------------- verdicts
class Verdict(str, Enum):
    SKIP = "skip"  # paused / OnDelete: reported, never patched
    RESTART = "restart"  # not restarted since the run began: to patch
    ROLLING = "rolling"  # restarted since the run began, rollout not complete yet
    COMPLETE = "complete"  # restarted since the run began and rolled out
    FAILED = "failed"  # restarted, and its rollout failed (progress deadline) or outlasted the timeout


@dataclass(frozen=True)
class WorkloadView:
    kind: str
    namespace: str
    name: str
    verdict: Verdict
    why: str  # skip reason, kubectl's status message or the failure
    restarted_at: dt.datetime | None = None

    @property
    def ref(self) -> str:
        return workload_ref(self.kind, self.namespace, self.name)


def workload_ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind.lower()}/{namespace}/{name}"


def judge(
    obj: Obj,
    kind: str,
    since: dt.datetime,
    now: dt.datetime,
    timeout_seconds: float,
    patched_generation: int | None = None,
    recent_since: dt.datetime | None = None,
    pods_replaced_at: dt.datetime | None = None,
) -> WorkloadView:
    """Where one workload stands in this run.

    ``since`` is the run's start (see ``run_start_second``); ``patched_generation`` is the generation
    our own patch returned, when this very task patched it: until the object seen has reached that
    generation it is an older copy from the watch, still rolling as far as we know.
    ``recent_since``: a restart at or after it (but before the run) counts as done, as does a
    workload whose pods were all created at or after it (``pods_replaced_at``: its oldest pod's).
    """
    meta = obj["metadata"]
    ns, name = meta.get("namespace", ""), meta["name"]
    reason = skip_reason(obj, kind)
    if reason:
        return WorkloadView(kind, ns, name, Verdict.SKIP, reason)
    restarted = parse_time(restarted_at_value(obj))
    ours = patched_generation is not None or (restarted is not None and restarted >= since)
    if not ours:
        if recent_since is not None and restarted is not None and restarted >= recent_since:
            why = f"restarted at {format_restarted_at(restarted)}, within skip_if_restarted_within_minutes before the run: done"
            return WorkloadView(kind, ns, name, Verdict.SKIP, why, restarted)
        if recent_since is not None and pods_replaced_at is not None and pods_replaced_at >= recent_since:
            why = f"every pod created since {format_restarted_at(pods_replaced_at)} (a deploy or a restart), within skip_if_restarted_within_minutes: done"
            return WorkloadView(kind, ns, name, Verdict.SKIP, why, restarted)
        return WorkloadView(kind, ns, name, Verdict.RESTART, "not restarted since the run began", restarted)
    if patched_generation is not None and _int(meta, "generation") < patched_generation:
        # Not our restart's time yet (the copy predates it): "now" keeps every deadline ahead.
        return WorkloadView(kind, ns, name, Verdict.ROLLING, "waiting for the restart to be seen", now)
    if rolled_out_value(obj) is not None and rolled_out_value(obj) == restarted_at_value(obj):
        # kubectl rollout status stops at the first success; so do we. A later dip is not ours.
        return WorkloadView(kind, ns, name, Verdict.COMPLETE, f"rolled out (restart {restarted_at_value(obj)} seen complete)", restarted)
    status = rollout_status(obj, kind)
    if status.error:
        return WorkloadView(kind, ns, name, Verdict.FAILED, status.error, restarted)
    if status.done:
        return WorkloadView(kind, ns, name, Verdict.COMPLETE, status.message.strip(), restarted)
    started = restarted or now
    if (now - started).total_seconds() > timeout_seconds:
        why = f"rollout did not complete within {timeout_seconds:.0f}s of its restart at {format_restarted_at(started)}: {status.message.strip()}"
        return WorkloadView(kind, ns, name, Verdict.FAILED, why, restarted)
    return WorkloadView(kind, ns, name, Verdict.ROLLING, status.message.strip(), started)


# ------------------------------------------------------------------------------------------- stuck pods


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or ())


def stuck_pods(workload: Obj, pods: Iterable[Obj], restarted: dt.datetime, now: dt.datetime, stuck_seconds: float) -> list[str]:
    """Pods of the workload (controller owner reference) created by its restart that are still not
    Ready ``stuck_seconds`` after they were created: a StatefulSet or DaemonSet rolls no further
    past such a pod, and has no progress deadline of its own to say so."""
    uid = workload["metadata"].get("uid")
    stuck = []
    for pod in pods:
        meta = pod["metadata"]
        owner = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
        if owner is None or owner.get("uid") != uid or meta.get("deletionTimestamp"):
            continue
        created = parse_time(meta.get("creationTimestamp"))
        if created is None or created < restarted or _pod_ready(pod):
            continue
        if (now - created).total_seconds() >= stuck_seconds:
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            stuck.append(f"{meta['name']} ({phase}, not Ready {int((now - created).total_seconds())}s after it was created)")
    return sorted(stuck)


def next_stuck_check(workload: Obj, pods: Iterable[Obj], restarted: dt.datetime, now: dt.datetime, stuck_seconds: float) -> dt.datetime:
    """When ``stuck_pods`` could first name a pod of the workload that it does not name now: the
    earliest moment one of its new pods not Ready yet reaches ``stuck_seconds`` (a pod made from
    now on cannot before ``now + stuck_seconds``; none before ``restarted + stuck_seconds``)."""
    uid = workload["metadata"].get("uid")
    due = max(now, restarted) + dt.timedelta(seconds=stuck_seconds)
    for pod in pods:
        meta = pod["metadata"]
        owner = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
        if owner is None or owner.get("uid") != uid or meta.get("deletionTimestamp") or _pod_ready(pod):
            continue
        created = parse_time(meta.get("creationTimestamp"))
        if created is not None and created >= restarted:
            due = min(due, max(created + dt.timedelta(seconds=stuck_seconds), now))
    return due


def progress_deadline_at(deployment: Obj) -> dt.datetime | None:
    """When the Deployment controller will call a rollout that stops progressing timed out
    (deploymentutil.DeploymentTimedOut: the Progressing condition's lastUpdateTime plus
    progressDeadlineSeconds); None when it has no deadline, no such condition, or already did."""
    seconds = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
    progressing = _condition(deployment.get("status") or {}, "Progressing")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds >= 2**31 - 1 or progressing is None or progressing.get("reason") == TIMED_OUT_REASON:
        return None
    updated = parse_time(progressing.get("lastUpdateTime"))
    return None if updated is None else updated + dt.timedelta(seconds=seconds)


# --------------------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    """What one mapped task does: these namespaces, in order, with at most ``max_in_flight`` rolling."""

    index: int
    namespaces: tuple[str, ...]
    max_in_flight: int

    def to_xcom(self) -> dict[str, Any]:
        return {"index": self.index, "namespaces": list(self.namespaces), "max_in_flight": self.max_in_flight}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> "Shard":
        return cls(int(data["index"]), tuple(data["namespaces"]), int(data["max_in_flight"]))


def shard_namespaces(
    pending: Mapping[str, int], max_shards: int, max_concurrent: int, last_restarted: Mapping[str, dt.datetime | None] | None = None
) -> list[Shard]:
    """Namespaces with work (``pending``: namespace -> workloads to restart or wait for) in at most
    ``max_shards`` shards, balanced by workload count (largest first into the lightest shard).

    The cluster's budget of ``max_concurrent`` rollouts is split between the shards (which may all
    run at once), so there are never more shards than rollouts allowed and each gets at least one.
    Within a shard, the namespace restarted longest ago (or never) goes first
    (``last_restarted``: its most recent restart): a run cut by its maintenance window leaves the
    most recently restarted namespaces for later, so every namespace is reached in turn.
    """
    namespaces = [ns for ns, count in pending.items() if count > 0]
    count = min(max_shards, max_concurrent, len(namespaces))
    if count <= 0:
        return []
    loads = [0] * count
    members: list[list[str]] = [[] for _ in range(count)]
    for ns in sorted(namespaces, key=lambda n: (-pending[n], n)):
        lightest = min(range(count), key=lambda i: (loads[i], i))
        members[lightest].append(ns)
        loads[lightest] += pending[ns]
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    stalest_first = lambda ns: ((last_restarted or {}).get(ns) or oldest, ns)  # noqa: E731
    return [
        Shard(i, tuple(sorted(members[i], key=stalest_first)), max_concurrent // count + (1 if i < max_concurrent % count else 0))
        for i in range(count)
    ]


def last_restarted_by_namespace(objects: Iterable[tuple[str, Obj]]) -> dict[str, dt.datetime | None]:
    """The most recent restartedAt of each namespace's workloads (None: never restarted)."""
    out: dict[str, dt.datetime | None] = {}
    for _, obj in objects:
        ns = obj["metadata"].get("namespace", "")
        at = parse_time(restarted_at_value(obj))
        current = out.get(ns)
        out[ns] = at if current is None or (at is not None and at > current) else current
    return out


def oldest_pod_created(workload: Obj, pods: Iterable[Obj]) -> dt.datetime | None:
    """When the workload's oldest running pod (by its selector) was created; None when it has none."""
    matches = parse_label_selector(selector_string((workload.get("spec") or {}).get("selector")) or "")
    times = [
        t for p in pods
        if not p["metadata"].get("deletionTimestamp") and matches(p["metadata"].get("labels") or {})
        and (t := parse_time(p["metadata"].get("creationTimestamp"))) is not None
    ]
    return min(times) if times else None


# -------------------------------------------------------------------------------------------- summary
def summarise(views: Iterable[WorkloadView], failures: Mapping[str, str]) -> dict[str, Any]:
    """The run's end: restarted (and rolled out), skipped, failed, and not completed, by workload."""
    restarted, skipped, failed, not_completed = [], {}, dict(failures), {}
    for view in sorted(views, key=lambda v: v.ref):
        if view.ref in failures:
            continue  # why the run failed stays the report, even if the rollout got through since
        if view.verdict is Verdict.COMPLETE:
            restarted.append(view.ref)
        elif view.verdict is Verdict.SKIP:
            skipped[view.ref] = view.why
        elif view.verdict is Verdict.FAILED:
            failed[view.ref] = view.why
        else:
            not_completed[view.ref] = view.why if view.verdict is Verdict.ROLLING else "not restarted"
    return {"restarted": restarted, "skipped": skipped, "failed": failed, "not_completed": not_completed}
