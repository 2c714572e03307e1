"""A Kubernetes API simulator (with moto standing in for EC2 and Auto Scaling) for tests and demos.

This package is test and demo infrastructure only: nothing under ``plugins/`` or ``dags/`` imports it,
and it never ships into a production Airflow.
"""
