"""Our restart-and-verify against a sequential `kubectl rollout restart` + `kubectl rollout status` loop.

1,000 Deployments across 50 namespaces on an in-process sandbox cluster (fast delays, no invariant
monitor). Ours runs the DAG's task-level functions directly, without Airflow: the plan (namespaces,
workloads, shards), then every shard at once in its own thread with its own client, as the mapped
`restart` tasks run: look, then wait as the triggerer would for the deferred task (list then watch,
until one of the rollouts in flight settles), look again. The kubectl loop is sampled on a subset and extrapolated (it is sequential, so
its time grows linearly with the number of workloads); the output says so.

Prints figures, asserts nothing. Target (issue): at least 10 times faster, at most one patch per
workload (and the rolled-out mark), and waits costing a watch per wake of a deferred shard (one of
its rollouts settled), not a poll per workload.
    .venv/bin/python benchmarks/rollout_restart.py [--namespaces 50] [--per-namespace 20]
        [--kubectl-sample 50] [--max-concurrent 50] [--shards 8]
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from kube_maintenance.rollout_restart import decisions as rules  # noqa: E402
from kube_maintenance.core.audit import AuditTrail  # noqa: E402
from kube_maintenance.core.k8s import KubeClient  # noqa: E402
from kube_maintenance.core.registry import SYSTEM_NAMESPACES  # noqa: E402
from kube_maintenance.rollout_restart.tasks import ShardResult, make_plan, roll_shard  # noqa: E402
from sandbox.cluster import SandboxCluster  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.resources import DEPLOYMENTS, NAMESPACES  # noqa: E402
from sandbox.testing import add_ready_node  # noqa: E402


def load(cluster: SandboxCluster, namespaces: int, per_namespace: int) -> list[tuple[str, str]]:
    """``namespaces`` x ``per_namespace`` one-replica Deployments, each rolled out once."""
    store = cluster.store
    for i in range(max(10, namespaces * per_namespace // 80)):
        add_ready_node(cluster, f"node-{i:03d}", cpu="64", memory="256Gi", pods=250)
    refs = []
    for n in range(namespaces):
        ns = f"team-{n:02d}"
        store.create(NAMESPACES, {"metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": "Helm"}}})
        for d in range(per_namespace):
            name = f"svc-{d:02d}"
            labels = {"app": name}
            store.create(
                DEPLOYMENTS,
                {
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": labels},
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
                    },
                },
                namespace=ns,
            )
            refs.append((ns, name))
    if not cluster.wait_for(lambda: not_rolled_out(cluster) == 0, timeout=600, interval=0.5):
        raise SystemExit(f"setup: {not_rolled_out(cluster)} Deployments never rolled out")
    return refs


def not_rolled_out(cluster: SandboxCluster) -> int:
    return sum(1 for d in cluster.store.iter(DEPLOYMENTS) if not rules.rollout_status(d, rules.DEPLOYMENT).done)


# Requests are counted by the clients as they send them (the sandbox logs a watch only once it ends).
_KUBECTL_REQUEST = re.compile(r"round_trippers\.go:\d+\] (GET|PATCH|POST|PUT|DELETE) (\S+) ")


def verb_of(method: str, url: str) -> str:
    """The API verb of a request: get, list, watch, patch ... or discovery."""
    if method != "GET":
        return method.lower()
    if "watch=true" in url:
        return "watch"
    parts = [p for p in urllib.parse.urlsplit(url).path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]  # /api/v1/...
    elif parts[:1] == ["apis"]:
        rest = parts[3:]  # /apis/<group>/<version>/...
    else:
        return "other"
    if not rest:
        return "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # /namespaces/<ns>/<plural>[/<name>]
    return "list" if len(rest) == 1 else "get"


class CountingKubeClient(KubeClient):
    """Our client, tallying every request it sends (retries included) by verb."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verbs: collections.Counter[str] = collections.Counter()

    def _raw(self, method: str, path: str, query: list[tuple[str, Any]] | None, body: Any, content_type: str | None, timeout: float | None, stream: bool = False) -> Any:
        watch = any(k == "watch" and v == "true" for k, v in query or ())
        self.verbs[verb_of(method, path + ("?watch=true" if watch else ""))] += 1
        return super()._raw(method, path, query, body, content_type, timeout, stream)


def kubectl_loop(kubeconfig: Path, sample: list[tuple[str, str]]) -> tuple[float, collections.Counter[str]]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    verbs: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    for ns, name in sample:
        for command in (["rollout", "restart", f"deployment/{name}"], ["rollout", "status", f"deployment/{name}", "--timeout=300s"]):
            proc = subprocess.run(["kubectl", *command, "-n", ns, "-v=6"], check=True, capture_output=True, text=True, env=env)
            verbs.update(verb_of(m.group(1), m.group(2)) for m in _KUBECTL_REQUEST.finditer(proc.stderr))
    return time.perf_counter() - started, verbs


def ours(kubeconfig: Path, namespaces: list[str], max_concurrent: int, shards: int) -> tuple[float, collections.Counter[str], list[ShardResult], int]:
    from kubernetes import config as kube_config

    clients: list[CountingKubeClient] = []

    def client() -> KubeClient:
        clients.append(CountingKubeClient(kube_config.new_client_from_config(str(kubeconfig)), "bench"))
        return clients[-1]

    params = rules.RolloutRestartParams.from_mapping(
        {"namespaces": namespaces, "kinds": ["Deployment"], "max_concurrent_rollouts": max_concurrent, "rollout_timeout_seconds": 600, "dry_run": False},
        SYSTEM_NAMESPACES,
    )
    audit = AuditTrail(cluster="bench", dag_id="rollout_restart__bench", run_id="bench")
    time.sleep(1.0)  # restartedAt has second precision: start past the kubectl sample's last second
    since = rules.run_start_second(dt.datetime.now(dt.timezone.utc))
    started = time.perf_counter()
    plan = make_plan(client(), params, SYSTEM_NAMESPACES, since, shards)
    results: list[ShardResult] = [ShardResult() for _ in plan.shards]

    def run(i: int) -> None:
        results[i] = roll_shard(client(), audit, params, since, plan.shards[i], seconds=900)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plan.shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return wall, sum((c.verbs for c in clients), collections.Counter()), results, len(plan.shards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--per-namespace", type=int, default=20)
    parser.add_argument("--kubectl-sample", type=int, default=50)
    parser.add_argument("--max-concurrent", type=int, default=50, help="max_concurrent_rollouts (per cluster)")
    parser.add_argument("--shards", type=int, default=8, help="the registry's max_parallel_tasks (mapped task instances)")
    args = parser.parse_args()
    if shutil.which("kubectl") is None:
        raise SystemExit("kubectl is not installed")
    logging.basicConfig(level=logging.WARNING)

    config = SandboxConfig(pod_start_seconds=0.2, pod_termination_seconds=0.1, monitor=False, extra={"record_events": False})
    with tempfile.TemporaryDirectory() as tmp, SandboxCluster("bench", config) as cluster:
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "bench.kubeconfig")
        t0 = time.perf_counter()
        refs = load(cluster, args.namespaces, args.per_namespace)
        total = len(refs)
        print(f"setup: {total} Deployments (1 replica) in {args.namespaces} namespaces rolled out in {time.perf_counter() - t0:.0f}s")

        # An even spread of the sample over the namespaces.
        step = max(1, total // args.kubectl_sample)
        sample = refs[::step][: args.kubectl_sample]
        k_wall, k_verbs = kubectl_loop(kubeconfig, sample)
        k_requests = sum(k_verbs.values())
        scale = total / len(sample)

        namespaces = sorted({ns for ns, _ in refs})
        o_wall, o_verbs, results, shard_count = ours(kubeconfig, namespaces, args.max_concurrent, args.shards)
        o_requests = sum(o_verbs.values())
        restarted = sum(len(r.restarted) for r in results)
        failures = {k: v for r in results for k, v in r.failures.items()}
        unfinished = sum(1 for r in results if not r.finished)
        left = not_rolled_out(cluster)

    print()
    print(f"kubectl rollout restart + kubectl rollout status, sequential: measured on {len(sample)} of the {total} Deployments, extrapolated x{scale:.0f}")
    print(f"  sample: wall {k_wall:6.1f} s, API requests {k_requests} ({dict(k_verbs)})")
    print(f"  extrapolated to {total}: wall ~{k_wall * scale:6.0f} s, API requests ~{k_requests * scale:.0f} ({k_verbs['patch'] * scale:.0f} patches, {k_verbs['watch'] * scale:.0f} watches)")
    print(f"ours (plan + {shard_count} shards in parallel, max_concurrent_rollouts={args.max_concurrent}), all {total} Deployments, measured")
    print(f"  wall {o_wall:6.1f} s, API requests {o_requests} ({dict(o_verbs)})")
    print(f"  restarted {restarted}, rollouts not complete at the end: {left}, failures: {len(failures)}, shards unfinished: {unfinished}")
    print()
    print(f"speed-up: {k_wall * scale / o_wall:.1f}x (target >= 10x)")
    print(f"patches per workload: {o_verbs['patch'] / total:.2f} (target <= 2: the restart, and the rolled-out mark that lets a later dip not fail the run)")
    print(f"watches: {o_verbs['watch']} for {args.namespaces} namespaces = {o_verbs['watch'] / args.namespaces:.2f} per namespace, "
          f"{o_verbs['watch'] / total:.2f} per workload: one per wake of a waiting shard "
          f"(kubectl: ~{k_verbs['watch'] * scale:.0f}, one or more per workload); lists: {o_verbs['list']}")
    if failures:
        print("failures:", failures)


if __name__ == "__main__":
    main()
