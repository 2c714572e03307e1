"""Builds the CronJob image refresh DAG of one cluster (the pattern of node_replacement.dag).

Kept cheap to import: Airflow's SDK and this package's light modules only.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.cronjob_refresh.decisions import CronJobRefreshParams, namespace_groups_setting
from kube_maintenance.core.dag_building import TasksOf, approval_gate, finish_run, operation_dag
from kube_maintenance.core.forms import DRY_RUN, IGNORE_WINDOW, SECTION_PACE, SECTION_SAFETY, SECTION_TARGET, FormField, optional_names, optional_selector
from kube_maintenance.core.registry import ClusterConfig
from kube_maintenance.core.runtime import MAP_LABEL_TEMPLATE

OPERATION = "cronjob_refresh"

FIELDS: tuple[FormField, ...] = (
    DRY_RUN,
    IGNORE_WINDOW,
    optional_selector(
        "namespace_selector",
        "Namespace selector",
        "Refresh CronJobs in the namespaces with these labels (empty: every namespace; protected namespaces never).",
        "app.kubernetes.io/managed-by=Helm",
    ),
    optional_names("namespaces", "Namespaces", "Refresh CronJobs in these namespaces by name (instead of the selector)."),
    optional_selector("cronjob_selector", "CronJob selector", "Refresh only CronJobs with these labels (empty: all).", "tier=batch"),
    FormField("min_job_age_minutes", "Minimum Job age (minutes)", "A Job on an old image counts as stale only when older than this.", {"type": "number", "minimum": 0}, SECTION_TARGET),
    FormField(
        "compare_running_digests",
        "Compare running digests",
        "Where the CronJob's template pins an image by digest, a Job on another reference (e.g. a tag) counts as current when its pods "
        "report running exactly that digest (status.containerStatuses[].imageID). Off: references only.",
        {"type": "boolean"},
        SECTION_TARGET,
    ),
    FormField(
        "create_fresh_job",
        "Start a fresh Job",
        "Start a fresh Job from each refreshed CronJob at once (as kubectl create job --from=cronjob/<name>); off: the CronJob starts its next Job on schedule. "
        "Only for concurrencyPolicy Allow, and not when a Job on the current image already runs: the CronJob controller does not count "
        "a Job it did not start, so Forbid and Replace CronJobs get their next Job from the schedule (the plan says when).",
        {"type": "boolean"},
        SECTION_PACE,
    ),
    FormField("pods_gone_timeout_seconds", "Pods gone timeout (s)", "Fail if the pods of deleted Jobs are not gone within this long.", {"type": "integer", "minimum": 1, "maximum": 86400}, SECTION_PACE),
    FormField(
        "refresh_jobs_with_progress",
        "Refresh Jobs with completed work",
        "Also delete stale Jobs that have completed work a fresh Job would redo (completed indexes of an Indexed Job, succeeded pods "
        "of a parallel Job). Off: they are left alone and reported.",
        {"type": "boolean"},
        SECTION_SAFETY,
    ),
    FormField(
        "refresh_suspended_jobs",
        "Refresh suspended Jobs",
        "Also delete stale Jobs that are suspended (spec.suspend: queued by Kueue, or paused on purpose). Off: they are left alone and reported.",
        {"type": "boolean"},
        SECTION_SAFETY,
    ),
)

DRY_RUN_SHOWS = (
    "Each `refresh.judge` task (one per group of namespaces) logs, for every CronJob, the active Jobs still running "
    "an image the CronJob no longer uses, with the old and new images, as audit lines with outcome `planned`; "
    "suspended CronJobs, CronJobs and namespaces opted out (`kube-maintenance.io/skip: \"true\"`), and Jobs with completed "
    "work or suspended are reported (`plan-skip` lines, with the reason) and left alone, and for each CronJob that gets no "
    "fresh Job the plan says when its next scheduled Job starts. The `cleanup` task's summary lists what would be deleted "
    "(at most 20 references a list, each reason once; its log lists every one). "
    "Nothing is locked, deleted or created."
)

_DOCS = {
    "plan": "Reads the form, checks the maintenance window, chooses the namespaces and splits them into groups (ranges of names). Changes nothing.",
    "preflight": "Takes the cluster's maintenance lock (a dry run only logs that it would).",
    "judge": "For each CronJob of the group's namespaces: which active Jobs run an image the CronJob no longer uses (any container or init container, by name, references normalised), or miss or have a container the template has not. Changes nothing.",
    "delete_stale_jobs": "Reads each stale Job and its CronJob again and, if still stale, deletes it with its pods (propagation Background, UID precondition); records an Event on the Job and the CronJob.",
    "wait_for_pods_gone": (
        "Waits until the pods of the deleted Jobs are gone, **deferred** to the triggerer (no worker slot held): it watches those pods and wakes "
        "the task as one goes; fails once they outlast `pods_gone_timeout_seconds` after the deletion (no fresh Job is started then)."
    ),
    "create_fresh_jobs": "When asked to, starts a fresh Job from each refreshed CronJob whose concurrencyPolicy is Allow and that has no Job on the current image running, as kubectl create job --from does; records an Event on the CronJob.",
}


def cronjob_refresh_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import chain, task, task_group

    op = TasksOf("kube_maintenance.cronjob_refresh.tasks")

    settings = cluster.operation(OPERATION)
    max_groups = namespace_groups_setting(settings, cluster.name)
    poke = float(settings.get("poke_interval_seconds", 15))  # the longest the pods wait sleeps between looks
    base = {f.name: getattr(CronJobRefreshParams, f.name, None) for f in FIELDS}
    base.update(namespace_selector=None, namespaces=None, cronjob_selector=None)
    with operation_dag(
        cluster,
        OPERATION,
        "CronJob image refresh",
        "Deletes the active Jobs still running an image their CronJob no longer uses (any container or init "
        "container, matched by name, differing from the CronJob's current job template), with their pods "
        "(propagation Background, UID precondition, each Job judged again right before), and optionally starts a fresh Job "
        "from each refreshed CronJob at once, as `kubectl create job --from=cronjob/<name>` does, where its concurrencyPolicy "
        "allows one (Allow). Suspended CronJobs, opted-out CronJobs and namespaces, and Jobs with completed work or suspended are "
        f"reported and left alone. Namespaces are worked on in at most {max_groups} parallel groups.",
        FIELDS,
        base,
        DRY_RUN_SHOWS,
    ) as dag:
        from kube_maintenance.cronjob_refresh.pods_gone import WaitForPodsGoneOperator

        kwargs = {"cluster_name": cluster.name}
        plan = task(task_id="plan", doc_md=_DOCS["plan"])(op.plan)(max_groups=max_groups, **kwargs)
        preflight = task(task_id="preflight", doc_md=_DOCS["preflight"])(op.preflight)(**kwargs)
        group_tasks: list[Any] = []

        def step(task_id: str) -> Any:
            return task(task_id=task_id, map_index_template=MAP_LABEL_TEMPLATE, doc_md=_DOCS[task_id])

        @task_group(group_id="refresh", tooltip="One group of namespaces: judge, delete stale Jobs, wait for their pods, start fresh Jobs")
        def refresh(group: dict[str, Any]) -> None:
            judged = step("judge")(op.judge)(group=group, **kwargs)
            deleted = step("delete_stale_jobs")(op.delete_stale_jobs)(judged=judged, **kwargs)
            # Deferred to the triggerer while the pods go (no worker slot held).
            gone = WaitForPodsGoneOperator(
                task_id="wait_for_pods_gone", deletion=deleted, poke_interval=poke, map_index_template=MAP_LABEL_TEMPLATE, doc_md=_DOCS["wait_for_pods_gone"], **kwargs
            )
            created = step("create_fresh_jobs")(op.create_fresh_jobs)(judged=judged, deletion=deleted, **kwargs)
            chain(deleted, gone, created)
            group_tasks.extend([judged.operator, deleted.operator, gone, created.operator])

        # One mapped instance of the group per shard of namespaces (at most max_groups of them).
        groups = refresh.expand(group=plan)
        approval = approval_gate(cluster, OPERATION)  # [] unless the cluster requires approval
        if approval:
            # What is approved is the judges' plan (which Jobs go): judge, approval, then the lock
            # (taken after the answer, however long it takes) and the deletions.
            judge_op, delete_op = group_tasks[0], group_tasks[1]
            chain(judge_op, *approval, preflight, delete_op)
        else:
            chain(plan, preflight, groups)
        finish_run([plan, *approval, preflight, *group_tasks], op.cleanup, **kwargs)
    return dag
