"""A real Airflow for the browser and distributed tests: separate processes from the venv's ``airflow`` CLI, and a REST client.

``AirflowProcesses`` runs ``airflow db migrate`` and then ``api-server``, ``scheduler``,
``dag-processor`` and ``triggerer`` in their own process groups, with a fresh AIRFLOW_HOME (the
metadata database given as ``database_url``, PostgreSQL in the tests; SimpleAuthManager with one known
admin user), every port chosen free on loopback and each process's output in a log file. With
``executor="CeleryExecutor"`` (and ``broker_url``) it also runs one ``airflow celery worker``, and the
tasks run there, not in the scheduler. ``stop()`` kills the process groups and waits for them.

``AirflowApi`` is the small slice of the public REST API (``/api/v2``) the tests read and act with,
authenticated by a JWT from ``POST /auth/token``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import requests

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "airflow").exists() else REPO / ".venv" / "bin"
AIRFLOW = VENV_BIN / "airflow"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
AUDIT_MARKER = "KUBE_MAINTENANCE_AUDIT "


class AirflowStartupError(RuntimeError):
    """Airflow did not come up; the message carries the tail of every process log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class AirflowProcesses:
    """One Airflow deployment (api-server, scheduler, dag-processor, triggerer) under ``home``."""

    home: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    database_url: str | None = None  # None: SQLite in ``home`` (flaky with several processes; tests pass PostgreSQL)
    executor: str = "LocalExecutor"
    broker_url: str | None = None  # CeleryExecutor's broker (Redis)
    worker_concurrency: int = 4
    username: str = "admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "process-logs"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def env(self) -> dict[str, str]:
        """The environment every Airflow process gets (``airflow standalone``'s choices, made explicit)."""
        passwords = self.home / "simple_auth_manager_passwords.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        database_url = self.database_url or f"sqlite:///{self.home / 'airflow.db'}"
        pythonpath = [str(REPO / "plugins"), str(REPO)]
        if os.environ.get("PYTHONPATH"):
            pythonpath.append(os.environ["PYTHONPATH"])
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": "6",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        if self.executor == "CeleryExecutor":
            if not self.broker_url or not self.database_url:
                raise ValueError("CeleryExecutor needs broker_url (Redis) and database_url (the result backend's database)")
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,  # SQLAlchemy 2.1 takes postgresql:// as psycopg 3: keep +psycopg2
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                }
            )
        env.update(self.extra_env)
        return env

    def commands(self) -> dict[str, list[str]]:
        """Each component's ``airflow`` arguments, by name (the name of its log file too)."""
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }
        if self.executor == "CeleryExecutor":
            commands["celery-worker"] = ["celery", "worker", "--concurrency", str(self.worker_concurrency), "--without-mingle", "--without-gossip"]
        return commands

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json").write_text(json.dumps({self.username: self.password}) + "\n")
        env = self.env()
        self._env = env
        with open(self.log_path("db-migrate"), "wb") as out:
            try:
                proc = subprocess.run([str(AIRFLOW), "db", "migrate"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.home, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AirflowStartupError(f"airflow db migrate took over {timeout:.0f}s:\n{tail(self.log_path('db-migrate'))}") from None
        if proc.returncode != 0:
            raise AirflowStartupError(f"airflow db migrate failed ({proc.returncode}):\n{tail(self.log_path('db-migrate'))}")
        for name in self.commands():
            self.start_component(name)

    def start_component(self, name: str) -> None:
        """Start one component (again, after ``stop_component``); its output is appended to its log."""
        out = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it
        try:
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW), *self.commands()[name]], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env, cwd=self.home, start_new_session=True
            )
        finally:
            out.close()

    def stop_component(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one component's whole process group (SIGKILL: as a crash) and wait for it to go."""
        proc = self.processes.pop(name)
        _signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        _signal_group(proc.pid, signal.SIGKILL)

    def check_alive(self) -> None:
        """Raise (with the logs) if a component has exited."""
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise AirflowStartupError(f"Airflow component(s) exited: {dead}\n{self.logs_tail()}")

    def logs_tail(self, lines: int = 40) -> str:
        names = ["db-migrate", *self.processes]
        return "\n".join(f"----- {name} ({self.log_path(name)}) -----\n{tail(self.log_path(name), lines)}" for name in names)

    def wait_until(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail loudly (with logs) on a dead
        component or when ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.check_alive()
            try:
                value = predicate()
                if value:
                    return value
            except (requests.RequestException, ValueError, KeyError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise AirflowStartupError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})\n{self.logs_tail()}")
            time.sleep(interval)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        def healthy() -> bool:
            resp = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
            if resp.status_code != 200:
                return False
            body = resp.json()
            return all(body.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

        self.wait_until("the api-server's health check (metadatabase, scheduler, triggerer, dag_processor healthy)", healthy, timeout)
        if "celery-worker" in self.processes:
            # Celery prints "celery@<host> ready." once the worker consumes from the broker.
            self.wait_until("the Celery worker to be ready", lambda: " ready." in self.log_path("celery-worker").read_text(errors="replace"), timeout)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process group, then SIGKILL what is left of them; wait until they are gone."""
        groups = [proc.pid for proc in self.processes.values()]  # start_new_session: group id == pid
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        # Task runners, LocalExecutor workers and parsing children live in the same groups.
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while any(_group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.processes.clear()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- REST
class AirflowApi:
    """The REST calls the tests make, as the admin user (JWT bearer from ``POST /auth/token``)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.session = requests.Session()
        self.session.trust_env = False
        self._token: str | None = None
        self._token_at = 0.0

    def token(self) -> str:
        if self._token is None or time.monotonic() - self._token_at > 3000:
            resp = self.session.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30)
            if resp.status_code not in (200, 201):
                raise AssertionError(f"POST /auth/token: {resp.status_code} {resp.text}")
            self._token = resp.json()["access_token"]
            self._token_at = time.monotonic()
        return self._token

    def request(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        timeout = kwargs.pop("timeout", 30)
        for attempt in range(4):
            resp = self.session.request(method, f"{self.base_url}/api/v2{path}", headers=headers, timeout=timeout, **kwargs)
            # A 500 "Database error" (SQLite, when a stack runs on it, is sometimes locked for a
            # moment): try again, as a person clicks again.
            if not (resp.status_code == 500 and "Database error" in resp.text) or attempt == 3:
                break
            time.sleep(1 + attempt)
        if resp.status_code not in tuple(expect):
            raise AssertionError(f"{method} /api/v2{path}: {resp.status_code} {resp.text[:2000]}")
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    # ------------------------------------------------------------------------------------- dags
    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.get("/dags", limit=100)["dags"]}

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/importErrors", limit=100).get("import_errors", [])

    def unpause(self, dag_id: str) -> None:
        body = self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).json()
        assert body["is_paused"] is False, body

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Airflow's jobs of one type (``TriggererJob``, ``SchedulerJob``, ...): one per process that ran
        as it, with its id, hostname, state and heartbeat."""
        return self.get("/jobs", job_type=job_type, limit=100)["jobs"]

    # ------------------------------------------------------------------------------------- runs
    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, newest (by run_after) first."""
        return self.get(f"/dags/{dag_id}/dagRuns", order_by="-run_after", limit=100)["dag_runs"]

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        """Trigger a manual run with ``conf`` (``POST /dags/{dag_id}/dagRuns``, as the CLI and other tools do); its run id."""
        body = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)}).json()
        return str(body["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0, states: Iterable[str] = TERMINAL_RUN_STATES) -> dict[str, Any]:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in wanted:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {dag_id}/{run_id} still {run['state']!r} after {timeout:.0f}s (waiting for {sorted(wanted)}); tasks: {self.task_states(dag_id, run_id)}"
                )
            time.sleep(1)

    def mark_run(self, dag_id: str, run_id: str, state: str) -> dict[str, Any]:
        """What the UI's "Mark run as failed/success" confirm button sends: PATCH the run with its note and the state."""
        note = self.dag_run(dag_id, run_id).get("note")
        return self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"note": note, "state": state}).json()

    def mark_task(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """What the UI's "Mark as success/failed" on one task instance sends (no upstream/downstream)."""
        body = {"new_state": state, "note": None, "include_upstream": False, "include_downstream": False, "include_future": False, "include_past": False}
        return self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json=body).json()

    # ---------------------------------------------------------------------------- task instances
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones included (one per map index)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100, offset=offset)
            out += page["task_instances"]
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                return out

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {_ti_key(ti): ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """A task try's log as text, one line per log event (``event`` plus, for errors, the exception)."""
        resp = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        body = resp.json()
        content = body.get("content")
        if isinstance(content, str):  # older shape: one string
            return content
        lines = []
        for item in content or []:
            if isinstance(item, str):
                lines.append(item)
                continue
            line = str(item.get("event", ""))
            if item.get("error_detail"):
                line += "\n" + json.dumps(item["error_detail"], default=str)
            lines.append(line)
        return "\n".join(lines)

    def run_logs(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Every try's log of every task instance of the run, keyed ``task_id[map_index]#try``."""
        logs: dict[str, str] = {}
        for ti in self.task_instances(dag_id, run_id):
            for try_number in range(1, int(ti.get("try_number") or 0) + 1):
                logs[f"{_ti_key(ti)}#{try_number}"] = self.task_log(dag_id, run_id, ti["task_id"], try_number, ti.get("map_index", -1))
        return logs


def trigger_log_jobs(text: str) -> set[int]:
    """The triggerer jobs whose trigger logs a task log read through the REST API was merged from:
    Airflow names each ``<try>.log.trigger.<triggerer job id>.log`` among the log's sources."""
    return {int(job) for job in re.findall(r"\.log\.trigger\.(\d+)\.log", text)}


def parse_audit(text: str) -> list[dict[str, Any]]:
    """The ``KUBE_MAINTENANCE_AUDIT {json}`` records of a log text, in order."""
    records = []
    for line in text.splitlines():
        at = line.find(AUDIT_MARKER)
        if at >= 0:
            try:
                records.append(json.loads(line[at + len(AUDIT_MARKER) :]))
            except json.JSONDecodeError:
                continue
    return records


def _ti_key(ti: Mapping[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return ti["task_id"] if index is None or index < 0 else f"{ti['task_id']}[{index}]"
