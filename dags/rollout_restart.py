"""Airflow DAGs: namespace-wide rollout restart, one DAG per cluster of the registry (config/clusters.yaml).

(The words "airflow" and "dag" in this file are what Airflow's safe-mode parser looks for.)
"""
from kube_maintenance.core.registry import load_registry
from kube_maintenance.rollout_restart.dag import rollout_restart_dag

for _cluster in load_registry().clusters:
    if _cluster.enabled("rollout_restart"):
        globals()[f"rollout_restart__{_cluster.name}"] = rollout_restart_dag(_cluster)
