"""The distributed end-to-end test's stack, started once for the module and stopped after it:

- ``world``: moto and the "staging" sandbox cluster, seeded with the demo workloads;
- ``deployment``: PostgreSQL and Redis (Debian's, on free loopback ports, in temporary directories),
  then ``airflow db migrate`` and api-server, scheduler, dag-processor, triggerer and one
  ``airflow celery worker``, each its own process group (CeleryExecutor), with this repo's DAGs, a
  small registry and the sandbox's connections (``tests/airflow_stack``, shared with the browser tests).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
for _extra in (REPO / "tests", REPO / "tests" / "integration"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from airflow_stack.deployment import Deployment, start_deployment  # noqa: E402
from airflow_stack.ordering import order_stack_tests_last  # noqa: E402
from airflow_stack.sandbox_stack import DAG_IDS, USERNAME, Staging, browser_registry  # noqa: E402
from harness import fast_world_config  # noqa: E402

from sandbox.scenario import World, start_world  # noqa: E402


@pytest.fixture(scope="module")
def distributed_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def world(distributed_tmp: Path) -> Iterator[World]:
    w = start_world(distributed_tmp / "sandbox", ("staging",), fast_world_config())
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def staging(world: World) -> Staging:
    return Staging(world)


@pytest.fixture(scope="module")
def deployment(distributed_tmp: Path, world: World) -> Iterator[Deployment]:
    stack = start_deployment(distributed_tmp / "stack", world, browser_registry(world), DAG_IDS, executor="CeleryExecutor", username=USERNAME)
    try:
        yield stack
    finally:
        stack.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The distributed test runs after every other test and before the browser tests (which start
    their own stack): see ``airflow_stack.ordering``."""
    order_stack_tests_last(items)
