"""A real, separate-process Airflow for the browser and distributed tests, and the services it runs on.

- ``services``: PostgreSQL (Debian's ``initdb``/``pg_ctl``) and Redis (``redis-server``), each on a free
  loopback port in a temporary directory, stopped and removed at the end;
- ``airflow_processes``: ``airflow db migrate``, then api-server, scheduler, dag-processor, triggerer
  and (with CeleryExecutor) one ``airflow celery worker``; and the REST client the tests act with;
- ``sandbox_stack``: the small registry the stack's DAGs read, and a view of the staging sandbox cluster;
- ``ordering``: the browser and distributed tests run last, each starting its stack once.
"""
