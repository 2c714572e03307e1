"""How long each DAG file takes to parse, and how many tasks its DAGs have, with N clusters.

Measured as Airflow's ``airflow dags report`` does: Airflow itself imported first, then each file
parsed by a fresh ``DagBag`` (the parse duration is what the dag-processor pays every time it reads
the file). Also lists heavy modules a DAG file imports at top level (the kubernetes client, boto3,
the providers' hooks): they must load inside tasks, never at parse time. The registry is YAML, as
config/clusters.yaml is in production. For reference, the last row is a DAG file with one ``@task``
and nothing of this package: what Airflow itself costs a parse.

    .venv/bin/python benchmarks/dag_parse.py --clusters 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("kubernetes", "boto3", "botocore", "aiohttp", "aiosmtplib", "airflow.providers.cncf.kubernetes.hooks", "airflow.providers.amazon.aws.hooks", "airflow.providers.smtp.hooks", "airflow.providers.http.hooks")

# Runs in a fresh interpreter per DAG file, so that no module one file imported is free for the next.
_PROBE = r"""
import json, sys, time
import airflow  # noqa: F401 - Airflow is loaded before any DAG file, as in the dag-processor
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
rounds = []
for i in range(int(sys.argv[2])):
    started = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    rounds.append(time.perf_counter() - started)
    if i == 0:
        heavy = sorted({m for m in set(sys.modules) - before if m.split(".")[0] in ("kubernetes", "boto3", "botocore", "aiohttp", "aiosmtplib") or m.startswith(("airflow.providers.cncf.kubernetes.hooks", "airflow.providers.amazon.aws.hooks", "airflow.providers.smtp.hooks", "airflow.providers.http.hooks"))})
print(json.dumps({"seconds": rounds, "dags": {d: len(bag.dags[d].tasks) for d in bag.dags}, "errors": {k: str(v)[:300] for k, v in bag.import_errors.items()}, "heavy": heavy}))
"""


# The floor: one DAG, one task, nothing of this package (the same DagBag parse).
_ONE_TASK_DAG = '''"""A DAG file with one task (the words airflow and dag: what safe mode looks for)."""
import datetime as dt

from airflow.sdk import DAG, task

with DAG(dag_id="one_task", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):

    @task
    def hello() -> int:
        return 1

    hello()
'''


def registry(clusters: int) -> dict:
    window = {"days": ["sat"], "start": "02:00", "duration_minutes": 240}
    # Every operation scheduled in its window: Airflow then validates each DAG's params at parse time.
    ops = {"node_replacement": {"max_batches": 20, "scheduled": True}, "cronjob_refresh": {"scheduled": True}, "rollout_restart": {"scheduled": True}}
    return {
        "version": 1,
        # Failure alerts on, as in production: each DAG then has its notifiers and a deadline alert.
        "alerts": [{"type": "email", "to": ["oncall@example.com"]}, {"type": "webhook", "http_conn_id": "alerts_webhook", "endpoint": "/hooks/kube-maintenance"}],
        "clusters": [
            {"name": f"cluster-{i:02d}", "kubernetes_conn_id": f"k8s_{i}", "aws_conn_id": f"aws_{i}", "region": "eu-west-1", "timezone": "Europe/Paris", "maintenance_window": window, "operations": ops}
            for i in range(clusters)
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clusters.yaml"
        path.write_text(yaml.safe_dump(registry(args.clusters), sort_keys=False))
        floor = Path(tmp) / "one_task" / "one_task.py"
        floor.parent.mkdir()
        floor.write_text(_ONE_TASK_DAG)
        env = {**os.environ, "KUBE_MAINTENANCE_REGISTRY": str(path), "AIRFLOW_HOME": tmp, "PYTHONPATH": str(REPO / "plugins")}
        # Bytecode cached, as in an installed package or image (the first run below writes it):
        # compiling our sources is not what a dag-processor pays at every parse.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        dag_files = [*sorted((REPO / "dags").glob("*.py")), floor]
        for dag_file in dag_files:
            subprocess.run([sys.executable, "-c", _PROBE, str(dag_file), "1"], env=env, capture_output=True, text=True)
        print(f"{args.clusters} clusters; per file, in a fresh interpreter with Airflow imported: the first parse (imports this")
        print(f"package, as a dag-processor's parse process does) and the median of {args.rounds} more (modules cached)")
        print(f"{'file':28} {'first ms':>8} {'warm ms':>8} {'dags':>5} {'tasks/dag':>9}  heavy imports")
        worst = worst_warm = 0.0
        for dag_file in dag_files:
            out = subprocess.run([sys.executable, "-c", _PROBE, str(dag_file), str(args.rounds + 1)], env=env, capture_output=True, text=True)
            if out.returncode:
                print(f"{dag_file.name}: the parse probe failed:\n{out.stderr[-3000:]}")
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["errors"]:
                print(f"{dag_file.name}: import errors {result['errors']}")
                return 1
            first = result["seconds"][0] * 1000
            warm = statistics.median(result["seconds"][1:] or result["seconds"]) * 1000
            tasks = sorted(set(result["dags"].values()))
            name = dag_file.name
            if dag_file == floor:
                name = "(one @task, for reference)"
            else:
                worst, worst_warm = max(worst, first), max(worst_warm, warm)
            print(f"{name:28} {first:8.1f} {warm:8.1f} {len(result['dags']):5d} {'/'.join(map(str, tasks)):>9}  {', '.join(result['heavy']) or 'none'}")
        print(f"slowest file: {worst_warm:.1f} ms warm (the target: at most 50 ms with 10 clusters), {worst:.1f} ms first parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
