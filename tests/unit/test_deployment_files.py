"""The files a team deploys with (pyproject.toml, Dockerfile, docker-compose.yaml) say what the
distributed end-to-end test runs: no machine here has a Docker engine, so the compose file is
checked by reading it against the test's own Airflow (tests/airflow_stack), and the package by
building its wheel."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.airflow_stack.airflow_processes import AirflowProcesses

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "plugins" / "kube_maintenance"
# What the distributed test runs, with the values that make it distributed (loopback addresses
# and free ports are the test's, service names are compose's).
STACK = AirflowProcesses(Path("/nonexistent"), executor="CeleryExecutor", broker_url="redis://127.0.0.1:1/0", database_url="postgresql+psycopg2://airflow:airflow@127.0.0.1:1/airflow")
# Settings that give the deployment its shape, as opposed to a test's ports, passwords and pace.
SHAPE_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
)


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def service_commands() -> dict[str, list[str]]:
    out = {}
    for name, service in compose()["services"].items():
        command = service.get("command")
        out[name] = command.split() if isinstance(command, str) else list(command or [])
    return out


def test_compose_runs_each_component_the_distributed_test_runs_and_its_backing_services() -> None:
    commands = service_commands()
    for component, args in STACK.commands().items():
        words = args[:2] if args[0] == "celery" else args[:1]
        assert any(cmd[: len(words)] == words for cmd in commands.values()), f"no compose service runs `airflow {' '.join(words)}` ({component})"
    assert {"postgres", "redis", "airflow-init"} <= set(commands)
    assert any("db migrate" in " ".join(cmd) for cmd in commands.values()), "the database is migrated before Airflow starts"


def test_compose_settings_match_the_distributed_test() -> None:
    stack_env = STACK.env()
    common = compose()["x-airflow-common"]["environment"]
    for key in SHAPE_SETTINGS:
        assert key in stack_env, f"the distributed test no longer sets {key}: update SHAPE_SETTINGS"
        assert key in common, f"docker-compose.yaml does not set {key}"
    same = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER")
    assert {k: common[k] for k in same} == {k: stack_env[k] for k in same}
    for key, scheme in (("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql"), ("AIRFLOW__CELERY__BROKER_URL", "redis://"), ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql")):
        assert common[key].startswith(scheme) and stack_env[key].startswith(scheme), key
    assert common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/") and stack_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    for key in ("AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"):
        assert str(common[key]).lower() == str(stack_env[key]).lower(), key
    assert "KUBE_MAINTENANCE_REGISTRY" in common, "the registry's location comes from the environment"


def _imported_modules() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def _third_party_imports() -> set[str]:
    names = {n.split(".")[0] for n in _imported_modules()}
    return {n for n in names if n not in sys.stdlib_module_names and n != "kube_maintenance"}


def test_the_package_declares_lower_bounds_only_and_a_dependency_for_every_import() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"]
    assert requirements and all(">=" in r and "==" not in r for r in requirements), "lower bounds only: the exact set is constraints.txt"
    names = {r.split(">=")[0].strip().lower() for r in requirements}
    # Each import is provided by a declared distribution (directly, or as the provider's own dependency).
    provided_by = {"airflow": "apache-airflow", "kubernetes": "apache-airflow-providers-cncf-kubernetes", "boto3": "apache-airflow-providers-amazon",
                   "botocore": "apache-airflow-providers-amazon", "urllib3": "apache-airflow-providers-cncf-kubernetes", "croniter": "croniter", "yaml": "pyyaml", "pendulum": "pendulum", "asgiref": "apache-airflow"}
    for module in _third_party_imports():
        assert module in provided_by, f"kube_maintenance imports {module}: declare the distribution that provides it in pyproject.toml"
        assert provided_by[module] in names, f"{module} needs {provided_by[module]} in pyproject.toml's dependencies"
    # A provider's module needs that provider (airflow.providers.cncf.kubernetes: apache-airflow-providers-cncf-kubernetes).
    providers = {f"airflow.providers.{n.removeprefix('apache-airflow-providers-').replace('-', '.')}." for n in names if n.startswith("apache-airflow-providers-")}
    for module in sorted(m for m in _imported_modules() if m.startswith("airflow.providers.")):
        assert any(module.startswith(p) for p in providers), f"kube_maintenance imports {module}: declare its provider in pyproject.toml's dependencies"


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_package_and_nothing_else(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = tmp_path.glob("kube_maintenance-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    assert modules == {f"kube_maintenance/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}, "every module of the package, and only those (no sandbox, tests or benchmarks)"
