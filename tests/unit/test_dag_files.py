"""The DAG files name the Airflow modules their DAGs are built with, so that the dag-processor
imports them once, before it forks the process that parses a file, instead of every parse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = ("node_replacement", "cronjob_refresh", "rollout_restart")

# In a fresh interpreter: Airflow imported, then what the dag-processor's manager pre-imports for the
# file (its top-level Airflow imports), then the parse; prints the Airflow modules the parse imported.
_PROBE = r"""
import importlib, json, sys
import airflow
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
for module in iter_airflow_imports(sys.argv[1]):
    importlib.import_module(module)
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert bag.dags and not bag.import_errors, bag.import_errors
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith(("airflow.", "packaging")))))
"""


@pytest.mark.parametrize("op", DAG_FILES)
def test_the_parse_finds_the_task_decorators_and_their_operators_imported(op: str, tmp_path: Path) -> None:
    registry = {
        "version": 1,
        "clusters": [
            {
                "name": "staging",
                "kubernetes_conn_id": "k8s_staging",
                "timezone": "UTC",
                "maintenance_window": {"days": ["tue"], "start": "10:00", "duration_minutes": 60},
                "operations": {op: {"scheduled": True}},
            }
        ],
    }
    (tmp_path / "clusters.json").write_text(json.dumps(registry))
    env = {
        **os.environ,
        "KUBE_MAINTENANCE_REGISTRY": str(tmp_path / "clusters.json"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", _PROBE, str(REPO / "dags" / f"{op}.py")], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    imported_by_the_parse = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in imported_by_the_parse if m.startswith(("airflow.sdk.definitions.decorators", "airflow.providers.standard.decorators", "airflow.providers.standard.operators.python", "packaging"))]
    assert heavy == [], f"every parse of dags/{op}.py imports these again: {heavy}"
