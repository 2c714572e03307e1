"""Fixtures shared by every test: sandbox clusters served over real HTTP."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its settings when first imported: give the whole test session its own throwaway
# AIRFLOW_HOME and SQLite database before any test module imports it.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="kube-maintenance-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)

from sandbox.cluster import SandboxCluster
from sandbox.testing import fast_config


@pytest.fixture
def api_cluster(tmp_path: Path) -> Iterator[SandboxCluster]:
    """A sandbox cluster with fast delays behind its HTTP API server, and a kubeconfig for it."""
    cluster = SandboxCluster("api", fast_config())
    cluster.start()
    cluster.kubeconfig_path = cluster.write_kubeconfig(tmp_path / "api.kubeconfig")  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()


class Kubectl:
    """Runs the real kubectl binary against one sandbox cluster."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def kubectl(api_cluster: SandboxCluster) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return Kubectl(api_cluster.kubeconfig_path)  # type: ignore[attr-defined]
