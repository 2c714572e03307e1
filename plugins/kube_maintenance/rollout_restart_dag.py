"""Builds the namespace-wide rollout restart DAG of one cluster (as dag_factory builds node replacement).

Kept cheap to import: Airflow's SDK and this package's light modules only.
"""
from __future__ import annotations

from typing import Any

from .dag_factory import finish_run, operation_dag
from .registry import ClusterConfig
from .rollout import KINDS, RolloutRestartParams

OPERATION = "rollout_restart"


def rollout_restart_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import Param, task

    from . import rollout_tasks as op

    settings = cluster.operation(OPERATION)
    # Shards of namespaces, i.e. map indexes of the restart task, all of which may run at once.
    max_parallel_tasks = int(settings.get("max_parallel_tasks", 8))
    poke = float(settings.get("poke_interval_seconds", 15))
    wait_per_poke = float(settings.get("wait_per_poke_seconds", 60))
    base = RolloutRestartParams()
    default: dict[str, Any] = {
        "namespace_selector": "",
        "namespaces": [],
        "exclude_namespaces": [],
        "kinds": list(KINDS),
        "workload_selector": "",
        "max_concurrent_rollouts": base.max_concurrent_rollouts,
        "rollout_timeout_seconds": base.rollout_timeout_seconds,
        "stuck_pod_seconds": base.stuck_pod_seconds,
        "ignore_window": False,
        "dry_run": True,
    }
    default.update(settings.get("defaults") or {})
    protected = ", ".join(cluster.protected_namespaces)
    params = {
        "namespace_selector": Param(default["namespace_selector"], type="string", description="Label selector of namespaces to restart, e.g. app.kubernetes.io/managed-by=Helm."),
        "namespaces": Param(default["namespaces"], type="array", items={"type": "string"}, description="Namespaces to restart by name (added to the selector's choice)."),
        "exclude_namespaces": Param(default["exclude_namespaces"], type="array", items={"type": "string"}, description=f"Never restart these namespaces ({protected} never are, whatever the form says)."),
        "kinds": Param(default["kinds"], type="array", items={"type": "string", "enum": list(KINDS)}, minItems=1, description="Workload kinds to restart; in each namespace they roll in this order."),
        "workload_selector": Param(default["workload_selector"], type="string", description="Label selector of workloads (empty: every workload of the kinds)."),
        "max_concurrent_rollouts": Param(default["max_concurrent_rollouts"], type="integer", minimum=1, maximum=100, description="Most workloads rolling at once on the cluster."),
        "rollout_timeout_seconds": Param(default["rollout_timeout_seconds"], type="integer", minimum=10, maximum=86400, description="Fail a workload whose rollout has not completed this long after its restart."),
        "stuck_pod_seconds": Param(default["stuck_pod_seconds"], type="integer", minimum=5, maximum=86400, description="Fail a StatefulSet or DaemonSet whose new pod is not Ready this long after it was created (Deployments use their progressDeadlineSeconds)."),
        "ignore_window": Param(default["ignore_window"], type="boolean", description="Run outside the maintenance window (manual runs)."),
        "dry_run": Param(default["dry_run"], type="boolean", description="Plan and log only; change nothing."),
    }
    with operation_dag(
        cluster,
        OPERATION,
        "Namespace-wide rollout restart",
        "`kubectl rollout restart` for every Deployment, DaemonSet and StatefulSet of the chosen namespaces "
        "(by label selector and/or name; protected namespaces never), at most `max_concurrent_rollouts` "
        "rolling at once, and proof that each rollout completed, judged as `kubectl rollout status` judges it. "
        "Paused Deployments and OnDelete workloads are skipped and reported. A failed rollout (progress "
        "deadline exceeded, a new pod never Ready, the timeout) fails the run naming the workload. "
        "Re-running the run (clear) restarts only what was not restarted since it began.",
        params,
    ) as dag:
        kwargs = {"cluster_name": cluster.name}
        plan = task(task_id="plan")(op.plan)(**kwargs, max_parallel_tasks=max_parallel_tasks)
        preflight = task(task_id="preflight")(op.preflight)(**kwargs)
        restart = (
            task.sensor(task_id="restart", poke_interval=poke, timeout=48 * 3600, mode="reschedule", max_active_tis_per_dagrun=max_parallel_tasks)(op.restart)
            .partial(**kwargs, wait_per_poke_seconds=wait_per_poke)
            .expand(shard=plan)
        )
        plan >> preflight >> restart
        finish_run([plan, preflight, restart], op.release, **kwargs)
    return dag
