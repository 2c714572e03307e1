"""What every operation's DAG shares: its schedule from the cluster's window, its documentation, its
form, the lazy task callables and the cleanup teardown.

Kept cheap to import: Airflow's SDK and this package's light modules only; the Kubernetes client,
boto3 and the providers are imported inside tasks.
"""
from __future__ import annotations

import datetime as dt
import importlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kube_maintenance.core.forms import FormField, build_params, form_defaults, params_doc
from kube_maintenance.core.registry import ClusterConfig

OPERATION_TAG = "kube-maintenance"


def _schedule(cluster: ClusterConfig, operation: str) -> Any:
    """The cluster's window opening, in its own timezone, unless the registry turns scheduling off."""
    from airflow.sdk import CronTriggerTimetable

    if not cluster.operation(operation).get("scheduled", False):
        return None
    return CronTriggerTimetable(cluster.window.cron, timezone=cluster.timezone)


def _doc(cluster: ClusterConfig, title: str, body: str, form: str, dry_run_shows: str) -> str:
    aws = f"`{cluster.aws_conn_id}` ({cluster.region})" if cluster.aws_conn_id else "none"
    return (
        f"# {title}: `{cluster.name}`\n\n{cluster.description}\n\n{body}\n\n"
        f"| | |\n|---|---|\n| Kubernetes connection | `{cluster.kubernetes_conn_id}` |\n"
        f"| AWS connection | {aws} |\n| Maintenance window | {cluster.window.describe()} |\n"
        f"| Protected namespaces | {', '.join(cluster.protected_namespaces)} |\n| Owner | {cluster.owner} |\n\n"
        "## Trigger form\n\n"
        "The form opens with **Dry run** on. Scheduled runs use the registry's defaults (last but one column).\n\n"
        f"{form}\n\n"
        f"## What a dry run shows\n\n{dry_run_shows}\n\n"
        "## Audit and abort\n\n"
        "Every change is logged as one `KUBE_MAINTENANCE_AUDIT {json}` line in the task logs "
        "(outcome `planned` in a dry run); the first line holds the run's parameters, the last its summary. "
        "The `cleanup` task is a teardown: whatever ends the run (a failure, *Mark as failed*, *Mark as success*, "
        "a cleared task) it runs, undoes what the run left half done, releases the cluster lock and fails the "
        "run if any step failed."
    )


@contextmanager
def operation_dag(
    cluster: ClusterConfig,
    operation: str,
    title: str,
    summary: str,
    fields: tuple[FormField, ...],
    base_defaults: dict[str, Any],
    dry_run_shows: str,
) -> Iterator[Any]:
    """The DAG every operation shares: one per cluster, its window's schedule, the form, tags, docs, retries.

    Used as ``with operation_dag(...) as dag:`` around the operation's tasks. The form (the DAG's
    ``params``) is attached when the block ends, after the tasks. Airflow deep-copies the DAG's
    Params into each task it creates, once per class of the operator's hierarchy (four times for a
    ``@task``): that was half of every parse. The copies add nothing: a task's runtime ``params``
    are the DAG's, then the task's own, then the run's conf (Airflow's ``process_params``), the
    same values with or without them. The trigger form, Airflow's check of a scheduled DAG's
    defaults (run when the form is attached) and the serialized DAG's ``params`` are unchanged;
    the serialized tasks no longer repeat them (none of our tasks declares params of its own).
    """
    from airflow.sdk import DAG

    from kube_maintenance.core.alerts import alert_arguments

    settings = cluster.operation(operation)
    alerts = alert_arguments(cluster, operation)  # where failures go: the registry's alerts
    defaults = form_defaults(base_defaults, settings.get("defaults"))
    scheduled = {**defaults, **(settings.get("defaults") or {})} if settings.get("scheduled") else None
    params = build_params(fields, defaults)
    dag = DAG(
        dag_id=f"{operation}__{cluster.name}",
        description=f"{title} on {cluster.name}",
        schedule=_schedule(cluster, operation),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=[OPERATION_TAG, f"cluster:{cluster.name}", f"operation:{operation}"],
        doc_md=_doc(cluster, title, summary, params_doc(fields, defaults, scheduled), dry_run_shows),
        default_args={
            "owner": cluster.owner,
            "retries": int(settings.get("retries", 2)),
            "retry_delay": dt.timedelta(seconds=float(settings.get("retry_delay_seconds", 30))),
            **alerts.task,
        },
        render_template_as_native_obj=True,
        **alerts.dag,
    )
    with dag:
        yield dag
    # Airflow converts and validates on assignment, as it does in DAG(params=...).
    dag.params = params


CLEANUP_DOC = (
    "**Teardown.** Runs however the run ends: after the last step, after a failure, and also when the run "
    "is marked failed or successful in the UI (Airflow skips every other unfinished task then, but not a "
    "teardown). It undoes what this run left half done, releases the cluster's maintenance lock, writes "
    "the summary audit line, and fails the run if any step failed, naming it."
)


class TasksOf:
    """The task callables of an operation's tasks module, imported when a task runs rather than
    when the DAG file is parsed: the dag-processor parses every file again and again, and the
    tasks need the Kubernetes and AWS clients, which parsing must not load."""

    def __init__(self, module: str) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Callable[..., Any]:
        module = self.module

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__module__ = module
        return call


def finish_run(work: list[Any], cleanup: Any, **kwargs: Any) -> Any:
    """The run's teardown, downstream of every step: ``cleanup`` runs whatever ended the run.

    It has no setup task, so it waits only for every step to be done (a run whose plan failed
    still releases what it may hold). ``on_failure_fail_dagrun``: the run's state follows the
    cleanup's, which fails when any step failed, so a run marked failed in the UI ends failed.
    """
    from airflow.sdk import task

    done = task(task_id="cleanup", retries=5, doc_md=CLEANUP_DOC)(cleanup)(**kwargs)
    work >> done
    return done.as_teardown(on_failure_fail_dagrun=True)


def approval_gate(cluster: ClusterConfig, operation: str) -> list[Any]:
    """The DAG's approval task (``[]`` for a cluster without ``requires_approval``). Airflow's HITL
    operator is imported only for a cluster that requires approval: the dag-processor parses every
    DAG file again and again, and most clusters never need it."""
    if not cluster.requires_approval:
        return []
    from kube_maintenance.core.approval import approval_gate as approval_task

    return approval_task(cluster, operation)
