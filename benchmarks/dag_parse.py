"""How long each DAG file takes to parse, and how many tasks its DAGs have, with N clusters.

Each file is parsed by a fresh ``DagBag`` in its own interpreter, with Airflow imported first. Three
figures per file:

- warm: the median of later parses, modules cached (the shape of ``airflow dags report``);
- first: the first parse of an interpreter that has only imported Airflow, as ``airflow dags
  report`` measures it. It pays this package's imports, and also a full garbage collection over
  every object Airflow's import made, which the allocations of a parse trigger (about 100 ms here);
- dag-processor: the first parse as the dag-processor's parse process pays it. Its manager imports
  Airflow, the Airflow modules the DAG file imports at top level ([dag_processor]
  parsing_pre_import_modules) and freezes the garbage collector (``gc.freeze``) before it forks a
  process per parse: so the same, in a fresh interpreter.

Also lists heavy modules a DAG file imports at parse time (the kubernetes client, boto3, the
providers' hooks): they must load inside tasks. The registry is YAML, as config/clusters.yaml is in
production. The last row is a DAG file with one ``@task`` and nothing of this package: what Airflow
itself costs a parse.

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
# argv: the DAG file, how many parses, "report" or "dag-processor".
_PROBE = r"""
import gc, importlib, json, sys, time
import airflow  # noqa: F401 - Airflow is loaded before any DAG file, as in the dag-processor
from airflow.dag_processing.dagbag import DagBag
if sys.argv[3] == "dag-processor":
    # What the dag-processor's manager does before it forks the process that parses the file.
    from airflow.utils.file import iter_airflow_imports
    for module in iter_airflow_imports(sys.argv[1]):
        importlib.import_module(module)
    gc.freeze()
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


def _probe(env: dict[str, str], dag_file: Path, parses: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(dag_file), str(parses), mode], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{dag_file.name}: the parse probe failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"{dag_file.name}: import errors {result['errors']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="warm parses per file; first parses: min(rounds, 3) fresh interpreters each")
    args = parser.parse_args()
    samples = max(1, min(args.rounds, 3))
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
            _probe(env, dag_file, 1, "report")
        print(f"{args.clusters} clusters; per file, in fresh interpreters with Airflow imported. first: the first parse, as")
        print("`airflow dags report` measures it (this package's imports and a full garbage collection over Airflow's")
        print("objects included); dag-processor: the first parse as the dag-processor's forked parse process pays it (the")
        print(f"file's Airflow imports done and the collector frozen before); medians of {samples}. warm: the median of")
        print(f"{args.rounds} later parses (modules cached), the figure the 50 ms target is for.")
        print(f"{'file':28} {'first ms':>8} {'dag-processor ms':>16} {'warm ms':>8} {'dags':>5} {'tasks/dag':>9}  heavy imports")
        worst_warm = worst_processor = 0.0
        for dag_file in dag_files:
            result = _probe(env, dag_file, args.rounds + 1, "report")
            firsts = [result["seconds"][0]] + [_probe(env, dag_file, 1, "report")["seconds"][0] for _ in range(samples - 1)]
            processor = [_probe(env, dag_file, 1, "dag-processor")["seconds"][0] for _ in range(samples)]
            first, first_processor = statistics.median(firsts) * 1000, statistics.median(processor) * 1000
            warm = statistics.median(result["seconds"][1:] or result["seconds"]) * 1000
            tasks = sorted(set(result["dags"].values()))
            name = dag_file.name
            if dag_file == floor:
                name = "(one @task, for reference)"
            else:
                worst_warm, worst_processor = max(worst_warm, warm), max(worst_processor, first_processor)
            print(f"{name:28} {first:8.1f} {first_processor:16.1f} {warm:8.1f} {len(result['dags']):5d} {'/'.join(map(str, tasks)):>9}  {', '.join(result['heavy']) or 'none'}")
        print(f"slowest file: {worst_warm:.1f} ms warm (the target: at most 50 ms with 10 clusters), {worst_processor:.1f} ms in a dag-processor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
