"""Our drain against `kubectl drain`, on the same sandbox node with N pods: API requests and wall time.

Prints figures, asserts nothing. Target (issue): no more than 2 x pods + 10 requests, and no slower.
    .venv/bin/python benchmarks/drain_requests.py [--pods 50] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from kube_maintenance.node_replacement.drain import DrainOptions  # noqa: E402
from kube_maintenance.core.k8s import NODES, STRATEGIC_MERGE_PATCH, KubeClient  # noqa: E402
from kube_maintenance.node_replacement.node_ops import drain_pass  # noqa: E402
from sandbox.cluster import SandboxCluster  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.resources import REPLICASETS  # noqa: E402
from sandbox.testing import add_ready_node  # noqa: E402


def load_node(cluster: SandboxCluster, node: str, pods: int, tag: str) -> None:
    """N running pods on ``node``, made by a ReplicaSet (as Deployment pods are) whose template
    pins them to the node: the drain evicts them, and their replacements wait Pending (the node
    is cordoned), as pods pinned to a drained node do."""
    store = cluster.store
    labels = {"app": f"web-{tag}"}
    store.create(
        REPLICASETS,
        {
            "metadata": {"name": f"web-{tag}"},
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "nginx:1.25"}]},
                },
            },
        },
        namespace="default",
    )
    cluster.wait_for(lambda: len([p for p in store.pods_on_node(node) if p.get("status", {}).get("phase") == "Running"]) == pods, timeout=60)


def requests_by(cluster: SandboxCluster, since: int, agent: str) -> int:
    return sum(1 for r in cluster.requests.since(since) if agent in r.user_agent)


def ours(cluster: SandboxCluster, kubeconfig: Path, node: str) -> tuple[float, int]:
    from kubernetes import config

    kube = KubeClient(config.new_client_from_config(str(kubeconfig)), "bench")
    seq = len(cluster.requests)
    started = time.perf_counter()
    kube.patch(NODES, node, {"spec": {"unschedulable": True}}, content_type=STRATEGIC_MERGE_PATCH)
    deadline = time.monotonic() + 300
    while True:
        result = drain_pass(kube, node, DrainOptions(delete_emptydir_data=True), None, wait_seconds=60)
        if result.refusal or result.error:
            # The drain under test said no: a figure measured past this point would mean nothing.
            raise SystemExit(f"our drain refused to act, no figures: {result.refusal or result.error}")
        if result.done:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"our drain did not finish within 300 s; left: {result.left[:10]}")
        time.sleep(1)
    return time.perf_counter() - started, requests_by(cluster, seq, "kube-maintenance")


def kubectl(cluster: SandboxCluster, kubeconfig: Path, node: str) -> tuple[float, int]:
    seq = len(cluster.requests)
    started = time.perf_counter()
    subprocess.run(
        ["kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"],
        check=True, capture_output=True, env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
    )
    return time.perf_counter() - started, requests_by(cluster, seq, "kubectl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = SandboxConfig(pod_start_seconds=0.1, pod_termination_seconds=0.5, monitor=False, extra={"record_events": False})
    figures: dict[str, list[tuple[float, int]]] = {"kube-maintenance": [], "kubectl drain": []}
    with tempfile.TemporaryDirectory() as tmp, SandboxCluster("bench", config) as cluster:
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "bench.kubeconfig")
        add_ready_node(cluster, "spare")
        for round_no in range(args.rounds):
            for name, drain in (("kube-maintenance", ours), ("kubectl drain", kubectl)):
                node = f"n-{round_no}-{name.split()[0]}"
                add_ready_node(cluster, node)
                load_node(cluster, node, args.pods, f"{round_no}-{name.split()[0]}")
                figures[name].append(drain(cluster, kubeconfig, node))
    budget = 2 * args.pods + 10
    print(f"drain of a node with {args.pods} pods (each terminating in 0.5 s), {args.rounds} rounds; request budget {budget}")
    for name, runs in figures.items():
        times = [t for t, _ in runs]
        reqs = [r for _, r in runs]
        print(f"  {name:18s} wall median {statistics.median(times):5.2f} s (min {min(times):.2f})   API requests median {statistics.median(reqs):.0f} (max {max(reqs)})")


if __name__ == "__main__":
    main()
