"""Airflow DAGs: CronJob image refresh, one DAG per cluster of the registry (config/clusters.yaml).

(The words "airflow" and "dag" in this file are what Airflow's safe-mode parser looks for.)
"""
from kube_maintenance.cronjob_refresh.dag import cronjob_refresh_dag
from kube_maintenance.core.registry import load_registry

for _cluster in load_registry().clusters:
    if _cluster.enabled("cronjob_refresh"):
        globals()[f"cronjob_refresh__{_cluster.name}"] = cronjob_refresh_dag(_cluster)
