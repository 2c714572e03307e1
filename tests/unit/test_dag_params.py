"""The DAGs' form (``params``) is attached after their tasks, so that Airflow does not deep-copy it
into every task at parse time; what a task reads at runtime, the serialized DAG and Airflow's check
of a scheduled DAG's defaults stay as they were."""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = ("node_replacement", "cronjob_refresh", "rollout_restart")


def write_registry(tmp_path: Path, defaults: dict[str, dict[str, Any]] | None = None, requires_approval: bool = False) -> Path:
    defaults = defaults or {}
    cluster = {
        "name": "staging",
        "kubernetes_conn_id": "k8s_staging",
        "aws_conn_id": "aws_staging",
        "region": "eu-west-1",
        "timezone": "Europe/London",
        "maintenance_window": {"days": ["tue"], "start": "10:00", "duration_minutes": 60},
        "requires_approval": requires_approval,
        "operations": {op: {"scheduled": True, "defaults": defaults.get(op, {})} for op in DAG_FILES},
    }
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"version": 1, "clusters": [cluster]}))
    return path


def parse(op: str) -> Any:
    return runpy.run_path(str(REPO / "dags" / f"{op}.py"))[f"{op}__staging"]


@pytest.fixture(params=[False, True], ids=["no-approval", "approval"])
def dags(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    registry = write_registry(tmp_path, {"node_replacement": {"batch_size": 2}}, requires_approval=request.param)
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(registry))
    return {op: parse(op) for op in DAG_FILES}


@pytest.mark.parametrize("op", DAG_FILES)
def test_tasks_carry_no_copy_of_the_form(dags: dict[str, Any], op: str) -> None:
    # A copy in a task costs a deep copy of every Param per class of its operator at each parse.
    dag = dags[op]
    assert len(dag.params) > 5
    copied = {t.task_id: sorted(t.params) for t in dag.tasks if t.params}
    assert copied == {}


@pytest.mark.parametrize("op", DAG_FILES)
def test_every_task_reads_the_forms_values_and_the_runs_conf_at_runtime(dags: dict[str, Any], op: str) -> None:
    from airflow.sdk.definitions.param import process_params

    dag = dags[op]
    form = dag.params.validate()
    assert form["dry_run"] is True and (op != "node_replacement" or form["batch_size"] == 2)
    # What the task runner puts in the context's ``params``: the DAG's, then the task's, then the
    # run's conf. (Airflow stores a conf's values in the Params it resolves, with or without copies in
    # the tasks: each task runs in a process that parses the file afresh. So without conf first.)
    for task in dag.tasks:
        assert process_params(dag, task, None, suppress_exception=False) == form, task.task_id
    for task in dag.tasks:
        assert process_params(dag, task, {"dry_run": False}, suppress_exception=False) == {**form, "dry_run": False}, task.task_id


@pytest.mark.parametrize("op", DAG_FILES)
def test_the_serialized_dag_keeps_the_whole_form(dags: dict[str, Any], op: str) -> None:
    # What the dag-processor stores and the scheduler and the UI's trigger form read.
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dags[op]
    data = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    restored = DagSerialization.from_dict(data)
    assert list(restored.params) == list(dag.params)
    for name in dag.params:
        original, copy = dag.params.get_param(name), restored.params.get_param(name)
        assert (copy.value, copy.description, copy.schema) == (original.value, original.description, original.schema), name
    assert restored.params.validate() == dag.params.validate()


def test_a_scheduled_dag_whose_default_breaks_its_form_is_still_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow validates a scheduled DAG's Params when the form is attached, as in DAG(params=...).
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(write_registry(tmp_path, {"node_replacement": {"batch_size": 0}})))
    with pytest.raises(ValueError, match="not allowed to define a Schedule"):
        parse("node_replacement")
