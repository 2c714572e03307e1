"""Running this repo's DAGs against sandbox clusters, through real Airflow connections (no mocked hooks)."""
from __future__ import annotations

import json
import logging
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.__main__ import airflow_connections
from sandbox.config import SandboxConfig
from sandbox.scenario import World

REPO = Path(__file__).resolve().parents[2]


def fast_world_config() -> SandboxConfig:
    return SandboxConfig(
        pod_start_seconds=0.2,
        pod_termination_seconds=0.1,
        job_run_seconds=0.5,
        node_boot_seconds=1.0,
        node_notready_seconds=0.2,
        node_delete_seconds=0.5,
        asg_poll_seconds=0.2,
        cronjob_poll_seconds=0.5,
    )


# Where the suites written before the registry's ``lock_namespace`` look for the cluster's Lease.
TEST_LOCK_NAMESPACE = "default"


def registry_for(world: World, lock_namespace: str | None = TEST_LOCK_NAMESPACE, **operation_settings: dict[str, Any]) -> dict[str, Any]:
    """A registry naming the world's clusters, windows always open, sensors poking every second.

    ``lock_namespace`` None leaves the registry's default (``kube-maintenance``)."""
    clusters = []
    for name, member in world.clusters.items():
        ops = {
            "node_replacement": {"max_batches": 4, "poke_interval_seconds": 1, "retries": 1, "retry_delay_seconds": 1,
                                 "defaults": {"validation_interval_seconds": 1, "drain_timeout_seconds": 60, "replacement_timeout_seconds": 60}},
            "cronjob_refresh": {"poke_interval_seconds": 1, "retries": 1, "retry_delay_seconds": 1},
            "rollout_restart": {"poke_interval_seconds": 1, "retries": 1, "retry_delay_seconds": 1},
        }
        for op, settings in operation_settings.items():
            ops[op] = {**ops.get(op, {}), **settings}
        clusters.append(
            {
                "name": name,
                "kubernetes_conn_id": f"k8s_{name}",
                "aws_conn_id": f"aws_{name}",
                "region": member.region,
                "timezone": "UTC",
                "maintenance_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440},
                "protected_namespaces": [],
                "operations": ops,
                **({"lock_namespace": lock_namespace} if lock_namespace else {}),
            }
        )
    return {"version": 1, "clusters": clusters}


class AuditCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class RunResult:
    state: str
    task_states: dict[str, str]
    audit: list[dict[str, Any]]
    logs: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.logs)

    def errors(self) -> str:
        """The log lines that explain failures (exceptions and their messages)."""
        keep = [line for line in self.logs if "Error" in line or "Exception" in line or "failed" in line.lower()]
        return "\n".join(keep[-40:])

    def failed_tasks(self) -> list[str]:
        return sorted(t for t, s in self.task_states.items() if s == "failed")


class DagRunner:
    """Runs a DAG of this repo with ``dag.test()`` (tasks in-process, sensors rescheduled for real)."""

    def __init__(self, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str] | None = None) -> None:
        self.capfd = capfd
        self.runs = 0
        self.world = world
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        for var, conn in airflow_connections(world).items():
            monkeypatch.setenv(var, json.dumps(conn))
        self.set_registry(registry_for(world))

    def set_registry(self, registry: dict[str, Any]) -> None:
        path = self.tmp_path / "clusters.json"
        path.write_text(json.dumps(registry))
        self.monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(path))

    def run(self, dag_file: str, dag_id: str, conf: dict[str, Any], **test_options: Any) -> RunResult:
        """``test_options`` go to ``dag.test`` (e.g. the same ``logical_date`` and ``run_after`` twice:
        the second call clears and re-runs the same run, as "Clear" in the UI does)."""
        from kube_maintenance.core.audit import parse_audit_lines

        dags = runpy.run_path(str(REPO / "dags" / dag_file))
        dag = dags[dag_id]
        capture = AuditCapture()
        root = logging.getLogger()
        root.addHandler(capture)
        if self.capfd is not None:
            self.capfd.readouterr()
        try:
            dag_run = dag.test(run_conf=conf, **test_options)
        except Exception as exc:  # noqa: BLE001 - e.g. the trigger form's validation: nothing ran
            return RunResult("rejected", {}, [], [f"{type(exc).__name__}: {exc}"])
        finally:
            root.removeHandler(capture)
            # Task logs (failure reasons included) go to the test's stdout/stderr through structlog.
            if self.capfd is not None:
                out, err = self.capfd.readouterr()
                capture.messages += out.splitlines() + err.splitlines()
        self.runs += 1
        (self.tmp_path / f"{dag_id}-run{self.runs}.log").write_text("\n".join(capture.messages))  # for post-mortems
        states = {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}
        return RunResult(str(getattr(dag_run.state, "value", dag_run.state)), states, parse_audit_lines("\n".join(capture.messages)), capture.messages)


# ------------------------------------------------------------------------------ ways into a cluster
SERVICE_ACCOUNT = "system:serviceaccount:airflow:airflow-worker"


def kubeconfig_with_decoy(world: World, name: str) -> dict[str, Any]:
    """The cluster's kubeconfig with a second context, current but unusable (nothing listens there),
    so that only a connection's ``cluster_context`` reaches the cluster."""
    kubeconfig = world.clusters[name].cluster.kubeconfig()
    kubeconfig["clusters"].append({"name": "decoy", "cluster": {"server": "https://127.0.0.1:9"}})
    kubeconfig["contexts"].append({"name": "decoy", "context": {"cluster": "decoy", "user": kubeconfig["users"][0]["name"]}})
    kubeconfig["current-context"] = "decoy"
    return kubeconfig


def kubernetes_connections(world: World, name: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every form of ``kubernetes`` connection to one cluster (env var -> connection): ``kube_config``
    inline and ``kube_config_path`` (both naming their ``cluster_context``), and ``in_cluster``."""
    path = tmp_path / f"{name}-with-decoy.kubeconfig"
    kubeconfig = kubeconfig_with_decoy(world, name)
    path.write_text(json.dumps(kubeconfig))
    suffix = name.upper()
    return {
        f"AIRFLOW_CONN_K8S_{suffix}_INLINE": {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig), "cluster_context": name}},
        f"AIRFLOW_CONN_K8S_{suffix}_PATH": {"conn_type": "kubernetes", "extra": {"kube_config_path": str(path), "cluster_context": name}},
        f"AIRFLOW_CONN_K8S_{suffix}_IN_CLUSTER": {"conn_type": "kubernetes", "extra": {"in_cluster": True}},
    }


def fake_service_account(world: World, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str = "sa-token-airflow-worker") -> Path:
    """What kubelet gives a pod of the cluster: the service env vars and the mounted token and CA.

    The cluster must serve TLS (in-cluster clients always dial https). Its authenticator is told the
    token, as the API server knows its service accounts'."""
    from kubernetes.config import incluster_config

    from sandbox.auth import StaticTokenAuthenticator

    cluster = world.clusters[name].cluster
    assert cluster.tls is not None, "an in-cluster client dials https: start the world with tls=True"
    mount = tmp_path / "serviceaccount"
    mount.mkdir(parents=True, exist_ok=True)
    (mount / "token").write_text(token)
    cluster.tls.write_ca(mount / "ca.crt")
    host, port = cluster.server.httpd.server_address[:2]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mount / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mount / "ca.crt"))
    kubeconfig_token = cluster.kubeconfig()["users"][0]["user"]["token"]
    cluster.authenticator = StaticTokenAuthenticator({token: SERVICE_ACCOUNT, kubeconfig_token: "sandbox-admin"})
    return mount


def reach_cluster(registry: dict[str, Any], name: str, **access: Any) -> dict[str, Any]:
    """The registry with cluster ``name`` reached another way: ``kubernetes_conn_id=...``, or
    ``eks_cluster_name=...`` (through the entry's aws connection; its kubernetes connection is dropped)."""
    for entry in registry["clusters"]:
        if entry["name"] == name:
            if "eks_cluster_name" in access:
                entry.pop("kubernetes_conn_id", None)
            entry.update(access)
            return registry
    raise KeyError(name)
