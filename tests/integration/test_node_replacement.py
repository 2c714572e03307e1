"""Rolling node replacement, whole DAG runs against the sandbox through real Airflow connections."""
from __future__ import annotations

import pytest

from sandbox.monitor import WRITE_VERBS
from sandbox.resources import NODES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAG_FILE = "node_replacement.py"


def node_names(cluster) -> set[str]:
    return {n["metadata"]["name"] for n in cluster.store.iter(NODES)}


def test_dry_run_changes_nothing_and_logs_the_plan(dag_runner, world) -> None:
    staging = world.clusters["staging"].cluster
    before = node_names(staging)
    seq = len(staging.requests)
    result = dag_runner.run(DAG_FILE, "node_replacement__staging", {"dry_run": True, "max_nodes": 3, "batch_size": 2})
    assert result.state == "success", result.task_states
    writes = [r for r in staging.requests.since(seq) if r.verb in WRITE_VERBS]
    assert writes == []
    planned = [a for a in result.audit if a["action"] == "plan-replace"]
    assert len(planned) == 3 and all(a["outcome"] == "planned" and a["dry_run"] for a in planned)
    assert node_names(staging) == before
