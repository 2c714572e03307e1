"""``python -m sandbox up``: start moto and the sandbox clusters, write how to reach them, run until stopped.

Writes into ``--dir``:

- ``<cluster>.kubeconfig`` for each cluster (``KUBECONFIG=... kubectl get nodes``);
- an env file of Airflow connections (``AIRFLOW_CONN_K8S_<CLUSTER>`` and ``AIRFLOW_CONN_AWS_<CLUSTER>``),
  ``--env-file`` or ``<dir>/airflow.env``, written last and atomically: once it exists, all is up;
- ``sandbox.json``: URLs, regions and paths for other tools; removed again on a clean stop.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .scenario import ClusterPlan, World, start_world

FAKE_AWS_LOGIN = "testing"
FAKE_AWS_PASSWORD = "testing"


def k8s_conn_id(cluster: str) -> str:
    return f"k8s_{_conn_suffix(cluster).lower()}"


def aws_conn_id(cluster: str) -> str:
    return f"aws_{_conn_suffix(cluster).lower()}"


def _conn_suffix(cluster: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in cluster).upper()


def airflow_connections(world: World) -> dict[str, dict[str, Any]]:
    """Environment variable name -> Airflow connection (the JSON form AIRFLOW_CONN_* accepts)."""
    out: dict[str, dict[str, Any]] = {}
    for name, member in world.clusters.items():
        suffix = _conn_suffix(name)
        out[f"AIRFLOW_CONN_K8S_{suffix}"] = {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(world.kubeconfig(name).resolve()), "namespace": "default"},
        }
        out[f"AIRFLOW_CONN_AWS_{suffix}"] = {
            "conn_type": "aws",
            "login": FAKE_AWS_LOGIN,
            "password": FAKE_AWS_PASSWORD,
            "extra": {"region_name": member.region, "endpoint_url": world.moto_url},
        }
    return out


def env_file_text(world: World) -> str:
    lines = ["# Airflow connections to the sandbox clusters; load with: set -a; . <this file>; set +a"]
    for variable, connection in airflow_connections(world).items():
        lines.append(f"{variable}={shlex.quote(json.dumps(connection))}")
    return "\n".join(lines) + "\n"


def describe_world(world: World, env_file: Path) -> dict[str, Any]:
    """What ``sandbox.json`` holds."""
    return {
        "pid": os.getpid(),
        "moto_url": world.moto_url,
        "env_file": str(env_file.resolve()),
        "clusters": {
            name: {
                "url": member.url,
                "region": member.region,
                "kubeconfig": str(world.kubeconfig(name).resolve()),
                "auto_scaling_groups": member.network.groups,
                "vpc_id": member.network.vpc_id,
                "airflow_kubernetes_conn_id": k8s_conn_id(name),
                "airflow_aws_conn_id": aws_conn_id(name),
            }
            for name, member in world.clusters.items()
        },
    }


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def usage_text(world: World, env_file: Path) -> str:
    first = next(iter(world.clusters))
    lines = [f"moto (EC2, Auto Scaling): {world.moto_url}"]
    for name, member in world.clusters.items():
        lines.append(f"cluster {name} ({member.region}): {member.url}  kubeconfig {world.kubeconfig(name)}")
    lines += [
        "",
        "Try:",
        f"  export KUBECONFIG={world.kubeconfig(first)}",
        "  kubectl get nodes -L eks.amazonaws.com/nodegroup,topology.kubernetes.io/zone",
        f"  aws --endpoint-url {world.moto_url} --region {world.clusters[first].region} autoscaling describe-auto-scaling-groups",
        "Airflow connections:",
        f"  set -a; . {env_file}; set +a",
        "Stop with Ctrl-C (or SIGTERM).",
    ]
    return "\n".join(lines)


def up(directory: Path, cluster_names: list[str], env_file: Path | None, regions: dict[str, str]) -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    plans = [ClusterPlan.default(name, regions.get(name)) for name in cluster_names]
    world = start_world(directory, plans)
    env_path = env_file or directory / "airflow.env"
    state_path = directory / "sandbox.json"
    try:
        _write_atomically(state_path, json.dumps(describe_world(world, env_path), indent=2) + "\n")
        _write_atomically(env_path, env_file_text(world))
        print(usage_text(world, env_path), flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping the sandbox ...", flush=True)
    finally:
        world.stop()
        state_path.unlink(missing_ok=True)
    return 0


def _parse_regions(values: list[str]) -> dict[str, str]:
    regions = {}
    for value in values:
        name, sep, region = value.partition("=")
        if not sep or not name or not region:
            raise argparse.ArgumentTypeError(f"--region takes CLUSTER=REGION, not {value!r}")
        regions[name] = region
    return regions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Sandbox Kubernetes clusters on a local moto EC2.")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the clusters and run until interrupted")
    up_parser.add_argument("--dir", type=Path, default=Path(".sandbox"), help="where kubeconfigs and sandbox.json go (default .sandbox)")
    up_parser.add_argument("--clusters", default="staging,production", help="comma-separated cluster names (default staging,production)")
    up_parser.add_argument("--env-file", type=Path, default=None, help="Airflow connections env file (default <dir>/airflow.env)")
    up_parser.add_argument(
        "--region", action="append", default=[], metavar="CLUSTER=REGION", help="AWS region of a cluster (default: production us-east-1, staging and any other eu-west-1)"
    )
    up_parser.add_argument("-v", "--verbose", action="store_true", help="log what the sandbox does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    names = [n.strip() for n in args.clusters.split(",") if n.strip()]
    if not names:
        parser.error("--clusters names no cluster")
    try:
        regions = _parse_regions(args.region)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    return up(args.dir, names, args.env_file, regions)


if __name__ == "__main__":
    sys.exit(main())
