"""Where the tests' alerts go: a local SMTP server and a local HTTP receiver, each a thread of this
process (stdlib ``socketserver`` and ``http.server``), with the Airflow connections that reach them
and the registry's ``alerts`` naming them. Shared by the integration and distributed tests.

Also ``dag_callbacks_like_the_dag_processor``: ``dag.test()`` (Airflow 3.3.2) runs a DAG's failure
callbacks in process, but without the Task SDK's supervisor channel that the dag-processor gives
them, so a callback cannot read the run's task states or XComs there. This gives ``dag.test()``'s
DAG callbacks the same channel (Airflow's own in-process test supervisor), so that the integration
tests run the alert code as the dag-processor does.
"""
from __future__ import annotations

import email
import email.policy
import html
import json
import os
import re
import socketserver
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SMTP_CONN_ID = "smtp_alerts"
HTTP_CONN_ID = "http_alerts"
WEBHOOK_PATH = "/hooks/kube-maintenance"
RECIPIENTS = ["oncall@example.com", "platform@example.com"]
SENDER = "kube-maintenance@example.com"


# ------------------------------------------------------------------------------------------- SMTP
@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self) -> str:
        """The message's text, HTML tags dropped and entities decoded (what a person reads)."""
        part = self.message.get_body(("html", "plain"))
        text = part.get_content() if part is not None else ""
        return html.unescape(re.sub(r"<[^>]+>", " ", text))


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib and aiosmtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        sender, recipients = "", []
        self.reply("220 localhost test SMTP ready")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-localhost\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
                self.wfile.flush()
            elif verb == "HELO":
                self.reply("250 localhost")
            elif verb == "MAIL":
                sender, recipients = line.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip().split(" ")[0].strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    chunk = self.rfile.readline()
                    if not chunk or chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                message = email.message_from_bytes(bytes(data), policy=email.policy.default)
                self.server.received.append(Mail(sender, list(recipients), message))  # type: ignore[attr-defined]
                self.reply("250 OK: queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


class SmtpReceiver:
    def __init__(self) -> None:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
        self.server.daemon_threads = True
        self.server.received = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def received(self) -> list[Mail]:
        return list(self.server.received)  # type: ignore[attr-defined]

    def clear(self) -> None:
        self.server.received.clear()  # type: ignore[attr-defined]

    def start(self) -> SmtpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------------- HTTP
@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        self.server.received.append(Post(self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args: Any) -> None:  # quiet
        pass


class HttpReceiver:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
        self.server.daemon_threads = True
        self.server.received = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def received(self) -> list[Post]:
        return list(self.server.received)  # type: ignore[attr-defined]

    def clear(self) -> None:
        self.server.received.clear()  # type: ignore[attr-defined]

    def start(self) -> HttpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------- both of them
@dataclass
class Receivers:
    smtp: SmtpReceiver
    http: HttpReceiver

    @classmethod
    def start(cls) -> Receivers:
        return cls(SmtpReceiver().start(), HttpReceiver().start())

    def stop(self) -> None:
        self.smtp.stop()
        self.http.stop()

    def clear(self) -> None:
        self.smtp.clear()
        self.http.clear()

    def connections(self) -> dict[str, str]:
        """The Airflow connections reaching them, as AIRFLOW_CONN_* environment variables (JSON)."""
        smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": self.smtp.port, "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 10}}
        http = {"conn_type": "http", "host": "127.0.0.1", "port": self.http.port, "schema": "http"}
        return {f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}": json.dumps(smtp), f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": json.dumps(http)}

    @staticmethod
    def destinations() -> list[dict[str, Any]]:
        """The registry's ``alerts`` naming them."""
        return [
            {"type": "email", "to": RECIPIENTS, "smtp_conn_id": SMTP_CONN_ID, "from_email": SENDER},
            {"type": "webhook", "http_conn_id": HTTP_CONN_ID, "endpoint": WEBHOOK_PATH},
        ]

    def everything(self) -> str:
        """All that reached them, as text (for secret greps)."""
        mails = [f"{m.subject}\n{m.message.as_string()}" for m in self.smtp.received]
        posts = [json.dumps(p.body) for p in self.http.received]
        return "\n".join(mails + posts)


def with_alerts(registry: dict[str, Any]) -> dict[str, Any]:
    """The registry with the receivers as every cluster's destinations (the registry-wide default)."""
    return {**registry, "alerts": Receivers.destinations()}


# ------------------------------------------------------------------------------ dag.test() shim
def dag_callbacks_like_the_dag_processor(monkeypatch: Any) -> None:
    """Run ``dag.test()``'s DAG callbacks with a supervisor channel, as the dag-processor runs them:
    Airflow's ``InProcessTestSupervisor`` (what ``dag.test()`` runs each task with) answering their
    requests (task states, XComs, connections) from the test's metadata database."""
    import psutil
    import structlog
    from airflow.models.dagrun import DagRun
    from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms, InProcessTestSupervisor, set_supervisor_comms

    original = DagRun.execute_dag_callbacks

    def execute_dag_callbacks(self: Any, dag: Any, success: bool = True, relevant_ti: Any = None, reason: str = "success") -> Any:
        if relevant_ti is None:
            return original(self, dag, success=success, relevant_ti=relevant_ti, reason=reason)
        supervisor = InProcessTestSupervisor(
            id=relevant_ti.id, pid=os.getpid(), process=psutil.Process(), process_log=structlog.get_logger(), client=InProcessTestSupervisor._api_client(dag)
        )
        supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
        with set_supervisor_comms(supervisor.comms):
            return original(self, dag, success=success, relevant_ti=relevant_ti, reason=reason)

    monkeypatch.setattr(DagRun, "execute_dag_callbacks", execute_dag_callbacks)


def no_deadline_alerts_in_dag_test(monkeypatch: Any) -> None:
    """Build the DAGs without their deadline alert (the window overrun's) for ``dag.test()``.

    In Airflow 3.3.2 ``dag.test()`` gives the scheduler loop a DAG serialized in memory, whose
    ``deadline`` holds the alerts themselves instead of the ids of their database rows, and a run
    of such a DAG that succeeds then fails inside ``DagRun.update_state`` (``DeadlineAlertModel.get_by_id``
    of a dict). A real scheduler reads the DAG back from the database, ids and all: the distributed
    test runs the DAGs with their deadline alerts, and the overrun callback is tested here directly."""
    from kube_maintenance.core import alerts

    original = alerts.alert_arguments

    def without_deadline(cluster: Any, operation: str) -> Any:
        arguments = original(cluster, operation)
        return alerts.AlertArguments({k: v for k, v in arguments.dag.items() if k != "deadline"}, arguments.task)

    monkeypatch.setattr(alerts, "alert_arguments", without_deadline)
