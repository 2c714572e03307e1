"""Browser tests: a sandbox cluster, a real Airflow (separate processes) and Chromium, once per session.

Everything is started by the fixtures and torn down after the session:

- ``sandbox_world``: moto and the "staging" sandbox cluster, seeded with the demo workloads;
- ``airflow``: PostgreSQL and Redis (Debian's, on loopback ports, in temporary directories), then
  ``airflow db migrate`` and api-server, scheduler, dag-processor, triggerer and one Celery worker
  from the venv's CLI (CeleryExecutor), with this repo's DAGs, a small registry and the sandbox's
  connections; ready once the three staging DAGs are parsed, and unpaused (``tests/airflow_stack``,
  which the distributed test shares);
- ``browser``: Debian's Chromium through Playwright (sync API), headless;
- ``login_state``: one login through the real login page (its cookies);
- ``ui``: per test, a fresh browser context and page with those cookies.

When a test fails, screenshots and the HTML of the trigger form (taken before every submit) and of
the final page are kept under ``<pytest basetemp>/browser-artifacts/<test>/``; the location is printed
in the failure report with the Airflow process logs' directory.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _extra in (HERE, REPO / "tests", REPO / "tests" / "integration"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from airflow_processes import AirflowApi  # noqa: E402
from airflow_stack.deployment import Deployment as Airflow  # noqa: E402
from airflow_stack.deployment import start_deployment  # noqa: E402
from airflow_stack.ordering import order_stack_tests_last  # noqa: E402
from browser_stack import DAG_IDS, USERNAME, Staging, browser_registry  # noqa: E402
from harness import fast_world_config  # noqa: E402

from sandbox.scenario import World, start_world  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # Debian's; `make system-packages` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
BROWSER_EXECUTOR = "CeleryExecutor"


# ------------------------------------------------------------------------------------------ sandbox
@pytest.fixture(scope="session")
def browser_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="session")
def sandbox_world(browser_tmp: Path) -> Iterator[World]:
    world = start_world(browser_tmp / "sandbox", ("staging",), fast_world_config())
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture(scope="session")
def staging(sandbox_world: World) -> Staging:
    return Staging(sandbox_world)


@pytest.fixture
def clean_staging(staging: Staging) -> Iterator[Staging]:
    """The staging cluster with no faults injected, before and after the test."""
    staging.cluster.faults.clear()
    yield staging
    staging.cluster.faults.clear()


# ------------------------------------------------------------------------------------------ airflow
@pytest.fixture(scope="session")
def airflow(browser_tmp: Path, sandbox_world: World) -> Iterator[Airflow]:
    deployment = start_deployment(browser_tmp / "stack", sandbox_world, browser_registry(sandbox_world), DAG_IDS, executor=BROWSER_EXECUTOR, username=USERNAME)
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def api(airflow: Airflow) -> AirflowApi:
    return airflow.api


# ------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM} (set CHROMIUM_PATH, or `make system-packages`); Playwright's own browsers are not used")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "browser-artifacts"


@pytest.fixture(scope="session")
def login_state(browser: Any, airflow: Airflow, browser_tmp: Path, artifacts_root: Path) -> Path:
    """Log in once, through the real login page; every test's browser context starts from its cookies."""
    from trigger_ui import AirflowUi

    context = browser.new_context(viewport=VIEWPORT)
    try:
        driver = AirflowUi(context.new_page(), airflow.base_url, airflow.api, artifacts_root / "login")
        try:
            driver.login(airflow.username, airflow.password)
        except Exception:
            driver.snapshot("login-failed")
            print(f"\nlogin failed; page kept in {driver.artifacts}", file=sys.stderr)
            raise
        state = browser_tmp / "login-state.json"
        context.storage_state(path=str(state))
        return state
    finally:
        context.close()


@pytest.fixture
def ui(request: pytest.FixtureRequest, browser: Any, airflow: Airflow, login_state: Path, artifacts_root: Path) -> Iterator[Any]:
    """A fresh browser context and page, logged in as the admin."""
    from trigger_ui import AirflowUi

    artifacts = artifacts_root / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(artifacts, ignore_errors=True)
    context = browser.new_context(viewport=VIEWPORT, storage_state=str(login_state))
    driver = AirflowUi(context.new_page(), airflow.base_url, airflow.api, artifacts)
    try:
        yield driver
    finally:
        failed = any(getattr(request.node, f"rep_{when}", None) is not None and getattr(request.node, f"rep_{when}").failed for when in ("setup", "call"))
        if failed:
            driver.snapshot("at-failure")
            print(f"\nbrowser artifacts (trigger form before each submit, page at failure): {artifacts}")
            print(f"Airflow process logs: {airflow.processes.log_dir}")
        else:
            shutil.rmtree(artifacts, ignore_errors=True)
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures know at teardown whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last (after the distributed test): their session-wide stack (a sandbox,
    PostgreSQL, Redis and five Airflow processes) then starts after every other test and never runs
    beside them on these two cores."""
    order_stack_tests_last(items)
