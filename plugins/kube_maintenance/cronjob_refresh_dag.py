"""Builds the CronJob image refresh DAG of one cluster (the pattern of dag_factory.node_replacement_dag).

Kept cheap to import: Airflow's SDK and this package's light modules only.
"""
from __future__ import annotations

from typing import Any

from .cronjob_refresh import namespace_groups_setting
from .dag_factory import finish_run, operation_dag
from .registry import ClusterConfig

OPERATION = "cronjob_refresh"


def cronjob_refresh_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import Param, chain, task, task_group

    from . import cronjob_refresh_tasks as op

    settings = cluster.operation(OPERATION)
    max_groups = namespace_groups_setting(settings, cluster.name)
    poke = float(settings.get("poke_interval_seconds", 15))
    default = {
        "namespace_selector": "",
        "namespaces": [],
        "cronjob_selector": "",
        "create_fresh_job": False,
        "min_job_age_minutes": 0,
        "pods_gone_timeout_seconds": 600,
        "ignore_window": False,
        "dry_run": True,
    }
    default.update(settings.get("defaults") or {})
    params = {
        "namespace_selector": Param(default["namespace_selector"], type="string", description="Label selector of namespaces, e.g. app.kubernetes.io/managed-by=Helm (empty: every namespace). Protected namespaces are never touched."),
        "namespaces": Param(default["namespaces"], type="array", items={"type": "string"}, description="Explicit namespace names (instead of the selector)."),
        "cronjob_selector": Param(default["cronjob_selector"], type="string", description="Label selector of CronJobs to refresh (empty: all)."),
        "create_fresh_job": Param(default["create_fresh_job"], type="boolean", description="Start a fresh Job from each refreshed CronJob at once (as kubectl create job --from=cronjob/<name>)."),
        "min_job_age_minutes": Param(default["min_job_age_minutes"], type="number", minimum=0, description="A Job on an old image counts as stale only when older than this."),
        "pods_gone_timeout_seconds": Param(default["pods_gone_timeout_seconds"], type="integer", minimum=1, maximum=86400, description="Fail if the pods of deleted Jobs are not gone within this long."),
        "ignore_window": Param(default["ignore_window"], type="boolean", description="Run outside the maintenance window (manual runs)."),
        "dry_run": Param(default["dry_run"], type="boolean", description="Plan and log only; change nothing."),
    }
    with operation_dag(
        cluster,
        OPERATION,
        "CronJob image refresh",
        "Deletes the active Jobs still running an image their CronJob no longer uses (any container or init "
        "container, matched by name, differing from the CronJob's current job template), with their pods "
        "(propagation Background, UID and resourceVersion preconditions), and optionally starts a fresh Job "
        "from each refreshed CronJob at once, as `kubectl create job --from=cronjob/<name>` does. Suspended "
        f"CronJobs are reported and left alone. Namespaces are worked on in at most {max_groups} parallel groups.",
        params,
    ) as dag:
        kwargs = {"cluster_name": cluster.name}
        plan = task(task_id="plan")(op.plan)(max_groups=max_groups, **kwargs)
        preflight = task(task_id="preflight")(op.preflight)(**kwargs)
        group_tasks: list[Any] = []

        @task_group(group_id="refresh", tooltip="One group of namespaces: judge, delete stale Jobs, wait for their pods, start fresh Jobs")
        def refresh(group: dict[str, Any]) -> None:
            judged = task(task_id="judge")(op.judge)(group=group, **kwargs)
            deleted = task(task_id="delete_stale_jobs")(op.delete_stale_jobs)(judged=judged, **kwargs)
            gone = task.sensor(task_id="wait_for_pods_gone", poke_interval=poke, timeout=48 * 3600, mode="reschedule")(op.wait_for_pods_gone)(deletion=deleted, **kwargs)
            created = task(task_id="create_fresh_jobs")(op.create_fresh_jobs)(judged=judged, deletion=deleted, **kwargs)
            chain(gone, created)
            group_tasks.extend(t.operator for t in (judged, deleted, gone, created))

        # One mapped instance of the group per shard of namespaces (at most max_groups of them).
        groups = refresh.expand(group=plan)
        chain(plan, preflight, groups)
        finish_run([plan, preflight, *group_tasks], op.release, **kwargs)
    return dag
