"""Airflow DAGs: CronJob image refresh, one DAG per cluster of the registry (config/clusters.yaml).

(The words "airflow" and "dag" in this file are what Airflow's safe-mode parser looks for.)
"""

# The Airflow modules these DAGs are built with (the task decorators and their operators). The
# dag-processor imports the Airflow modules a DAG file imports, once, before it forks the process
# that parses the file ([dag_processor] parsing_pre_import_modules): named here, no parse imports them.
import airflow.sdk.definitions.decorators  # noqa: F401

from kube_maintenance.cronjob_refresh.dag import cronjob_refresh_dag
from kube_maintenance.core.registry import load_registry

for _cluster in load_registry().clusters:
    if _cluster.enabled("cronjob_refresh"):
        globals()[f"cronjob_refresh__{_cluster.name}"] = cronjob_refresh_dag(_cluster)
