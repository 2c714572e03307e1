"""AWS faults for the sandbox: a proxy in front of moto answering a share of requests as AWS does
when it fails or throttles.

moto itself never fails, so ``AwsFaultProxy`` stands between a client (the DAGs' ``aws`` connection,
whose ``endpoint_url`` points at the proxy) and moto, and answers a seeded share of the requests it
matches with the error AWS sends, in the service's own wire format (both EC2 and Auto Scaling speak
the query protocol, with XML errors):

- ``throttle``: EC2 ``503 RequestLimitExceeded``; Auto Scaling ``400 Throttling`` ("Rate exceeded");
- ``error``: EC2 ``500 InternalError``; Auto Scaling ``500 InternalFailure``.

A rule ``when="before"`` answers instead of moto (the request never took effect); ``when="after"``
forwards the request, then loses moto's answer and sends the error (the request took effect and the
client cannot know it: what AWS's "An internal error has occurred" may mean).

Everything that reaches the proxy is logged (service, action, the botocore attempt from the
``amz-sdk-request`` header, code, injected or not, the instance ids named), so a test or benchmark
can count retries and how many termination requests took effect per instance. The sandbox's own
traffic (its cloud bridge) goes straight to moto and is never faulted.
"""
from __future__ import annotations

import http.server
import random
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

ERRORS: dict[tuple[str, str], tuple[int, str, str]] = {
    # (service, kind) -> (HTTP status, error code, message), as AWS answers
    ("ec2", "throttle"): (503, "RequestLimitExceeded", "Request limit exceeded."),
    ("ec2", "error"): (500, "InternalError", "An internal error has occurred"),
    ("autoscaling", "throttle"): (400, "Throttling", "Rate exceeded"),
    ("autoscaling", "error"): (500, "InternalFailure", "An internal error has occurred"),
}
TERMINATING_ACTIONS = frozenset({"TerminateInstances", "TerminateInstanceInAutoScalingGroup"})
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_ATTEMPT = re.compile(r"attempt=(\d+)")


@dataclass
class AwsFaultRule:
    kind: str  # "throttle" or "error"
    rate: float = 1.0
    service: str = "*"  # "ec2", "autoscaling"
    action: str = "*"  # e.g. "TerminateInstanceInAutoScalingGroup"
    when: str = "before"  # "before" (never reaches moto) or "after" (took effect, answer lost)
    remaining: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("throttle", "error"):
            raise ValueError(f"kind must be throttle or error, not {self.kind!r}")
        if self.when not in ("before", "after"):
            raise ValueError(f"when must be before or after, not {self.when!r}")

    def applies(self, service: str, action: str) -> bool:
        return self.service in ("*", service) and self.action in ("*", action)


@dataclass
class AwsRequestRecord:
    service: str
    action: str
    attempt: int  # botocore's attempt number (1 = first try); 0 when the client sent none
    code: int
    injected: str = ""  # "" or "<kind>/<when>"
    instance_ids: tuple[str, ...] = ()


@dataclass
class AwsFaults:
    seed: int = 7
    rules: list[AwsFaultRule] = field(default_factory=list)
    records: list[AwsRequestRecord] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def configure(self, rules: list[dict[str, Any]], seed: int | None = None) -> None:
        with self._lock:
            self.rules = [AwsFaultRule(**rule) for rule in rules]
            if seed is not None:
                self._rng.seed(seed)

    def clear(self) -> None:
        with self._lock:
            self.rules = []

    def pick(self, service: str, action: str) -> AwsFaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.remaining == 0 or not rule.applies(service, action):
                    continue
                if self._rng.random() < rule.rate:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def add(self, record: AwsRequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def log(self) -> list[AwsRequestRecord]:
        with self._lock:
            return list(self.records)

    def retries(self) -> int:
        """Requests that were a client's retry of an earlier attempt (botocore's attempt > 1)."""
        return sum(1 for r in self.log() if r.attempt > 1)

    def terminations_that_took_effect(self) -> dict[str, int]:
        """instance id -> termination requests moto carried out for it (answered or not), a
        client's retries of one call included."""
        out: dict[str, int] = {}
        for r in self.log():
            if r.action in TERMINATING_ACTIONS and (200 <= r.code < 300 or r.injected.endswith("/after")):
                for iid in r.instance_ids:
                    out[iid] = out.get(iid, 0) + 1
        return out

    def termination_calls(self) -> dict[str, int]:
        """instance id -> termination calls a client made for it (its SDK's retries of a call not
        counted again): more than one means the caller itself asked twice."""
        out: dict[str, int] = {}
        for r in self.log():
            if r.action in TERMINATING_ACTIONS and r.attempt <= 1:
                for iid in r.instance_ids:
                    out[iid] = out.get(iid, 0) + 1
        return out


def error_body(service: str, code: str, message: str) -> bytes:
    request_id = str(uuid.uuid4())
    if service == "ec2":
        xml = f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    else:
        kind = "Sender" if code == "Throttling" else "Receiver"
        xml = (
            f'<ErrorResponse xmlns="http://{service}.amazonaws.com/doc/2011-01-01/"><Error><Type>{kind}</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + xml).encode()


def _instance_ids(params: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(v for k, values in params.items() if k == "InstanceId" or re.fullmatch(r"InstanceId\.\d+", k) for v in values)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_ProxyServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._proxy("GET")

    def do_POST(self) -> None:
        self._proxy("POST")

    def _proxy(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        scope = _SCOPE.search(self.headers.get("Authorization", ""))
        service = scope.group(1) if scope else ""
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if method == "POST" else urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        action = (params.get("Action") or [""])[0]
        attempt_match = _ATTEMPT.search(self.headers.get("amz-sdk-request", ""))
        attempt = int(attempt_match.group(1)) if attempt_match else 0
        faults = self.server.faults
        rule = faults.pick(service, action) if service in ("ec2", "autoscaling") and action else None
        ids = _instance_ids(params)
        if rule is not None and rule.when == "before":
            self._send_error(service, rule, action, attempt, ids)
            return
        status, headers, data = self._forward(method, body)
        if rule is not None:  # "after": moto did it; the answer is lost
            self._send_error(service, rule, action, attempt, ids)
            return
        faults.add(AwsRequestRecord(service, action, attempt, status, "", ids))
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, method: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(self.server.target + self.path, data=body if method == "POST" else None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, list(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, list(err.headers.items()), err.read()

    def _send_error(self, service: str, rule: AwsFaultRule, action: str, attempt: int, ids: tuple[str, ...]) -> None:
        status, code, message = ERRORS[(service, rule.kind)]
        data = error_body(service, code, message)
        self.server.faults.add(AwsRequestRecord(service, action, attempt, status, f"{rule.kind}/{rule.when}", ids))
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: str, faults: AwsFaults) -> None:
        super().__init__(address, _Handler)
        self.target = target.rstrip("/")
        self.faults = faults


class AwsFaultProxy:
    """An HTTP endpoint on 127.0.0.1 forwarding to moto (``target``) with ``faults`` applied."""

    def __init__(self, target: str, faults: AwsFaults | None = None) -> None:
        self.faults = faults or AwsFaults()
        self._server = _ProxyServer(("127.0.0.1", 0), target, self.faults)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "AwsFaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "AwsFaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
