"""Scale check of the sandbox: 5,000 nodes and 150,000 pods, then field-selected pod lists over HTTP.

Prints figures, asserts nothing: run it with `make bench` (or `.venv/bin/python benchmarks/sandbox_scale.py`).
    --nodes N --pods-per-node N   size of the cluster (default 5000 x 30)
    --queries N                   how many `spec.nodeName=` lists to time (default 200)
    --controllers                 also run the controllers while loading (slower to load)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.cluster import SandboxCluster  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.resources import PODS  # noqa: E402
from sandbox.server import ApiServer  # noqa: E402
from sandbox.testing import node_manifest  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--controllers", action="store_true")
    args = parser.parse_args()

    cluster = SandboxCluster("scale", SandboxConfig(monitor=False))
    cluster.bootstrap()
    if args.controllers:
        cluster.manager.start()
    store = cluster.store
    started = time.perf_counter()
    for i in range(args.nodes):
        store.create("nodes", node_manifest(f"ip-10-{i // 65536}-{(i // 256) % 256}-{i % 256}.ec2.internal", now_iso=cluster.clock.iso()))
    nodes_done = time.perf_counter()
    node_names = [n["metadata"]["name"] for n in store.iter("nodes")]
    for ns in ("shop", "payments", "search"):
        store.create("namespaces", {"metadata": {"name": ns}})
    for i, node in enumerate(node_names):
        for j in range(args.pods_per_node):
            store.create(
                PODS,
                {
                    "metadata": {"name": f"app-{i}-{j}", "labels": {"app": f"app-{j % 50}"}},
                    "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
                },
                namespace=("shop", "payments", "search")[j % 3],
            )
    loaded = time.perf_counter()
    print(f"loaded {store.count('nodes')} nodes in {nodes_done - started:.1f}s and {store.count(PODS)} pods in {loaded - nodes_done:.1f}s")
    print(f"peak RSS after load: {peak_rss_mib():.0f} MiB")

    server = ApiServer(cluster)
    server.start()
    try:
        latencies = []
        for q in range(args.queries):
            node = node_names[(q * 7919) % len(node_names)]
            url = f"{server.url}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
            t0 = time.perf_counter()
            with urllib.request.urlopen(url) as resp:
                body = json.loads(resp.read())
            latencies.append((time.perf_counter() - t0) * 1000)
            assert len(body["items"]) == args.pods_per_node, len(body["items"])
        latencies.sort()
        print(
            f"field-selected pod list (spec.nodeName=, {args.pods_per_node} pods each) over HTTP, {args.queries} queries: "
            f"median {statistics.median(latencies):.2f} ms, p95 {latencies[int(len(latencies) * 0.95) - 1]:.2f} ms, max {latencies[-1]:.2f} ms"
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{server.url}/api/v1/pods?labelSelector=app%3Dapp-7&limit=500") as resp:
            page = json.loads(resp.read())
        print(f"label-selected first page over all {store.count(PODS)} pods (a full scan, for contrast): {(time.perf_counter() - t0) * 1000:.0f} ms, {len(page['items'])} items")
        print(f"peak RSS: {peak_rss_mib():.0f} MiB")
    finally:
        server.stop()
        cluster.manager.stop()


if __name__ == "__main__":
    main()
