"""The browser tests' Airflow processes and REST client (shared with the distributed test, in
``tests/airflow_stack/airflow_processes.py``)."""
from airflow_stack.airflow_processes import AUDIT_MARKER, AirflowApi, AirflowProcesses, AirflowStartupError, parse_audit

__all__ = ["AUDIT_MARKER", "AirflowApi", "AirflowProcesses", "AirflowStartupError", "parse_audit"]
