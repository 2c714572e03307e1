"""Builds the namespace-wide rollout restart DAG of one cluster (as node_replacement.dag builds node replacement).

Kept cheap to import: Airflow's SDK and this package's light modules only.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.dag_building import TasksOf, approval_gate, finish_run, operation_dag
from kube_maintenance.core.forms import DRY_RUN, IGNORE_WINDOW, SECTION_PACE, SECTION_TARGET, FormField, optional_names, optional_selector
from kube_maintenance.core.registry import ClusterConfig
from kube_maintenance.core.runtime import MAP_LABEL_TEMPLATE
from kube_maintenance.rollout_restart.decisions import KINDS, RolloutRestartParams

OPERATION = "rollout_restart"

FIELDS: tuple[FormField, ...] = (
    DRY_RUN,
    IGNORE_WINDOW,
    optional_selector("namespace_selector", "Namespace selector", "Restart the namespaces with these labels.", "app.kubernetes.io/managed-by=Helm"),
    optional_names("namespaces", "Namespaces", "Restart these namespaces by name (added to the selector's choice)."),
    optional_names("exclude_namespaces", "Namespaces to leave alone", "Never restart these namespaces (the cluster's protected namespaces never are, whatever the form says)."),
    FormField(
        "kinds",
        "Workload kinds",
        "Workload kinds to restart; in each namespace they roll in this order.",
        {"type": "array", "items": {"type": "string", "enum": list(KINDS)}, "examples": list(KINDS), "minItems": 1},
        SECTION_TARGET,
    ),
    optional_selector("workload_selector", "Workload selector", "Restart only workloads with these labels (empty: every workload of the kinds).", "tier=web"),
    FormField(
        "skip_if_restarted_within_minutes",
        "Skip if restarted within (minutes)",
        "A workload restarted this recently before the run (by a run, kubectl rollout restart, or a deploy that replaced every pod) counts as done and is skipped, e.g. to press Trigger again after a partial failure, or for scheduled runs that a window may cut. 0: restart every chosen workload.",
        {"type": "integer", "minimum": 0, "maximum": 43200},
        SECTION_TARGET,
    ),
    FormField("max_concurrent_rollouts", "Most rollouts at once", "Most workloads rolling at once on the cluster.", {"type": "integer", "minimum": 1, "maximum": 100}, SECTION_PACE),
    FormField("rollout_timeout_seconds", "Rollout timeout (s)", "Fail a workload whose rollout has not completed this long after its restart.", {"type": "integer", "minimum": 10, "maximum": 86400}, SECTION_PACE),
    FormField(
        "stuck_pod_seconds",
        "Stuck pod (s)",
        "Fail a StatefulSet or DaemonSet whose new pod is not Ready this long after it was created (Deployments use their progressDeadlineSeconds).",
        {"type": "integer", "minimum": 5, "maximum": 86400},
        SECTION_PACE,
    ),
)

DRY_RUN_SHOWS = (
    "The `plan` task logs, per namespace, each workload it would restart (a `plan-restart` audit line, outcome "
    "`planned`) and each it leaves alone with the reason (a `skip-restart` line: paused Deployment, `OnDelete` "
    "strategy, scaled to zero, a partition above the replicas, a DaemonSet on no node, restarted within "
    "`skip_if_restarted_within_minutes`, or opted out with the `kube-maintenance.io/skip` annotation), and logs those "
    "already restarted since the run began; the `cleanup` task's summary lists them. Nothing is locked or restarted."
)

_DOCS = {
    "plan": "Reads the form, checks the maintenance window, lists the chosen namespaces' workloads and decides what to restart or skip; splits the namespaces into shards. Changes nothing.",
    "preflight": "Takes the cluster's maintenance lock. A dry run ends here.",
    "restart": (
        "One shard of namespaces, restarted longest ago first: restarts its workloads as `kubectl rollout restart` does (a `restartedAt` annotation on the pod template), "
        "at most the set number rolling at once, and waits until each rollout completed as `kubectl rollout status` judges it (once: the workload is marked "
        "`kube-maintenance.io/rolled-out`). While its rollouts roll it is **deferred** to the triggerer (no worker slot held), which watches the workloads and "
        "wakes it as soon as one of them is done or failed, or when a rollout's timeout, a progress deadline or a new pod's stuck limit is due. "
        "Fails fast, naming the workload, when a rollout fails, and tells the other shards (on the cluster's Lease) to start no more restarts."
    ),
}


def rollout_restart_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import chain, task

    op = TasksOf("kube_maintenance.rollout_restart.tasks")

    settings = cluster.operation(OPERATION)
    # Shards of namespaces, i.e. map indexes of the restart task, all of which may run at once.
    max_parallel_tasks = int(settings.get("max_parallel_tasks", 8))
    # The longest a shard sleeps between looks (it wakes at the first change of what it waits on).
    # ``wait_per_poke_seconds`` (how long a poke watched in the worker) is retired: accepted, unused.
    poke = float(settings.get("poke_interval_seconds", 15))
    base = {f.name: getattr(RolloutRestartParams, f.name, None) for f in FIELDS}
    base.update(namespace_selector=None, namespaces=None, exclude_namespaces=None, workload_selector=None, kinds=list(KINDS))
    with operation_dag(
        cluster,
        OPERATION,
        "Namespace-wide rollout restart",
        "`kubectl rollout restart` for every Deployment, DaemonSet and StatefulSet of the chosen namespaces "
        f"(by label selector and/or name; {', '.join(cluster.protected_namespaces)} never), at most "
        "`max_concurrent_rollouts` rolling at once, and proof that each rollout completed, judged as "
        "`kubectl rollout status` judges it. Workloads a restart would not change (paused, OnDelete, no replicas) "
        "and those opted out are skipped and reported. A failed rollout (progress deadline exceeded, a new pod never "
        "Ready, the timeout) fails the run naming the workload, and the other shards start no more restarts. "
        "Re-running the run (clear) restarts only what was not restarted since it began; a new run skips what was "
        "restarted within `skip_if_restarted_within_minutes`. A run cut by its maintenance window fails, saying so.",
        FIELDS,
        base,
        DRY_RUN_SHOWS,
    ) as dag:
        kwargs = {"cluster_name": cluster.name}
        plan = task(task_id="plan", doc_md=_DOCS["plan"])(op.plan)(**kwargs, max_parallel_tasks=max_parallel_tasks)
        preflight = task(task_id="preflight", doc_md=_DOCS["preflight"])(op.preflight)(**kwargs)
        from kube_maintenance.rollout_restart.shards import RestartShardOperator

        # One mapped task instance per shard, deferring to the triggerer while its rollouts roll.
        restart = RestartShardOperator.partial(
            task_id="restart",
            cluster_name=cluster.name,
            poke_interval=poke,
            max_active_tis_per_dagrun=max_parallel_tasks,
            map_index_template=MAP_LABEL_TEMPLATE,
            doc_md=_DOCS["restart"],
        ).expand(shard=plan)
        approval = approval_gate(cluster, OPERATION)  # [] unless the cluster requires approval
        chain(plan, *approval, preflight, restart)
        finish_run([plan, *approval, preflight, restart], op.cleanup, **kwargs)
    return dag
