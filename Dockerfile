# kube-maintenance on the official Airflow image: the package (wheel built from this repository),
# installed with the exact versions it was tested with, and its three DAG files.
#   docker build -t kube-maintenance:0.1.0 .
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE} AS wheel
USER airflow
COPY --chown=airflow:0 pyproject.toml README.md /src/
COPY --chown=airflow:0 plugins/kube_maintenance /src/plugins/kube_maintenance
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /tmp/wheels /src

FROM ${AIRFLOW_IMAGE}
USER airflow
# constraints.txt is the tested set (Airflow's own constraints for 3.3.2 plus this project's pins):
# the Celery provider and a PostgreSQL driver included, for the official docker-compose shape.
COPY --chown=airflow:0 constraints.txt /tmp/constraints.txt
COPY --from=wheel /tmp/wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl "apache-airflow-providers-celery" "psycopg2-binary" -c /tmp/constraints.txt \
 && rm -rf /tmp/wheels
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 config/clusters.yaml /opt/airflow/config/clusters.yaml
ENV KUBE_MAINTENANCE_REGISTRY=/opt/airflow/config/clusters.yaml
