"""The stack the browser tests run against: names, the registry, and a view of the staging sandbox
cluster (shared with the distributed test, in ``tests/airflow_stack/sandbox_stack.py``)."""
from airflow_stack.sandbox_stack import DAG_IDS, LOCK, USERNAME, Staging, browser_registry

__all__ = ["DAG_IDS", "LOCK", "USERNAME", "Staging", "browser_registry"]
