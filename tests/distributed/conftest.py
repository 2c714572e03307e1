"""The distributed end-to-end test's stack, started once for the module and stopped after it:

- ``world``: moto and the "staging" sandbox cluster, seeded with the demo workloads;
- ``deployment``: PostgreSQL and Redis (Debian's, on free loopback ports, in temporary directories),
  then ``airflow db migrate`` and api-server, scheduler, dag-processor, triggerer and one
  ``airflow celery worker``, each its own process group (CeleryExecutor), with this repo's DAGs, a
  small registry and the sandbox's connections (``tests/airflow_stack``, shared with the browser tests).

The registry names the staging cluster twice: as ``staging`` and as ``staging_approval``, the same
cluster through the same connections but marked ``requires_approval`` (test_approval.py); and a
third time as ``staging_overrun``, whose maintenance window lasts one minute (test_alerts.py). Its
failure alerts (every cluster's) go to a local SMTP server and HTTP receiver started first
(``alert_receivers``), reached through the connections ``smtp_alerts`` and ``http_alerts``.
The fixtures are package-wide: every module of this directory runs on the one stack, which stops
after the last of them (before the browser tests start theirs).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
for _extra in (REPO / "tests", REPO / "tests" / "integration"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from airflow_stack.deployment import Deployment, start_deployment  # noqa: E402
from airflow_stack.ordering import order_stack_tests_last  # noqa: E402
from airflow_stack.sandbox_stack import DAG_IDS, USERNAME, Staging, browser_registry  # noqa: E402
from alert_receivers import Receivers, with_alerts  # noqa: E402
from harness import fast_world_config  # noqa: E402

from sandbox.scenario import World, start_world  # noqa: E402


APPROVAL_CLUSTER = "staging_approval"
APPROVAL_DAG_IDS = tuple(f"{op}__{APPROVAL_CLUSTER}" for op in ("node_replacement", "cronjob_refresh", "rollout_restart"))
OVERRUN_CLUSTER = "staging_overrun"
OVERRUN_DAG_IDS = tuple(f"{op}__{OVERRUN_CLUSTER}" for op in ("node_replacement", "rollout_restart"))


def distributed_registry(world: World) -> dict[str, Any]:
    """The browser tests' registry, plus the staging cluster again under another name, requiring approval."""
    registry = browser_registry(world)
    (staging,) = registry["clusters"]
    registry["clusters"].append({**copy.deepcopy(staging), "name": APPROVAL_CLUSTER, "requires_approval": True})
    # A window of one minute a day: a run lasting longer outlasts it (the deadline alert's interval).
    one_minute = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1}
    registry["clusters"].append({**copy.deepcopy(staging), "name": OVERRUN_CLUSTER, "maintenance_window": one_minute})
    return with_alerts(registry)


@pytest.fixture(scope="package")
def overrun_cluster() -> str:
    return OVERRUN_CLUSTER


@pytest.fixture(scope="package")
def alert_receivers() -> Iterator[Receivers]:
    receivers = Receivers.start()
    try:
        yield receivers
    finally:
        receivers.stop()


@pytest.fixture(scope="package")
def approval_cluster() -> str:
    return APPROVAL_CLUSTER


@pytest.fixture(scope="package")
def distributed_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="package")
def world(distributed_tmp: Path) -> Iterator[World]:
    w = start_world(distributed_tmp / "sandbox", ("staging",), fast_world_config())
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="package")
def staging(world: World) -> Staging:
    return Staging(world)


@pytest.fixture(scope="package")
def deployment(distributed_tmp: Path, world: World, alert_receivers: Receivers) -> Iterator[Deployment]:
    stack = start_deployment(
        distributed_tmp / "stack", world, distributed_registry(world), (*DAG_IDS, *APPROVAL_DAG_IDS, *OVERRUN_DAG_IDS), executor="CeleryExecutor", username=USERNAME,
        extra_env=alert_receivers.connections(),
    )
    try:
        yield stack
    finally:
        stack.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The distributed test runs after every other test and before the browser tests (which start
    their own stack): see ``airflow_stack.ordering``."""
    order_stack_tests_last(items)
