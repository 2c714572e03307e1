"""The trigger forms: they submit as they open, dry_run first and on, scheduled runs use the registry."""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kube_maintenance.core.forms import form_defaults, run_conf
from kube_maintenance.node_replacement.plan import NodeReplacementParams
from kube_maintenance.cronjob_refresh.decisions import CronJobRefreshParams
from kube_maintenance.rollout_restart.decisions import RolloutRestartParams

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = ("node_replacement", "cronjob_refresh", "rollout_restart")
READERS = {"node_replacement": NodeReplacementParams.from_mapping, "cronjob_refresh": CronJobRefreshParams.from_mapping, "rollout_restart": RolloutRestartParams.from_mapping}


def registry(tmp_path: Path, defaults: dict[str, Any]) -> Path:
    ops = {op: {"scheduled": True, "defaults": defaults.get(op, {})} for op in DAG_FILES}
    cluster = {
        "name": "staging",
        "kubernetes_conn_id": "k8s_staging",
        "aws_conn_id": "aws_staging",
        "region": "eu-west-1",
        "timezone": "Europe/London",
        "owner": "platform-team",
        "maintenance_window": {"days": ["tue"], "start": "10:00", "duration_minutes": 60},
        "operations": ops,
    }
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"version": 1, "clusters": [cluster]}))
    return path


@pytest.fixture
def dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # The registry turns dry_run off for scheduled runs of every operation, as config/clusters.yaml does.
    off = {"dry_run": False}
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(registry(tmp_path, {"node_replacement": {**off, "batch_size": 2}, "cronjob_refresh": off, "rollout_restart": off})))
    return {op: runpy.run_path(str(REPO / "dags" / f"{op}.py"))[f"{op}__staging"] for op in DAG_FILES}


def form(dag: Any) -> dict[str, Any]:
    """The DAG's Param objects by name, in form order."""
    return {name: dag.params.get_param(name) for name in dag.params}


def ui_required(schema: dict[str, Any]) -> bool:
    """Airflow's form (FlexibleForm isParamRequired): required unless the type list includes "null"."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


@pytest.mark.parametrize("op", DAG_FILES)
def test_every_form_submits_as_it_opens(dags: dict[str, Any], op: str) -> None:
    params = form(dags[op])
    # The form refuses to submit a required field whose value is null or "" (or an emptied list).
    blocked = [name for name, p in params.items() if ui_required(p.schema) and p.value in (None, "", [])]
    assert blocked == [], f"{op}: these fields would keep the Trigger button disabled: {blocked}"
    dags[op].params.validate()  # Airflow's own JSON-schema check of the defaults
    parsed = READERS[op]({name: p.value for name, p in params.items()})
    assert parsed.dry_run is True


@pytest.mark.parametrize("op", DAG_FILES)
def test_the_form_opens_with_dry_run_first_and_on_whatever_the_registry_says(dags: dict[str, Any], op: str) -> None:
    params = form(dags[op])
    assert list(params)[0] == "dry_run" and params["dry_run"].value is True
    # Every field has a title, and the fields past the run mode are grouped in sections.
    assert all(p.schema.get("title") for p in params.values())
    assert {p.schema.get("section") for name, p in params.items() if name not in ("dry_run", "ignore_window")} <= {"What to act on", "Pace and limits", "Safety"}


def test_registry_defaults_other_than_dry_run_still_fill_the_form(dags: dict[str, Any]) -> None:
    assert form(dags["node_replacement"])["batch_size"].value == 2


def test_kinds_is_the_forms_multi_select(dags: dict[str, Any]) -> None:
    schema = form(dags["rollout_restart"])["kinds"].schema
    assert schema["type"] == "array" and schema["examples"] == ["Deployment", "DaemonSet", "StatefulSet"]


@pytest.mark.parametrize("op", DAG_FILES)
def test_owner_and_docs(dags: dict[str, Any], op: str) -> None:
    dag = dags[op]
    assert {t.owner for t in dag.tasks} == {"platform-team"}
    assert all(t.doc_md for t in dag.tasks), [t.task_id for t in dag.tasks if not t.doc_md]
    assert "What a dry run shows" in dag.doc_md and "`dry_run`" in dag.doc_md
    cleanup = dag.get_task("cleanup")
    assert cleanup.is_teardown and cleanup.on_failure_fail_dagrun
    assert set(cleanup.upstream_task_ids) == {t.task_id for t in dag.tasks} - {"cleanup"}, "the cleanup waits for every step"


def test_scheduled_runs_act_on_the_registry_defaults_manual_runs_on_their_form() -> None:
    form = {"dry_run": True, "batch_size": 1}
    scheduled = SimpleNamespace(run_type=SimpleNamespace(value="scheduled"))
    manual = SimpleNamespace(run_type=SimpleNamespace(value="manual"))
    assert run_conf({"params": form, "dag_run": scheduled}, {"dry_run": False}) == {"dry_run": False, "batch_size": 1}
    assert run_conf({"params": form, "dag_run": manual}, {"dry_run": False}) == form
    assert run_conf({"params": form, "dag_run": scheduled}, None) == form


def test_form_defaults_keep_known_fields_and_force_dry_run() -> None:
    base = {"dry_run": True, "batch_size": 1}
    assert form_defaults(base, {"dry_run": False, "batch_size": 3, "unknown": 1}) == {"dry_run": True, "batch_size": 3}


def test_the_default_max_nodes_fits_the_dags_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan refuses more batches than the DAG has slots for: an untouched form must not ask for that.
    path = registry(tmp_path, {"node_replacement": {"batch_size": 2}})
    data = json.loads(path.read_text())
    data["clusters"][0]["operations"]["node_replacement"]["max_batches"] = 3
    path.write_text(json.dumps(data))
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(path))
    dag = runpy.run_path(str(REPO / "dags" / "node_replacement.py"))["node_replacement__staging"]
    assert dag.params["max_nodes"] == 6 and dag.params["batch_size"] == 2


@pytest.mark.parametrize("op", DAG_FILES)
def test_every_field_declares_a_dialect_that_accepts_its_schema_and_refuses_bad_values(dags: dict[str, Any], op: str) -> None:
    # Airflow validates each Param of a scheduled DAG at every parse; a declared draft-07 dialect
    # spares jsonschema the 2020-12 metaschema check (a third of the parse), and must not loosen
    # what the form accepts.
    from jsonschema import Draft7Validator, FormatChecker, ValidationError
    from jsonschema.validators import validator_for

    for name, param in form(dags[op]).items():
        assert validator_for(param.schema) is Draft7Validator, f"{op}.{name} is checked by {validator_for(param.schema).__name__}"
        Draft7Validator.check_schema(param.schema)
        Draft7Validator(param.schema, format_checker=FormatChecker()).validate(param.value)
    wrong_type = {"dry_run": "yes", "batch_size": "two", "max_concurrent": -1, "pods_gone_timeout_seconds": 0}
    for name, value in wrong_type.items():
        if name in dags[op].params:
            with pytest.raises(ValidationError):
                Draft7Validator(form(dags[op])[name].schema).validate(value)
