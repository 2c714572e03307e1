"""Airflow DAGs: rolling node replacement, one DAG per cluster of the registry (config/clusters.yaml).

(The words "airflow" and "dag" in this file are what Airflow's safe-mode parser looks for.)
"""
from kube_maintenance.node_replacement.dag import node_replacement_dag
from kube_maintenance.core.registry import load_registry

for _cluster in load_registry().clusters:
    if _cluster.enabled("node_replacement"):
        globals()[f"node_replacement__{_cluster.name}"] = node_replacement_dag(_cluster)
