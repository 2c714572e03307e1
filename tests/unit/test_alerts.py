"""Failure alerts: the registry's destinations (validated, a registry-wide default a cluster may
replace), what a message says, what it never says (secrets), which failed step it names, and when a
window overrun is worth a message. Whole runs sending to local receivers: tests/integration/test_alerts.py."""
from __future__ import annotations

import copy
import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest

from kube_maintenance.core import alerts
from kube_maintenance.core.alerts import NO_RECORD, Alert, Failure, alert_arguments, clean, overrun_detail, record_failure, run_failures
from kube_maintenance.core.registry import AlertDestination, RegistryError, parse_registry
from kube_maintenance.core.windows import MaintenanceWindow

EMAIL = {"type": "email", "to": ["oncall@example.com"], "smtp_conn_id": "smtp_ops", "from_email": "km@example.com"}
WEBHOOK = {"type": "webhook", "http_conn_id": "chat_hook", "endpoint": "/hooks/kube-maintenance"}


def registry(**top: Any) -> dict[str, Any]:
    cluster = {"kubernetes_conn_id": "k", "timezone": "UTC", "maintenance_window": {"start": "02:00", "duration_minutes": 180}}
    return {"version": 1, "clusters": [{"name": "staging", **cluster}, {"name": "production", **cluster}], **top}


# ------------------------------------------------------------------------------------ registry
def test_the_registry_wide_destinations_go_to_every_cluster_unless_it_names_its_own() -> None:
    data = registry(alerts=[EMAIL, WEBHOOK])
    data["clusters"][1]["alerts"] = [{"type": "email", "to": "prod-oncall@example.com"}]
    parsed = parse_registry(data)
    assert parsed.cluster("staging").alerts == (
        AlertDestination("email", "smtp_ops", ("oncall@example.com",), "km@example.com"),
        AlertDestination("webhook", "chat_hook", endpoint="/hooks/kube-maintenance"),
    )
    assert parsed.cluster("production").alerts == (AlertDestination("email", "smtp_default", ("prod-oncall@example.com",), None),)


def test_no_alerts_by_default_and_an_empty_list_turns_the_default_off() -> None:
    assert parse_registry(registry()).cluster("staging").alerts == ()
    data = registry(alerts=[EMAIL])
    data["clusters"][0]["alerts"] = []
    assert parse_registry(data).cluster("staging").alerts == ()


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("top", {"type": "slack", "channel": "#ops"}, "alerts[0].type: expected email or webhook, got 'slack'"),
        ("top", "oncall@example.com", "alerts: expected a list of destinations"),
        ("top", {"type": "email"}, "alerts[0].to: expected an email address or a non-empty list of them, got None"),
        ("top", {"type": "email", "to": ["not-an-address"]}, "alerts[0].to: expected an email address"),
        ("top", {"type": "email", "to": "a@example.com", "smtp_conn": "x"}, "alerts[0]: unknown key 'smtp_conn' for a email destination; expected type, to, smtp_conn_id, from_email"),
        ("top", {"type": "email", "to": "a@example.com", "from_email": "me"}, "alerts[0].from_email: expected an email address, got 'me'"),
        ("top", {"type": "webhook"}, "alerts[0].http_conn_id: required"),
        ("top", {"type": "webhook", "http_conn_id": "has space"}, "alerts[0].http_conn_id: expected an Airflow connection id"),
        ("top", {"type": "webhook", "http_conn_id": "h", "endpoint": "https://hooks.example.com/T0/B0/secret"}, "alerts[0].endpoint: expected a path on the http connection's host"),
        ("cluster", {"type": "webhook", "http_conn_id": "h", "headers": {"Authorization": "x"}}, "clusters[1] (production).alerts[0]: unknown key 'headers' for a webhook destination"),
    ],
)
def test_a_bad_destination_is_refused_naming_the_field(where: str, value: Any, message: str) -> None:
    data = registry()
    if where == "top":
        data["alerts"] = value if isinstance(value, str) else [value]
    else:
        data["clusters"][1]["alerts"] = [value]
    with pytest.raises(RegistryError) as error:
        parse_registry(data)
    assert message in str(error.value)


def test_the_production_example_names_where_failures_go() -> None:
    from kube_maintenance.core.registry import load_registry

    parsed = load_registry()  # config/clusters.yaml
    for cluster in parsed.clusters:
        assert {d.type for d in cluster.alerts} == {"email", "webhook"}, cluster.name


# ------------------------------------------------------------------------------ the DAG's part
def test_a_cluster_without_destinations_gets_no_callbacks_or_deadline() -> None:
    cluster = parse_registry(registry()).cluster("staging")
    assert alert_arguments(cluster, "rollout_restart") == ({}, {})


def test_destinations_give_one_notifier_each_a_failure_record_per_task_and_the_window_as_deadline() -> None:
    from airflow.sdk import AsyncCallback, DeadlineReference

    cluster = parse_registry(registry(alerts=[EMAIL, WEBHOOK])).cluster("staging")
    arguments = alert_arguments(cluster, "node_replacement")
    assert [type(n).__name__ for n in arguments.dag["on_failure_callback"]] == ["EmailAlert", "WebhookAlert"]
    assert arguments.task == {"on_failure_callback": record_failure}
    [deadline] = [arguments.dag["deadline"]]
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT and deadline.interval == dt.timedelta(minutes=180)
    assert isinstance(deadline.callback, AsyncCallback) and deadline.callback.path == "kube_maintenance.core.alerts.window_overrun"
    kwargs = json.loads(json.dumps(deadline.callback.kwargs))  # stored with the serialized DAG
    assert kwargs["cluster"] == "staging" and kwargs["operation"] == "node_replacement"
    assert [AlertDestination.from_dict(d) for d in kwargs["destinations"]] == list(cluster.alerts)


# ---------------------------------------------------------------------------------- secrets
def test_secrets_never_reach_a_message() -> None:
    token = "k8s-aws-v1.aHR0cHM6Ly9zdHMuZXUtd2VzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eQ"
    url = "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=abcdef0123"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    text = (
        f"401 Unauthorized with {token}; signed {url}; key {pem}; Authorization: Bearer eyJhbGciOi.abc.def; "
        "users: [{name: admin, user: {token: sandbox-admin-token-123}}] aws_secret_access_key=wJalrXUtnFEMI/K7MDENG client-key-data: LS0tLS1CRUdJTi"
    )
    cleaned = clean(text)
    for secret in ("k8s-aws-v1.", "X-Amz-Signature", "X-Amz-Credential", "PRIVATE KEY", "MIIEowIBAAKCAQEA", "eyJhbGciOi", "sandbox-admin-token-123", "wJalrXUtnFEMI", "LS0tLS1CRUdJTi"):
        assert secret not in cleaned, (secret, cleaned)
    assert cleaned.startswith("401 Unauthorized with [EKS token redacted]")
    assert clean('deployment "cart-api" exceeded its progress deadline') == 'deployment "cart-api" exceeded its progress deadline'
    assert len(clean("x" * 5000)) == 2000


def test_a_failed_task_keeps_its_cleaned_reason_and_label_for_the_alert() -> None:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(task_id="restart", rendered_map_index="shop, search", xcom_push=lambda key, value: pushed.update({key: value}))
    record_failure({"ti": ti, "exception": RuntimeError("token: abc123 refused")})
    record = pushed[alerts.FAILURE_KEY]
    assert record["reason"] == "token: [redacted] refused" and record["label"] == "shop, search" and record["at"]


def test_a_failure_record_that_cannot_be_kept_is_only_logged() -> None:
    def refuse(key: str, value: Any) -> None:
        raise RuntimeError("no supervisor")

    record_failure({"ti": SimpleNamespace(task_id="batch", rendered_map_index=None, xcom_push=refuse), "exception": None})


# ------------------------------------------------------------------------- which step failed
def fake_run(monkeypatch: pytest.MonkeyPatch, states: dict[str, str], records: dict[tuple[str, int], dict[str, Any]]) -> Any:
    from airflow.sdk.execution_time import task_runner, xcom

    monkeypatch.setattr(task_runner.RuntimeTaskInstance, "get_task_states", staticmethod(lambda dag_id, run_ids, **_: {run_ids[0]: states}))
    monkeypatch.setattr(xcom.XCom, "get_one", classmethod(lambda cls, key, dag_id, task_id, run_id, map_index=None, **_: records.get((task_id, map_index))))
    tasks = {"plan": False, "preflight": False, "restart": False, "batch": False, "cleanup": True}
    return SimpleNamespace(task_dict={name: SimpleNamespace(is_teardown=teardown) for name, teardown in tasks.items()})


def test_the_failed_step_comes_first_then_steps_marked_failed_then_the_teardown(monkeypatch: pytest.MonkeyPatch) -> None:
    states = {"plan": "success", "preflight": "success", "restart_0": "failed", "restart_1": "failed", "restart_2": "upstream_failed", "cleanup": "failed"}
    records = {
        ("restart", 1): {"reason": "rollout failed: deployment/shop/cart-api", "label": "shop", "at": "2026-01-01T02:10:00+00:00"},
        ("cleanup", -1): {"reason": "the run did not complete: restart_0, restart_1 failed", "at": "2026-01-01T02:11:00+00:00"},
    }
    dag = fake_run(monkeypatch, states, records)
    failures = run_failures(dag, "rollout_restart__staging", "manual__1")
    assert [(f.step, f.reason) for f in failures] == [
        ("restart[1] (shop)", "rollout failed: deployment/shop/cart-api"),
        ("restart[0]", NO_RECORD),
        ("cleanup", "the run did not complete: restart_0, restart_1 failed"),
    ]


def test_a_run_only_its_teardown_failed_names_the_teardown_and_its_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "incomplete: the maintenance window closed with 2 workload(s) not restarted (window closed at 04:00)"
    dag = fake_run(monkeypatch, {"plan": "success", "restart_0": "success", "cleanup": "failed"}, {("cleanup", -1): {"reason": reason, "at": "2026-01-01T04:00:01+00:00"}})
    [failure] = run_failures(dag, "rollout_restart__staging", "scheduled__1")
    assert (failure.step, failure.reason) == ("cleanup", reason)


def test_the_message_names_cluster_operation_step_reason_and_link() -> None:
    failures = [Failure("batch", 0, "ip-10-0-1-23", "drain timed out"), Failure("cleanup", -1, None, "the run did not complete: batch_0 failed")]
    alert = Alert("run_failed", "production", "node_replacement", "node_replacement__production", "manual__1", "http://airflow/dags/x/runs/manual__1", "the run failed", failures)
    assert alert.subject == "[kube-maintenance] node_replacement on production failed at batch[0] (ip-10-0-1-23)"
    text = alert.text()
    for line in ("Cluster: production", "Operation: node_replacement (DAG node_replacement__production)", "Failed step: batch[0] (ip-10-0-1-23)",
                 "Reason: drain timed out", "Also failed: cleanup: the run did not complete: batch_0 failed", "Link: http://airflow/dags/x/runs/manual__1"):
        assert line in text.splitlines(), (line, text)
    assert "&lt;script&gt;" in Alert("run_failed", "c", "o", "d", "r", "u", "x", [Failure("plan", -1, None, "<script>")]).html()
    assert alert.payload()["failed_step"]["step"] == "batch[0] (ip-10-0-1-23)"


# --------------------------------------------------------------------------- window overrun
WINDOW = MaintenanceWindow(("tue",), 2, 0, 180, "Europe/London")  # Tuesdays 02:00-05:00 London (UTC in January)
OPENS = dt.datetime(2026, 1, 6, 2, 0, tzinfo=dt.timezone.utc)  # a Tuesday


def run(state: str, queued: dt.datetime, ended: dt.datetime | None = None) -> dict[str, Any]:
    return {"dag_id": "d", "dag_run_id": "r", "state": state, "queued_at": queued.isoformat(), "end_date": ended.isoformat() if ended else None}


def test_a_run_still_going_when_its_window_has_closed_is_reported() -> None:
    deadline = OPENS + dt.timedelta(minutes=180)
    detail = overrun_detail(run("running", OPENS), deadline, WINDOW, deadline + dt.timedelta(seconds=5))
    assert detail is not None and "closed at 2026-01-06T05:00:00+00:00: still running at 2026-01-06T05:00:05+00:00" in detail


def test_a_run_that_ended_in_time_is_not_reported_whatever_its_state() -> None:
    deadline = OPENS + dt.timedelta(minutes=180)
    for state in ("success", "failed"):
        assert overrun_detail(run(state, OPENS, OPENS + dt.timedelta(minutes=30)), deadline, WINDOW, deadline + dt.timedelta(hours=1)) is None


def test_a_run_that_ended_after_its_window_closed_is_reported() -> None:
    deadline = OPENS + dt.timedelta(minutes=180)
    detail = overrun_detail(run("failed", OPENS, deadline + dt.timedelta(minutes=1)), deadline, WINDOW, deadline + dt.timedelta(minutes=2))
    assert detail is not None and "ended failed at 2026-01-06T05:01:00+00:00" in detail


def test_a_run_started_outside_its_window_is_reported_once_it_has_run_a_window_s_length() -> None:
    queued = OPENS + dt.timedelta(days=1)  # a Wednesday: ignore_window
    detail = overrun_detail(run("running", queued), queued + dt.timedelta(minutes=180), WINDOW, queued + dt.timedelta(minutes=181))
    assert detail is not None and "started outside its maintenance window" in detail and "(180 min)" in detail


def test_back_to_back_windows_are_one() -> None:
    always = MaintenanceWindow(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), 0, 0, 1440, "UTC")
    assert overrun_detail(run("running", OPENS), OPENS + dt.timedelta(days=1), always, OPENS + dt.timedelta(days=1, seconds=5)) is None


def test_the_overrun_callback_takes_the_scheduler_s_context() -> None:
    kwargs = copy.deepcopy(alert_arguments(parse_registry(registry(alerts=[WEBHOOK])).cluster("staging"), "cronjob_refresh").dag["deadline"].callback.kwargs)
    import inspect

    from airflow.sdk.definitions.callback import AsyncCallback

    assert inspect.iscoroutinefunction(alerts.window_overrun)
    AsyncCallback.verify_callable(alerts.window_overrun)
    assert set(inspect.signature(alerts.window_overrun).parameters) == {"context", *kwargs}
