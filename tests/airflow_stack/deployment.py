"""One whole test deployment, started once per session or module: PostgreSQL, (Redis,) Airflow's
processes with this repo's DAGs, a registry and the sandbox's connections; ready once the DAGs are
parsed, and unpaused. ``stop()`` ends everything it started, in reverse order."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from sandbox.__main__ import airflow_connections
from sandbox.scenario import World

from .airflow_processes import AirflowApi, AirflowProcesses, AirflowStartupError
from .services import PostgresServer, RedisServer


@dataclass
class Deployment:
    processes: AirflowProcesses
    api: AirflowApi
    postgres: PostgresServer
    redis: RedisServer | None = None
    services: list[Any] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.processes.base_url

    @property
    def username(self) -> str:
        return self.processes.username

    @property
    def password(self) -> str:
        return self.processes.password

    def stop(self) -> None:
        try:
            self.processes.stop()
        finally:
            for service in reversed(self.services):
                service.stop()


def start_deployment(
    root: Path, world: World, registry: dict[str, Any], dag_ids: Iterable[str], *, executor: str = "CeleryExecutor", username: str = "admin", timeout: float = 240,
    extra_env: Mapping[str, str] | None = None,
) -> Deployment:
    """Start PostgreSQL (and Redis for CeleryExecutor), then Airflow on them; wait until ``dag_ids`` are
    parsed and unpause them. On failure, print the logs, stop what started and raise. ``extra_env``:
    more environment for every Airflow process (e.g. the connections of the alerts' receivers)."""
    root.mkdir(parents=True, exist_ok=True)
    registry_path = root / "clusters.json"
    registry_path.write_text(json.dumps(registry, indent=2))
    env = {"KUBE_MAINTENANCE_REGISTRY": str(registry_path)}
    env.update({var: json.dumps(conn) for var, conn in airflow_connections(world).items()})
    env.update(extra_env or {})
    services: list[Any] = []
    postgres = PostgresServer()
    redis = RedisServer() if executor == "CeleryExecutor" else None
    processes = AirflowProcesses(
        root / "airflow", env, username=username, database_url=postgres.url, executor=executor, broker_url=redis.url if redis else None
    )
    try:
        for service in (postgres, redis):
            if service is not None:
                services.append(service)
                service.start()
        processes.start(timeout=timeout)
        processes.wait_healthy(timeout=timeout)
        api = AirflowApi(processes.base_url, processes.username, processes.password)
        wanted = set(dag_ids)

        def dags_parsed() -> bool:
            errors = api.import_errors()
            if errors:
                raise AirflowStartupError("DAG import errors:\n" + "\n".join(f"{e.get('filename')}: {e.get('stack_trace')}" for e in errors))
            return wanted <= api.dag_ids()

        processes.wait_until(f"the DAGs {', '.join(sorted(wanted))} to be parsed", dags_parsed, timeout=timeout)
        for dag_id in sorted(wanted):
            api.unpause(dag_id)
    except BaseException:
        print(f"\nAirflow did not start; process logs in {processes.log_dir}\n{processes.logs_tail()}", file=sys.stderr)
        processes.stop()
        for service in reversed(services):
            service.stop()
        raise
    print(f"\nAirflow ({executor}, PostgreSQL on port {postgres.port}) at {processes.base_url}, AIRFLOW_HOME {processes.home}, process logs in {processes.log_dir}")
    return Deployment(processes, api, postgres, redis, services)
