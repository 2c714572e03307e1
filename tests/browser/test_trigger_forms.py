"""The trigger forms, used through the browser as an operator would, against a real Airflow and the sandbox."""
from __future__ import annotations

from typing import Any

import pytest
from airflow_processes import AirflowApi, parse_audit
from browser_stack import DAG_IDS, USERNAME, Staging
from trigger_ui import AirflowUi

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(600)]

RUN_TIMEOUT = 150.0


def explain(api: AirflowApi, dag_id: str, run_id: str, logs: dict[str, str] | None = None) -> str:
    """Task states and the end of each failed task's log, for assertion messages."""
    states = api.task_states(dag_id, run_id)
    logs = logs if logs is not None else api.run_logs(dag_id, run_id)
    failed = [key for key, state in states.items() if state == "failed"]
    tails = [f"--- {key} ---\n" + "\n".join(text.splitlines()[-25:]) for key, text in logs.items() if key.split("#")[0] in failed]
    return f"task states: {states}\n" + "\n".join(tails)


def trigger_and_wait(ui: AirflowUi, api: AirflowApi, dag_id: str, fields: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Trigger from the browser form, wait for the run to end; the run id, the run and its task logs."""
    run_id = ui.trigger(dag_id, fields)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    return run_id, run, api.run_logs(dag_id, run_id)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_the_form_s_defaults_trigger_a_dry_run_that_succeeds_and_audits(ui: AirflowUi, api: AirflowApi, staging: Staging, dag_id: str) -> None:
    ui.open_dag(dag_id)
    ui.open_trigger_form()
    assert ui.trigger_enabled(), f"{dag_id}: the Trigger button is disabled with the form's defaults; {ui.form_problems()}"
    seq = staging.request_seq()

    run_id = ui.submit(dag_id)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    logs = api.run_logs(dag_id, run_id)

    assert run["state"] == "success", explain(api, dag_id, run_id, logs)
    assert run["conf"].get("dry_run") is True, run["conf"]
    assert run.get("triggering_user_name") == USERNAME, run
    audit = parse_audit("\n".join(logs.values()))
    assert audit, f"no KUBE_MAINTENANCE_AUDIT line in any task log of {run_id}: {sorted(logs)}"
    assert {line["dry_run"] for line in audit} == {True}, [line for line in audit if line["dry_run"] is not True]
    assert {line["triggered_by"] for line in audit} == {f"user:{USERNAME}"}, {line["triggered_by"] for line in audit}
    assert {line["run"] for line in audit} == {run_id}
    assert all(line["outcome"] == "planned" for line in audit), [line for line in audit if line["outcome"] != "planned"]
    assert staging.writes_since(seq) == [], "a dry run changed nothing in the cluster"


def test_node_replacement_of_one_named_node_plans_only_that_node(ui: AirflowUi, api: AirflowApi, staging: Staging) -> None:
    dag_id = "node_replacement__staging"
    nodes = staging.node_names()
    chosen = nodes[-1]
    seq = staging.request_seq()

    run_id, run, logs = trigger_and_wait(ui, api, dag_id, {"node_names": [chosen]})

    assert run["state"] == "success", explain(api, dag_id, run_id, logs)
    assert run["conf"].get("node_names") == [chosen], run["conf"]
    planned = [line for line in parse_audit("\n".join(logs.values())) if line["action"] == "plan-replace"]
    assert [line["target"] for line in planned] == [f"node/{chosen}"], (planned, nodes)
    assert all(line["dry_run"] is True and line["outcome"] == "planned" for line in planned), planned
    assert staging.writes_since(seq) == []
    assert staging.node_names() == nodes


def test_rollout_restart_of_deployments_only_plans_only_deployments(ui: AirflowUi, api: AirflowApi, staging: Staging) -> None:
    dag_id = "rollout_restart__staging"
    ui.open_dag(dag_id)
    ui.open_trigger_form()
    ui.fill({"kinds": ["Deployment"]})
    assert ui.field_value("kinds") == ["Deployment"], ui.form_problems()
    run_id = ui.submit(dag_id)
    run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    logs = api.run_logs(dag_id, run_id)

    assert run["state"] == "success", explain(api, dag_id, run_id, logs)
    assert run["conf"].get("kinds") == ["Deployment"], run["conf"]
    planning = [line for line in parse_audit("\n".join(logs.values())) if line["action"] in ("plan-restart", "skip-restart")]
    assert planning, f"no restart planning audit line: {sorted(logs)}"
    assert {line["detail"]["kind"] for line in planning} == {"Deployment"}, [(line["target"], line["detail"]["kind"]) for line in planning]
    assert all(line["target"].startswith("deployment/") for line in planning), [line["target"] for line in planning]


def test_a_bad_selector_fails_the_plan_naming_the_field_before_any_write(ui: AirflowUi, api: AirflowApi, staging: Staging) -> None:
    dag_id = "node_replacement__staging"
    seq = staging.request_seq()

    # A real run (not a dry run, which never writes): even so, nothing is written, not even the Lease lock.
    run_id, run, logs = trigger_and_wait(ui, api, dag_id, {"dry_run": False, "node_selector": "role in ("})

    assert run["conf"].get("node_selector") == "role in (" and run["conf"].get("dry_run") is False, run["conf"]
    assert run["state"] == "failed", explain(api, dag_id, run_id, logs)
    states = api.task_states(dag_id, run_id)
    assert states.get("plan") == "failed", states
    steps = {task: state for task, state in states.items() if task == "preflight" or task.startswith("batch_")}
    ran = {task: state for task, state in steps.items() if state not in ("upstream_failed", "skipped", "removed", None)}
    assert steps and ran == {}, f"steps after plan ran: {ran}"
    plan_log = "\n".join(text for key, text in logs.items() if key.startswith("plan#"))
    assert "node_selector" in plan_log, plan_log[-3000:]
    writes = staging.writes_since(seq)
    assert writes == [], f"the cluster saw writes (the Lease lock is one): {[(w.verb, w.resource, w.namespace, w.name) for w in writes]}"
    assert staging.lease() is None
