"""PostgreSQL and Redis for a test's Airflow, from Debian's packages, on free loopback ports.

Each server lives in its own temporary directory (under the system temp dir, not pytest's: PostgreSQL
refuses to run as root, so as root it runs as the ``postgres`` user Debian's package creates, and that
user must reach its directory). Nothing is shared with the packages' own services, which are not used.
``stop()`` ends the server and removes its directory.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .airflow_processes import free_port, tail

PG_USER = "airflow"
PG_DATABASE = "airflow"


class ServiceError(RuntimeError):
    """A database or broker did not start; the message carries its log."""


def postgres_bin_dir() -> Path:
    """The newest Debian PostgreSQL's binaries (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise ServiceError("no PostgreSQL under /usr/lib/postgresql/*/bin (Debian's postgresql package; `make system-packages` installs it)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: trust authentication on 127.0.0.1 only, one database for Airflow."""

    port: int = field(default_factory=free_port)
    root: Path | None = None
    bin_dir: Path = field(default_factory=postgres_bin_dir)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _as_owner(self, args: list[str]) -> list[str]:
        """PostgreSQL will not run as root: as root, run its server commands as Debian's ``postgres`` user."""
        if os.geteuid() != 0:
            return args
        return ["runuser", "-u", "postgres", "--", *args]

    def _run(self, args: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(self._as_owner(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ServiceError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{tail(self.log_path)}")

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kube-maintenance-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        # A test database: nothing needs to survive a crash, so no fsync; enough connections for
        # five Airflow processes' pools and the Celery result backend.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"])
        self._run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, PG_DATABASE])

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


@dataclass
class RedisServer:
    """A throwaway ``redis-server`` (no persistence) on 127.0.0.1, the Celery broker."""

    port: int = field(default_factory=free_port)
    root: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "redis.log"

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            raise ServiceError("no redis-server (Debian's redis-server package; `make system-packages` installs it)")
        self.root = Path(tempfile.mkdtemp(prefix="kube-maintenance-redis-"))
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._pong():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not answer PING on port {self.port}:\n{tail(self.log_path)}")
            time.sleep(0.1)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
