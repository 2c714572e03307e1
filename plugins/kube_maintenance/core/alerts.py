"""Failure alerts: who hears when a maintenance run fails at 3 a.m.

The registry names, per cluster (or once for every cluster), where failures go (``alerts``; see
``registry.AlertDestination``). Each destination gets one message per failed or aborted run, and
one per run still going when its maintenance window has closed, sent by the providers' notifiers:
email through an smtp connection (``SmtpNotifier``), a JSON POST through an http connection
(``HttpNotifier``). Where each piece runs:

- ``record_failure``, every task's ``on_failure_callback``, in the worker as the task fails: keeps
  the reason (the exception's message, cleaned of secrets) as an XCom of the failed task instance.
- ``EmailAlert`` and ``WebhookAlert``, the DAG's ``on_failure_callback`` (one notifier per
  destination), run by the dag-processor once the run has failed. A run marked failed in the UI
  fails the same way: Airflow marks its running steps failed and lets the ``cleanup`` teardown
  run, and the run fails after it. The notifier reads the run's task states and failure records
  and names the failed step, its reason, and links to the run.
- ``window_overrun``, the DAG's deadline alert (Airflow's Deadline Alerts), run by the triggerer
  when a run is still going a window's length after it was queued: for a scheduled run, queued as
  its window opens, that is when the window closes.

Kept cheap to import (DAG files import it when parsed): the providers, their hooks and their HTTP
and SMTP clients are imported only when a message is sent.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

from kube_maintenance.core.registry import AlertDestination, ClusterConfig
from kube_maintenance.core.windows import MaintenanceWindow

log = logging.getLogger("kube_maintenance.alerts")

# The XCom key under which a failed task instance keeps its reason for the run's alert.
FAILURE_KEY = "kube_maintenance_failure"
_REASON_LIMIT = 2000
NO_RECORD = (
    "no error recorded: the task was marked failed (in the UI or through the REST API) while it ran, "
    "or its worker died; see its log"
)
_CONTEXT_KEY = "kube_maintenance_alert"  # one description per run, shared by the run's notifiers


# ------------------------------------------------------------------------------------ secrets
_SECRET_PATTERNS = (
    # A PEM block (a client key in a kubeconfig, say).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "[private key redacted]"),
    # An EKS token: k8s-aws-v1.<base64url of a presigned STS URL>.
    (re.compile(r"k8s-aws-v1\.[A-Za-z0-9_\-=]*"), "[EKS token redacted]"),
    # A presigned URL (its signature and credential are in the query).
    (re.compile(r"\S*[?&]X-Amz-[A-Za-z-]+=\S*", re.I), "[presigned URL redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 [redacted]"),
    # key: value pairs whose value is a credential (kubeconfig fields, AWS keys, passwords).
    (
        re.compile(
            r"(?i)([\"']?(?:token|id-token|refresh-token|client-key-data|client-certificate-data|certificate-authority-data|"
            r"aws_secret_access_key|secret_access_key|secretaccesskey|aws_session_token|session_token|sessiontoken|password|"
            r"authorization|x-amz-security-token)[\"']?\s*[:=]\s*)[\"']?[^\s\"',}]+[\"']?"
        ),
        r"\1[redacted]",
    ),
)


def clean(text: Any, limit: int = _REASON_LIMIT) -> str:
    """Text fit for an alert: secrets Airflow knows of masked (connection passwords and the like), and
    whatever looks like a token, key, signed URL or credential removed; at most ``limit`` characters."""
    out = str(text if text is not None else "")
    try:
        from airflow.sdk._shared.secrets_masker import redact

        out = str(redact(out))
    except Exception:  # noqa: BLE001 - the patterns below still apply
        pass
    for pattern, replacement in _SECRET_PATTERNS:
        out = pattern.sub(replacement, out)
    out = out.strip()
    return out if len(out) <= limit else out[: limit - 3] + "..."


# --------------------------------------------------------------------------- in the worker
def record_failure(context: Mapping[str, Any]) -> None:
    """A task's ``on_failure_callback``: keep why it failed (the exception's message) for the run's alert.

    Never raises: a failure callback that fails changes nothing, and the alert then says no reason
    was recorded."""
    ti = context.get("ti")
    try:
        error = context.get("exception")
        reason = clean(error) if error is not None and str(error).strip() else (type(error).__name__ if error is not None else NO_RECORD)
        record = {
            "reason": reason,
            "label": getattr(ti, "rendered_map_index", None),
            "at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        ti.xcom_push(key=FAILURE_KEY, value=record)
    except Exception as exc:  # noqa: BLE001 - e.g. run outside a worker (a heartbeat timeout's callback)
        log.warning("could not record the failure of %s for the run's alert: %s", getattr(ti, "task_id", "?"), exc)


# ------------------------------------------------------------------------------- the message
@dataclass
class Failure:
    """One failed task instance of the run."""

    task_id: str
    map_index: int
    label: str | None
    reason: str
    at: str | None = None

    @property
    def step(self) -> str:
        name = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        return f"{name} ({self.label})" if self.label else name


@dataclass
class Alert:
    """What every destination is told about one run."""

    event: str  # "run_failed" or "window_overrun"
    cluster: str
    operation: str
    dag_id: str
    run_id: str
    url: str
    detail: str
    failures: list[Failure] = field(default_factory=list)  # the failed step first
    step_urls: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        if self.event == "window_overrun":
            return f"{self.operation} on {self.cluster} outlasted its maintenance window"
        step = f" at {self.failures[0].step}" if self.failures else ""
        return f"{self.operation} on {self.cluster} failed{step}"

    @property
    def subject(self) -> str:
        return f"[kube-maintenance] {self.headline}"

    def lines(self) -> list[tuple[str, str]]:
        rows = [("Cluster", self.cluster), ("Operation", f"{self.operation} (DAG {self.dag_id})"), ("Run", self.run_id)]
        if self.failures:
            first = self.failures[0]
            rows += [("Failed step", first.step), ("Reason", first.reason)]
            rows += [("Also failed", f"{f.step}: {f.reason}") for f in self.failures[1:]]
        rows += [("What happened", self.detail), ("Link", self.url)]
        return rows

    def text(self) -> str:
        return self.headline + "\n\n" + "\n".join(f"{k}: {v}" for k, v in self.lines())

    def html(self) -> str:
        rows = "".join(
            f"<tr><th align='left' valign='top'>{html.escape(k)}</th><td><pre style='margin:0;white-space:pre-wrap'>{html.escape(v)}</pre></td></tr>"
            if k not in ("Link",) else f"<tr><th align='left'>{k}</th><td><a href='{html.escape(v, quote=True)}'>{html.escape(v)}</a></td></tr>"
            for k, v in self.lines()
        )
        return f"<p>{html.escape(self.headline)}</p><table>{rows}</table>"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body (``text`` is what a chat webhook shows)."""
        first = self.failures[0] if self.failures else None
        return {
            "event": self.event,
            "cluster": self.cluster,
            "operation": self.operation,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "url": self.url,
            "failed_step": ({**asdict(first), "step": first.step, "url": self.step_urls[0] if self.step_urls else self.url} if first else None),
            "also_failed": [{**asdict(f), "step": f.step} for f in self.failures[1:]],
            "detail": self.detail,
            "summary": self.headline,
            "text": self.text(),
        }


def _base_url() -> str:
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")
    except Exception:  # noqa: BLE001
        return "http://localhost:8080"


def run_url(dag_id: str, run_id: str) -> str:
    """The run in the Airflow UI (``[api] base_url``), as Airflow's own task log links are built."""
    return f"{_base_url()}/dags/{dag_id}/runs/{quote(run_id)}"


def _step_url(dag_id: str, run_id: str, failure: Failure) -> str:
    mapped = f"/mapped/{failure.map_index}" if failure.map_index >= 0 else ""
    return f"{run_url(dag_id, run_id)}/tasks/{failure.task_id}{mapped}"


def _split_key(key: str, task_ids: set[str]) -> tuple[str, int]:
    """A task-states key (``task_id`` or ``task_id_<map index>``) as task id and map index."""
    if key in task_ids:
        return key, -1
    task_id, _, index = key.rpartition("_")
    return (task_id, int(index)) if index.isdigit() and task_id in task_ids else (key, -1)


def run_failures(dag: Any, dag_id: str, run_id: str) -> list[Failure]:
    """The run's failed task instances with their recorded reasons: the steps first (those with a
    recorded failure in the order they failed, then those marked failed), the teardown last."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.sdk.execution_time.xcom import XCom

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    task_ids = set(getattr(dag, "task_dict", {}) or {})
    failures = []
    for key, state in states.items():
        if str(getattr(state, "value", state)) != "failed":
            continue
        task_id, map_index = _split_key(key, task_ids)
        try:
            record = XCom.get_one(key=FAILURE_KEY, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)
        except Exception as exc:  # noqa: BLE001 - the alert still goes, without this reason
            log.warning("could not read the failure record of %s: %s", key, exc)
            record = None
        record = record if isinstance(record, dict) else {}
        failures.append(Failure(task_id, map_index, record.get("label") or None, clean(record.get("reason") or NO_RECORD), record.get("at")))

    def is_teardown(f: Failure) -> bool:
        task = (getattr(dag, "task_dict", {}) or {}).get(f.task_id)
        return bool(getattr(task, "is_teardown", False))

    return sorted(failures, key=lambda f: (is_teardown(f), f.at is None, f.at or "", f.task_id, f.map_index))


def describe_failure(context: Mapping[str, Any], cluster: str, operation: str) -> Alert:
    """The alert for a failed run, from a DAG failure callback's context (once per run: the run's
    notifiers share it)."""
    cached = context.get(_CONTEXT_KEY) if hasattr(context, "get") else None
    if isinstance(cached, Alert):
        return cached
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(dag, "dag_id", "?")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id") or "?"
    try:
        failures = run_failures(dag, dag_id, run_id)
    except Exception as exc:  # noqa: BLE001 - no way to read the run's tasks: say so, still alert
        log.warning("could not read the failed tasks of %s/%s: %s", dag_id, run_id, exc)
        ti = context.get("ti")
        failures = [Failure(ti.task_id, ti.map_index, None, NO_RECORD)] if ti is not None else []
    why = str(context.get("reason") or "task_failure")
    detail = {
        "task_failure": "the run failed; the cleanup task's summary (its last audit line) says what it undid and what is left",
        "all_tasks_deadlocked": "the run failed: no task could run any more (deadlocked)",
    }.get(why, f"the run failed ({why})")
    alert = Alert("run_failed", cluster, operation, dag_id, run_id, run_url(dag_id, run_id), detail, failures, [_step_url(dag_id, run_id, f) for f in failures])
    try:
        context[_CONTEXT_KEY] = alert  # type: ignore[index]
    except TypeError:
        pass
    return alert


# ---------------------------------------------------------------------------- sending
def _provider_notifier(destination: AlertDestination, alert: Alert) -> Any:
    """The provider's notifier for one destination, with the message already written (imported
    here: the providers and their clients are not loaded when DAG files are parsed)."""
    if destination.type == "email":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            to=list(destination.to),
            from_email=destination.from_email,
            smtp_conn_id=destination.conn_id,
            subject=alert.subject,
            html_content=alert.html(),
        )
    if destination.type == "webhook":
        from airflow.providers.http.notifications.http import HttpNotifier

        return HttpNotifier(
            http_conn_id=destination.conn_id,
            endpoint=destination.endpoint or None,
            method="POST",
            json=alert.payload(),
            headers={"Content-Type": "application/json"},
        )
    raise ValueError(f"unknown alert destination type {destination.type!r}")


def _untemplated(context: Any) -> dict[str, Any]:
    """The context for a provider's notifier, without the DAG: what it may still render (an
    smtp connection's sender) needs no DAG's template settings, and a DAG callback's context in
    ``dag.test()`` holds the serialized DAG, which has none."""
    return {k: v for k, v in dict(context).items() if k != "dag"}


class RunFailedAlert(BaseNotifier):
    """A DAG ``on_failure_callback``: tells one destination that a run failed, which step, why, and where.

    The message is written from the run itself (task states, failure records), never from a
    template, and sent by the provider's notifier without rendering (an error message is not Jinja)."""

    template_fields = ()

    def __init__(self, destination: AlertDestination, cluster: str, operation: str) -> None:
        super().__init__()
        self.destination = destination
        self.cluster = cluster
        self.operation = operation

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render: the message is written from the run, not from a template."""

    def notify(self, context: Any) -> None:
        alert = describe_failure(context, self.cluster, self.operation)
        _provider_notifier(self.destination, alert).notify(_untemplated(context))
        log.info("alert sent: %s, %s", self.destination.describe(), alert.headline)


class EmailAlert(RunFailedAlert):
    """A failed run, by email (the smtp provider's ``SmtpNotifier``)."""


class WebhookAlert(RunFailedAlert):
    """A failed run, as a JSON POST (the http provider's ``HttpNotifier``)."""


NOTIFIERS = {"email": EmailAlert, "webhook": WebhookAlert}


# ------------------------------------------------------------------------- window overrun
def _when(value: Any) -> dt.datetime | None:
    if isinstance(value, Mapping) and "__var" in value:  # Airflow's serialized datetime
        value = value["__var"]
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, str) and value:
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return None


def overrun_detail(dag_run: Mapping[str, Any], deadline: dt.datetime | None, window: MaintenanceWindow, now: dt.datetime) -> str | None:
    """What to say about a run whose deadline (a window's length after it was queued) has passed, or
    None when there is nothing to report: it ended before, or it is still inside its window (back to
    back windows are one)."""
    state = str(dag_run.get("state") or "unknown")
    ended = _when(dag_run.get("end_date"))
    if ended is not None and state in ("success", "failed") and (deadline is None or ended <= deadline):
        return None
    started = _when(dag_run.get("queued_at")) or _when(dag_run.get("start_date")) or _when(dag_run.get("run_after"))
    closing = window.end_of_window_at(started) if started is not None else None
    if closing is not None and now < closing and ended is None:
        return None
    status = f"ended {state} at {ended.isoformat(timespec='seconds')}" if ended is not None else f"still {state} at {now.isoformat(timespec='seconds')}"
    if closing is not None:
        return f"the run is past its maintenance window ({window.describe()}), which closed at {closing.isoformat(timespec='seconds')}: {status}"
    return (
        f"the run started outside its maintenance window ({window.describe()}: ignore_window, or a dry run) and has run "
        f"longer than the window lasts ({window.duration_minutes} min): {status}"
    )


async def window_overrun(context: Mapping[str, Any] | None = None, *, cluster: str, operation: str, window: dict[str, Any], destinations: list[dict[str, Any]]) -> str:
    """The DAG's deadline alert callback (the triggerer runs it; ``context`` holds the run as the
    scheduler saw it at the deadline): tell each destination that the run outlasted its window."""
    context = context or {}
    dag_run = dict(context.get("dag_run") or {})
    deadline = _when((context.get("deadline") or {}).get("deadline_time"))
    mw = MaintenanceWindow(tuple(window["days"]), int(window["start_hour"]), int(window["start_minute"]), int(window["duration_minutes"]), window["timezone"])
    detail = overrun_detail(dag_run, deadline, mw, dt.datetime.now(dt.timezone.utc))
    dag_id, run_id = str(dag_run.get("dag_id", "?")), str(dag_run.get("dag_run_id") or dag_run.get("run_id") or "?")
    if detail is None:
        log.info("%s/%s ended within its maintenance window: no alert", dag_id, run_id)
        return "nothing to report"
    alert = Alert("window_overrun", cluster, operation, dag_id, run_id, run_url(dag_id, run_id), detail)
    errors = []
    for raw in destinations:
        destination = AlertDestination.from_dict(raw)
        try:
            await _provider_notifier(destination, alert).async_notify(_untemplated(context))
            log.info("alert sent: %s, %s", destination.describe(), alert.headline)
        except Exception as exc:  # noqa: BLE001 - the other destinations still get theirs
            log.exception("alert not sent: %s", destination.describe())
            errors.append(f"{destination.describe()}: {exc}")
    if errors:
        raise RuntimeError("window overrun alert not sent to: " + "; ".join(errors))
    return f"window overrun reported to {len(destinations)} destination(s)"


# ------------------------------------------------------------------------- the DAG's part
class AlertArguments(NamedTuple):
    dag: dict[str, Any]  # DAG(...) arguments: on_failure_callback, deadline
    task: dict[str, Any]  # default_args for every task: on_failure_callback


def alert_arguments(cluster: ClusterConfig, operation: str) -> AlertArguments:
    """What sends the cluster's alerts for an operation's DAG; nothing when the registry names no destination."""
    if not cluster.alerts:
        return AlertArguments({}, {})
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    w = cluster.window
    overrun = AsyncCallback(
        window_overrun,
        kwargs={
            "cluster": cluster.name,
            "operation": operation,
            "window": {"days": list(w.days), "start_hour": w.start_hour, "start_minute": w.start_minute, "duration_minutes": w.duration_minutes, "timezone": w.timezone},
            "destinations": [d.as_dict() for d in cluster.alerts],
        },
    )
    return AlertArguments(
        {
            "on_failure_callback": [NOTIFIERS[d.type](d, cluster.name, operation) for d in cluster.alerts],
            "deadline": DeadlineAlert(
                reference=DeadlineReference.DAGRUN_QUEUED_AT,
                interval=dt.timedelta(minutes=w.duration_minutes),
                callback=overrun,
                name="maintenance window",
            ),
        },
        {"on_failure_callback": record_failure},
    )
