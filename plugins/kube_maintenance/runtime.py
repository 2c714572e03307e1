"""What every task of every operation starts from: its cluster, its clients, its audit trail."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from .audit import AuditTrail
from .registry import ClusterConfig, load_registry

log = logging.getLogger("kube_maintenance")


@dataclass
class TaskRuntime:
    cluster: ClusterConfig
    audit: AuditTrail
    context: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @functools.cached_property
    def kube(self) -> Any:
        from .k8s import KubeClient

        return KubeClient.from_connection(self.cluster.kubernetes_conn_id, self.cluster.name)

    @functools.cached_property
    def cloud(self) -> Any:
        from .cloud import Cloud

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

    @property
    def holder(self) -> str:
        """Lock holder identity: the DAG run, so retries and re-runs of it find their own lock."""
        dag_run = self.context.get("dag_run")
        return f"{getattr(dag_run, 'dag_id', '?')}/{getattr(dag_run, 'run_id', '?')}"


def skip(message: str) -> None:
    """End the task as skipped: nothing to do (a dry run, a batch the plan does not have)."""
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(message)


def fail(message: str) -> None:
    """Fail the task without retries: retrying cannot fix bad input or a budget that says no."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def runtime_for(cluster_name: str, context: Mapping[str, Any], dry_run: bool) -> TaskRuntime:
    cluster = load_registry().cluster(cluster_name)
    return TaskRuntime(cluster=cluster, audit=AuditTrail.from_context(context, cluster.name, dry_run), context=context)
