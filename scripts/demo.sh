#!/usr/bin/env bash
# Starts two sandbox clusters (staging, production) with moto for EC2/Auto Scaling, then Airflow
# standalone (SQLite) with this repo's DAGs and plugins and one connection per cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SANDBOX_DIR=$ROOT/.sandbox
mkdir -p "$SANDBOX_DIR"
rm -f "$SANDBOX_DIR/airflow.env"

.venv/bin/python -m sandbox up --dir "$SANDBOX_DIR" --env-file "$SANDBOX_DIR/airflow.env" > "$SANDBOX_DIR/sandbox.log" 2>&1 &
SANDBOX_PID=$!
trap 'kill $SANDBOX_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  [ -s "$SANDBOX_DIR/airflow.env" ] && break
  kill -0 $SANDBOX_PID 2>/dev/null || { cat "$SANDBOX_DIR/sandbox.log"; exit 1; }
  sleep 0.5
done
[ -s "$SANDBOX_DIR/airflow.env" ] || { echo "sandbox did not start"; cat "$SANDBOX_DIR/sandbox.log"; exit 1; }
set -a
# shellcheck disable=SC1091
. "$SANDBOX_DIR/airflow.env"
set +a

export AIRFLOW_HOME=$ROOT/.airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export KUBE_MAINTENANCE_REGISTRY=$ROOT/config/clusters.sandbox.json
export PATH=$ROOT/.venv/bin:$PATH
echo "Sandbox clusters: kubeconfigs in $SANDBOX_DIR (e.g. KUBECONFIG=$SANDBOX_DIR/staging.kubeconfig kubectl get nodes)"
echo "Airflow: http://localhost:8080 (the admin password is printed below and kept in $AIRFLOW_HOME)"
airflow standalone
