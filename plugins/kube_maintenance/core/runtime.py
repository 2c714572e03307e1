"""What every task of every operation starts from: its cluster, its clients, its audit trail."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from kube_maintenance.core.audit import AuditTrail
from kube_maintenance.core.registry import ClusterConfig, load_registry

log = logging.getLogger("kube_maintenance")


@dataclass
class TaskRuntime:
    cluster: ClusterConfig
    audit: AuditTrail
    context: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @functools.cached_property
    def kube(self) -> Any:
        from kube_maintenance.core.k8s import KubeClient

        return KubeClient.for_cluster(self.cluster)

    @functools.cached_property
    def cloud(self) -> Any:
        from kube_maintenance.core.cloud import Cloud

        if not self.cluster.aws_conn_id:
            raise ValueError(f"cluster {self.cluster.name} has no aws_conn_id in the registry; node replacement needs one")
        return Cloud(self.cluster.aws_conn_id, self.cluster.region)

    @property
    def run_type(self) -> str:
        dag_run = self.context.get("dag_run")
        run_type = getattr(dag_run, "run_type", "")
        return str(getattr(run_type, "value", run_type) or "")

    @property
    def scheduled(self) -> bool:
        return self.run_type == "scheduled"

    def event(self, obj: Mapping[str, Any], reason: str, message: str, event_type: str = "Normal") -> None:
        """A Kubernetes Event on an object this run changed (never in a dry run; never fails)."""
        if self.audit.dry_run:
            return
        from kube_maintenance.core.events import record_event

        record_event(self.kube, obj, reason, message, self.holder, event_type)

    @property
    def lock(self) -> Any:
        """This run's handle on the cluster's maintenance lock, in the registry's lock namespace."""
        from kube_maintenance.core.lock import ClusterLock

        return ClusterLock(self.kube, self.holder, namespace=self.cluster.lock_namespace)

    @property
    def holder(self) -> str:
        """Lock holder identity: the DAG run, so retries and re-runs of it find their own lock."""
        dag_run = self.context.get("dag_run")
        return f"{getattr(dag_run, 'dag_id', '?')}/{getattr(dag_run, 'run_id', '?')}"


# A mapped task instance is shown in the grid by this label, not by its index: the namespaces it works
# on. The template cannot fail (an error there would fail the task); the task sets the variable.
MAP_LABEL_TEMPLATE = "{{ kube_maintenance_map_label | default('') }}"


def label_map_index(namespaces: Any) -> None:
    """Name this mapped task instance after the namespaces it works on (first thing in the task)."""
    from airflow.sdk import get_current_context

    names = ", ".join(namespaces or ())
    try:
        get_current_context()["kube_maintenance_map_label"] = names if len(names) <= 120 else names[:117] + "..."
    except RuntimeError:  # called outside a running task (a unit test): nothing to name
        pass


def skip(message: str) -> None:
    """End the task as skipped: nothing to do (a dry run, a batch the plan does not have)."""
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(message)


def fail(message: str) -> None:
    """Fail the task without retries: retrying cannot fix bad input or a budget that says no."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def begin_run(rt: TaskRuntime, params: Any) -> None:
    """The first step of every run: log its parameters, then start only inside the window.

    Outside it a scheduled run is skipped (nothing done); a manual one fails, saying how to
    override. A dry run changes nothing, so it may run at any time.
    """
    from dataclasses import asdict

    rt.audit.record("parameters", f"cluster/{rt.cluster.name}", after=asdict(params), outcome="done")
    closed = None if params.dry_run or params.ignore_window else rt.cluster.window.why_not(_utcnow())
    if closed:
        if rt.scheduled:
            skip(closed + "; nothing done")
        fail(closed + "; set ignore_window to run anyway, or run with dry_run")


def take_lock(rt: TaskRuntime, dry_run: bool) -> str:
    """Take the cluster's maintenance lock for this run (a dry run only logs that it would)."""
    from kube_maintenance.core.lock import ClusterBusy, lock_target

    target = lock_target(rt.cluster.lock_namespace)
    if dry_run:
        rt.audit.record("lock", target, after=rt.holder)
        return "dry run: no lock taken"
    try:
        outcome = rt.lock.acquire()
    except ClusterBusy as exc:
        fail(str(exc))
    rt.audit.record("lock", target, before=None, after=rt.holder, outcome=outcome)
    return outcome


def renew_lock(rt: TaskRuntime) -> None:
    """Renew the run's lock before more writes; fail at once if the lock is no longer ours."""
    from kube_maintenance.core.lock import ClusterBusy

    try:
        rt.lock.renew()
    except ClusterBusy as exc:
        fail(str(exc))


def drop_lock(rt: TaskRuntime, dry_run: bool) -> bool:
    """Release the lock if this run holds it; safe after any failure, bad input included."""
    from kube_maintenance.core.lock import lock_target

    if dry_run:
        return False
    released = rt.lock.release()
    if released:
        rt.audit.record("unlock", lock_target(rt.cluster.lock_namespace), before=rt.holder, after=None)
    return released


# Task states that mean a step did not do its work (a task marked failed in the UI included).
_FAILED_STATES = ("failed", "upstream_failed")


def failed_steps(context: Mapping[str, Any]) -> list[str]:
    """This run's steps that failed, as ``task_id`` or ``task_id_<map index>``; the caller excluded."""
    ti = context["ti"]
    dag_run = context.get("dag_run")
    run_id = getattr(dag_run, "run_id", None) or ti.run_id
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
    return sorted(task for task, state in states.items() if task != ti.task_id and str(getattr(state, "value", state)) in _FAILED_STATES)


def fail_if_steps_failed(context: Mapping[str, Any], cleaned_up: str) -> None:
    """The end of every cleanup: the run fails if any of its steps did, saying what was cleaned up."""
    failed = failed_steps(context)
    if failed:
        fail(f"the run did not complete: {', '.join(failed)} failed (see their logs for why); cleanup done: {cleaned_up}")


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def runtime_for(cluster_name: str, context: Mapping[str, Any], dry_run: bool) -> TaskRuntime:
    cluster = load_registry().cluster(cluster_name)
    return TaskRuntime(cluster=cluster, audit=AuditTrail.from_context(context, cluster.name, dry_run), context=context)
