"""Builds one DAG per cluster and operation from the registry.

Kept cheap to import: Airflow's SDK and this package's light modules only; the Kubernetes client,
boto3 and the providers are imported inside tasks.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from .registry import ClusterConfig

OPERATION_TAG = "kube-maintenance"


def _schedule(cluster: ClusterConfig, operation: str) -> Any:
    """The cluster's window opening, in its own timezone, unless the registry turns scheduling off."""
    from airflow.sdk import CronTriggerTimetable

    if not cluster.operation(operation).get("scheduled", False):
        return None
    return CronTriggerTimetable(cluster.window.cron, timezone=cluster.timezone)


def _doc(cluster: ClusterConfig, title: str, body: str) -> str:
    aws = f"`{cluster.aws_conn_id}` ({cluster.region})" if cluster.aws_conn_id else "none"
    return (
        f"# {title}: `{cluster.name}`\n\n{cluster.description}\n\n{body}\n\n"
        f"| | |\n|---|---|\n| Kubernetes connection | `{cluster.kubernetes_conn_id}` |\n"
        f"| AWS connection | {aws} |\n| Maintenance window | {cluster.window.describe()} |\n"
        f"| Protected namespaces | {', '.join(cluster.protected_namespaces)} |\n\n"
        "Every change is logged as a `KUBE_MAINTENANCE_AUDIT {json}` line in the task logs. "
        "Trigger with **dry_run** first: it plans and logs everything and changes nothing."
    )


def operation_dag(cluster: ClusterConfig, operation: str, title: str, summary: str, params: dict[str, Any]) -> Any:
    """The DAG every operation shares: one per cluster, its window's schedule, tags, docs, retries."""
    from airflow.sdk import DAG

    settings = cluster.operation(operation)
    return DAG(
        dag_id=f"{operation}__{cluster.name}",
        description=f"{title} on {cluster.name}",
        schedule=_schedule(cluster, operation),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        params=params,
        tags=[OPERATION_TAG, f"cluster:{cluster.name}", f"operation:{operation}"],
        doc_md=_doc(cluster, title, summary),
        default_args={"retries": int(settings.get("retries", 2)), "retry_delay": dt.timedelta(seconds=float(settings.get("retry_delay_seconds", 30)))},
        render_template_as_native_obj=True,
    )


def finish_run(work: list[Any], release: Any, **kwargs: Any) -> None:
    """After every task of the run: release the cluster lock whatever happened (all_done), and a
    watcher that fails the run when a step failed (release_lock, a leaf, succeeds even then)."""
    from airflow.sdk import TriggerRule, task

    released = task(task_id="release_lock", trigger_rule=TriggerRule.ALL_DONE, retries=5)(release)(**kwargs)
    work >> released

    @task(task_id="fail_run_if_any_step_failed", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def watcher() -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a step failed; see the failed task's log for the reason")

    work >> watcher()


def node_replacement_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import Param, TaskGroup, TriggerRule, chain, task

    from . import node_replacement as op

    settings = cluster.operation("node_replacement")
    max_batches = int(settings.get("max_batches", 10))
    poke = float(settings.get("poke_interval_seconds", 15))
    default = {
        "node_selector": "",
        "min_node_age_hours": 0,
        "node_names": [],
        "exclude_nodes": [],
        "max_nodes": 10,
        "batch_size": 1,
        "surge": False,
        "drain_timeout_seconds": 900,
        "pod_grace_period_seconds": None,
        "delete_emptydir_data": False,
        "force_unmanaged_pods": False,
        "replacement_timeout_seconds": 900,
        "validation_interval_seconds": 10,
        "ignore_window": False,
        "dry_run": True,
    }
    default.update(settings.get("defaults") or {})
    params = {
        "node_selector": Param(default["node_selector"], type="string", description="Label selector of nodes to replace, e.g. role=worker (empty: all nodes)."),
        "min_node_age_hours": Param(default["min_node_age_hours"], type="number", minimum=0, description="Only nodes older than this many hours."),
        "node_names": Param(default["node_names"], type="array", items={"type": "string"}, description="Explicit node names (replaces the selector's choice)."),
        "exclude_nodes": Param(default["exclude_nodes"], type="array", items={"type": "string"}, description="Never replace these nodes."),
        "max_nodes": Param(default["max_nodes"], type="integer", minimum=1, maximum=1000, description="Most nodes replaced by this run (oldest first)."),
        "batch_size": Param(default["batch_size"], type="integer", minimum=1, maximum=100, description="Most nodes out of service at once."),
        "surge": Param(default["surge"], type="boolean", description="Launch each batch's replacements before draining it (the group grows by the batch size, then shrinks back); off: replace in place."),
        "drain_timeout_seconds": Param(default["drain_timeout_seconds"], type="integer", minimum=1, description="Give up on a drain (and uncordon) after this long."),
        "pod_grace_period_seconds": Param(default["pod_grace_period_seconds"], type=["null", "integer"], description="Override each pod's termination grace period (empty: the pod's own)."),
        "delete_emptydir_data": Param(default["delete_emptydir_data"], type="boolean", description="Evict pods with emptyDir volumes (their data is lost)."),
        "force_unmanaged_pods": Param(default["force_unmanaged_pods"], type="boolean", description="Evict pods no controller will recreate."),
        "replacement_timeout_seconds": Param(default["replacement_timeout_seconds"], type="integer", minimum=1, description="Fail if a replacement node is not Ready within this long."),
        "validation_interval_seconds": Param(default["validation_interval_seconds"], type="integer", minimum=0, description="Seconds between the two health validations after each batch."),
        "ignore_window": Param(default["ignore_window"], type="boolean", description="Run outside the maintenance window (manual runs)."),
        "dry_run": Param(default["dry_run"], type="boolean", description="Plan and log only; change nothing."),
    }
    with operation_dag(
        cluster,
        "node_replacement",
        "Rolling node replacement",
        "Picks nodes (selector, age, names), then batch by batch: cordon, drain through the Eviction API "
        "(PodDisruptionBudgets respected, DaemonSet and mirror pods skipped), terminate the EC2 instance in "
        "its Auto Scaling group without lowering desired capacity (or, with surge, after its replacement "
        "joined), wait for the replacement to join Ready, validate twice. A failed drain uncordons the batch "
        "and stops the rollout.",
        params,
    ) as dag:
        kwargs = {"cluster_name": cluster.name, "max_batches": max_batches}
        plan = task(task_id="plan")(op.plan)(**kwargs)
        preflight = task(task_id="preflight")(op.preflight)(**kwargs)
        chain(plan, preflight)
        previous: Any = preflight
        batch_tasks: list[Any] = []
        for i in range(max_batches):
            with TaskGroup(group_id=f"batch_{i + 1:02d}", tooltip=f"Batch {i + 1}: (surge), cordon, drain, terminate, wait, validate"):
                args = {**kwargs, "index": i}
                surge = task.sensor(task_id="launch_surge", poke_interval=poke, timeout=48 * 3600, mode="reschedule")(op.launch_surge)(**args)
                cordon = task(task_id="cordon")(op.cordon)(**args)
                drain = task.sensor(task_id="drain", poke_interval=poke, timeout=48 * 3600, mode="reschedule")(op.drain)(**args)
                terminate = task(task_id="terminate")(op.terminate)(**args)
                wait = task.sensor(task_id="wait_for_replacement", poke_interval=poke, timeout=48 * 3600, mode="reschedule")(op.wait_for_replacement)(**args)
                validate = task.sensor(task_id="validate", poke_interval=poke, timeout=48 * 3600, mode="reschedule")(op.validate)(**args)
                rollback = task(task_id="rollback", trigger_rule=TriggerRule.ONE_FAILED, retries=5)(op.rollback)(**args)
                chain(surge, cordon, drain, terminate, wait, validate)
                [cordon, drain, terminate] >> rollback
            previous >> surge
            previous = validate
            batch_tasks += [surge, cordon, drain, terminate, wait, validate, rollback]
        finish_run([plan, preflight, *batch_tasks], op.release, **kwargs)
    return dag
