"""Scale run (issue 10, item 4): the three DAGs through ``dag.test`` against a sandbox cluster of
5,000 nodes, 150,000 pods and 2,000 namespaces, with the figures the issue's targets are about.

Three runs, one after another, on the same cluster:
  1. node replacement: plan a replacement of ``--replace-nodes`` nodes (100) in batches of
     ``--batch-size`` (10) and run its first ``--run-batches`` batches (2): the later batches are
     skipped by this script (as a closing maintenance window would stop them), so the run ends
     after two batches with the rest of the plan not replaced;
  2. CronJob refresh in every namespace (a CronJob each; ``--stale-jobs`` of them spread over the
     namespaces still run a Job on the image their CronJob moved on from), fresh Jobs started where
     ``concurrencyPolicy: Allow`` lets one;
  3. rollout restart of ``--workloads`` Deployments (1,000; 5 per namespace in 200 namespaces).

It prints, per run: wall time; the API requests by verb and by resource (the sandbox's request log);
each task instance's peak memory; the largest XCom; the mapped task instances; what each wait costs
per poke. Then PASS/FAIL per target of the issue. Exit status: 2 when the sandbox did not load or a
run did not finish (each run has a watchdog at ``--run-timeout``; nothing here loops without a
bound), 1 when a target failed (0 with ``--no-fail-on-targets``, the smoke test's: a target missed
is a finding there, not rot), else 0.

How it is built:
- The sandbox (API server, controllers, moto for EC2/Auto Scaling) runs in a child process of its
  own, so the ``dag.test`` process measures only Airflow and the DAGs' tasks.
- moto answers DescribeInstances too slowly past a few hundred instances for the sandbox's cloud
  bridge to poll it, so ``--asg-nodes`` (110) nodes are EC2 instances in two Auto Scaling groups and
  the rest register as Karpenter's nodes (label karpenter.sh/nodepool, an EC2 providerID), which
  node replacement always leaves to Karpenter: the plan still reads and judges all 5,000 Nodes.
- The runs are ``dag.test`` calls in one child process (Airflow on SQLite), one after another, each
  with a watchdog that ends the process at ``--run-timeout``.
- Memory, per task instance: ``dag.test`` runs every task and every trigger of a run in one
  process, one at a time, so each execution (a task's try or poke, or a resume after a trigger,
  and each trigger run) is measured alone: tracemalloc is started when it starts and stopped when
  it ends, so its peak is the most memory the execution's own Python allocations held at once (the
  Kubernetes client's responses, decoded objects, boto3's service models, XComs: what a worker's
  task process adds to its baseline); beside it, the dag.test process's peak RSS (VmHWM, reset
  through /proc/self/clear_refs when the execution starts) and its growth. A task instance's
  figure is the largest over its executions. The modules the tasks import and dag.test's
  in-process Execution API server are loaded before the run, so no task is charged for them. The
  check adds the baseline of a task process (a fresh Python process with those modules imported,
  measured once) to the task's own peak: the dag.test process's RSS itself (Airflow's scheduler
  side, the in-process API server, the DAG run's bookkeeping) is no task process's.
- Waits: every request our Kubernetes client sends is attributed to the execution (and, for a node
  replacement batch, the step) that sent it. A poke is every execution of a waiting step after its
  first look: a reschedule-mode sensor's later pokes, a batch step resumed after its trigger fired,
  and the trigger runs themselves. The target fails when a poke lists a whole collection of the
  cluster (no namespace, no label or field selector): its cost grows with the cluster, not with
  what is waited on.

    .venv/bin/python benchmarks/scale_run.py                     # full size (slow: tens of minutes on 2 cores)
    .venv/bin/python benchmarks/scale_run.py --nodes 50 --pods-per-node 10 --namespaces 20 --workloads 20 \
        --replace-nodes 4 --batch-size 2 --asg-nodes 6 --stale-jobs 4
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

CLUSTER = "scale"
REGION = "eu-west-1"
RESTART_LABEL = "scale.kube-maintenance.dev/restart"
MIB = 1024 * 1024
# The targets.
TASK_MEMORY_LIMIT = 300 * 1000 * 1000  # "every task under 300 MB peak"
XCOM_LIMIT = 64 * 1024  # "every XCom under 64 KB"
MAPPED_LIMIT = 1024  # "at most 1,024 mapped task instances per run"
RUNS = ("node_replacement", "cronjob_refresh", "rollout_restart")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ================================================================================= the sandbox world
def sizes(args: argparse.Namespace) -> dict[str, int]:
    """How the cluster's pods are made up, from the options (the total is nodes x pods per node)."""
    total = args.nodes * args.pods_per_node
    restart_namespaces = min(args.namespaces, math.ceil(args.workloads / args.restart_per_namespace))
    other_namespaces = args.namespaces - restart_namespaces
    daemon_pods = args.nodes if args.daemonset else 0
    restart_pods = args.workloads * args.restart_replicas
    rest = total - daemon_pods - args.stale_jobs - restart_pods
    other_deployments = other_namespaces * args.deployments_per_namespace
    if other_deployments <= 0 or rest < other_deployments:
        raise SystemExit(f"--namespaces {args.namespaces} and --pods-per-node {args.pods_per_node} leave no room for the other namespaces' Deployments")
    return {
        "pods": total,
        "restart_namespaces": restart_namespaces,
        "other_namespaces": other_namespaces,
        "daemon_pods": daemon_pods,
        "restart_pods": restart_pods,
        "other_deployments": other_deployments,
        "other_pods": rest,
    }


def build_world(args: argparse.Namespace, workdir: Path) -> None:
    """The sandbox child: start moto and the cluster, load it, write world.json, serve until stdin closes."""
    import resource

    from sandbox.aws import INSTANCE_CAPACITY, MotoServer, NodeGroup, attach_cloud
    from sandbox.cluster import SandboxCluster
    from sandbox.config import RUN_SECONDS_ANNOTATION, SandboxConfig
    from sandbox.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, JOBS, NAMESPACES, NODES, PDBS
    from sandbox.scenario import App, cronjob, daemonset, deployment, job_of_cronjob, last_slots, pdb
    from sandbox.testing import node_manifest

    shape = sizes(args)
    config = SandboxConfig(
        pod_start_seconds=0.5,
        pod_termination_seconds=0.2,
        job_run_seconds=2.0,
        node_boot_seconds=2.0,
        node_notready_seconds=0.5,
        node_delete_seconds=1.0,
        asg_poll_seconds=args.asg_poll_seconds,
        cronjob_poll_seconds=30.0,
        # The invariants monitor recounts a namespace's pods at every pod change, and the
        # controllers' own Events would double the store: both off, as in sandbox_scale.py.
        monitor=False,
        extra={"record_events": False},
    )
    started = time.perf_counter()
    moto = MotoServer().start()
    cluster = SandboxCluster(CLUSTER, config)
    cluster.start()
    store = cluster.store
    half = args.asg_nodes // 2
    groups = [
        NodeGroup(f"{CLUSTER}-nodes-{suffix}", "m5.xlarge", desired=count, min_size=0, max_size=count + args.batch_size,
                  labels={"workload-type": "general"}, age_seconds=40 * 86400)
        for suffix, count in (("a", args.asg_nodes - half), ("b", half)) if count
    ]
    attach_cloud(cluster, moto.url, REGION, groups)
    if not cluster.wait_for(lambda: sum(1 for _ in store.iter(NODES)) >= args.asg_nodes, timeout=300, interval=0.5):
        raise SystemExit(f"setup: the {args.asg_nodes} Auto Scaling nodes did not register")
    log(f"sandbox: {args.asg_nodes} nodes of Auto Scaling groups registered ({time.perf_counter() - started:.0f}s)")

    cpu, memory, max_pods = INSTANCE_CAPACITY["m5.xlarge"]
    zones = [f"{REGION}{z}" for z in "abc"]
    for i in range(args.nodes - args.asg_nodes):
        name = f"ip-10-250-{i // 250}-{i % 250 + 1}.{REGION}.compute.internal"
        zone = zones[i % 3]
        labels = {"karpenter.sh/nodepool": "default", "karpenter.sh/registered": "true", "karpenter.sh/capacity-type": "on-demand", "workload-type": "general"}
        manifest = node_manifest(name, labels, zone=zone, instance_type="m5.xlarge", cpu=cpu, memory=memory, pods=max_pods,
                                 provider_id=f"aws:///{zone}/i-0{i:016x}", now_iso=cluster.clock.iso())
        with store.lock:
            store.create(NODES, manifest)
    log(f"sandbox: {args.nodes} nodes ({time.perf_counter() - started:.0f}s)")

    def labelled(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": labels}}

    with store.lock:
        # What applying deploy/kubernetes/rbac.yaml creates: the namespace of the cluster's lock.
        store.create(NAMESPACES, labelled("kube-maintenance", {"app.kubernetes.io/name": "kube-maintenance"}))

    if args.daemonset:
        proxy = App("kube-proxy", "kube-system", "602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/kube-proxy:v1.31.2-minimal-eksbuild.3",
                    labels={"eks.amazonaws.com/component": "kube-proxy"}, selector={"k8s-app": "kube-proxy"}, cpu="10m", memory="32Mi", port=None,
                    tolerations=[{"operator": "Exists"}], priority_class="system-node-critical")
        with store.lock:
            store.create(DAEMONSETS, daemonset(proxy, "10%"))

    now = cluster.clock.time()
    slot = last_slots(now, 86400, 1)[0]
    namespaces = [f"team-{i:04d}" for i in range(args.namespaces)]
    # Stale Jobs spread evenly over the namespaces.
    stale_every = max(1, args.namespaces // max(1, args.stale_jobs))
    stale_namespaces = set(namespaces[::stale_every][: args.stale_jobs])
    per_deployment, extra = divmod(shape["other_pods"], shape["other_deployments"])
    other_index = 0
    for n, ns in enumerate(namespaces):
        restart = n < shape["restart_namespaces"]
        labels = {"team": f"team-{n % 97}", "app.kubernetes.io/managed-by": "Helm"}
        if restart:
            labels[RESTART_LABEL] = "true"
        with store.lock:
            store.create(NAMESPACES, labelled(ns, labels))
            if restart:
                count = min(args.restart_per_namespace, args.workloads - n * args.restart_per_namespace)
                for d in range(count):
                    app = App(f"svc-{d}", ns, f"registry.example/{ns}/svc-{d}:1.0", labels={"app": f"svc-{d}"}, selector={"app": f"svc-{d}"}, cpu="50m", memory="64Mi")
                    store.create(DEPLOYMENTS, deployment(app, args.restart_replicas))
            else:
                for d in range(args.deployments_per_namespace):
                    replicas = per_deployment + (1 if other_index < extra else 0)
                    other_index += 1
                    app = App(f"app-{d}", ns, f"registry.example/{ns}/app-{d}:1.0", labels={"app": f"app-{d}"}, selector={"app": f"app-{d}"}, cpu="50m", memory="64Mi")
                    store.create(DEPLOYMENTS, deployment(app, replicas))
                    if d == 0 and replicas > 1:
                        store.create(PDBS, pdb("app-0", ns, app.selector, max_unavailable=1))
            # A CronJob in every namespace; in some, its running Job still has the image it moved on from.
            report = App("report", ns, f"registry.example/{ns}/report:2.0", labels={"app": "report"}, selector={"app": "report"}, cpu="50m", memory="64Mi", port=None)
            # Every other stale one may get a fresh Job at once (Allow); Forbid ones wait for their schedule.
            cron = store.create(CRONJOBS, cronjob(report, "0 0 * * *", "Allow" if (n // stale_every) % 2 else "Forbid"))
            if ns in stale_namespaces:
                spec = json.loads(json.dumps(cron["spec"]["jobTemplate"]["spec"]))
                spec["template"]["spec"]["containers"][0]["image"] = f"registry.example/{ns}/report:1.0"
                spec["template"].setdefault("metadata", {}).setdefault("annotations", {})[RUN_SECONDS_ANNOTATION] = "forever"
                job = store.create(JOBS, job_of_cronjob(cron, slot, spec, cluster.clock))
                active = [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "namespace": ns,
                           "uid": job["metadata"]["uid"], "resourceVersion": job["metadata"]["resourceVersion"]}]
                store.mutate(CRONJOBS, ns, "report", lambda obj, a=active: obj.update(status={"active": a, "lastScheduleTime": cluster.clock.iso(slot)}), subresource="status")
        if n % 100 == 99:
            log(f"sandbox: {n + 1} namespaces created ({time.perf_counter() - started:.0f}s)")

    def pending() -> str:
        waiting = 0
        for d in store.iter(DEPLOYMENTS):
            if d.get("status", {}).get("availableReplicas", 0) < d["spec"].get("replicas", 1):
                waiting += 1
        ds = [d for d in store.iter(DAEMONSETS) if d["metadata"].get("namespace") == "kube-system" and d["metadata"]["name"] == "kube-proxy"]
        ds_left = sum(max(0, d.get("status", {}).get("desiredNumberScheduled", 1) - d.get("status", {}).get("numberReady", 0)) for d in ds)
        jobs_left = sum(1 for ns in stale_namespaces for j in store.iter(JOBS, ns) if not j.get("status", {}).get("active"))
        if waiting or ds_left or jobs_left:
            return f"{waiting} Deployments not available, {ds_left} kube-proxy pods not Ready, {jobs_left} stale Jobs not running"
        return ""

    deadline = time.monotonic() + args.setup_timeout
    last = ""
    while True:
        with store.lock:
            left = pending()
        if not left:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"setup: not settled within {args.setup_timeout}s: {left}")
        if left != last:
            log(f"sandbox: settling: {left} ({time.perf_counter() - started:.0f}s)")
            last = left
        time.sleep(5)
    from sandbox.resources import PODS

    with store.lock:
        counts = {
            "nodes": store.count(NODES),
            "pods": store.count(PODS),
            "namespaces": store.count(NAMESPACES),
            "deployments": store.count(DEPLOYMENTS),
            "cronjobs": store.count(CRONJOBS),
            "jobs": store.count(JOBS),
            "pdbs": store.count(PDBS),
        }
    kubeconfig = cluster.write_kubeconfig(workdir / f"{CLUSTER}.kubeconfig")
    world = {
        "url": cluster.url,
        "moto_url": moto.url,
        "kubeconfig": str(kubeconfig),
        "counts": counts,
        "asg_nodes": args.asg_nodes,
        "stale_jobs": len(stale_namespaces),
        "restart_namespaces": shape["restart_namespaces"],
        "setup_seconds": round(time.perf_counter() - started, 1),
        "sandbox_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    (workdir / "world.tmp").write_text(json.dumps(world))
    (workdir / "world.tmp").rename(workdir / "world.json")
    log(f"sandbox: ready in {world['setup_seconds']}s: {counts}")
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    cluster.stop()
    moto.stop()


# ================================================================================ one DAG run, measured
class Meter:
    """Per-execution figures of the ``dag.test`` process: wall time, memory, the client's requests."""

    def __init__(self, tracemalloc_on: bool) -> None:
        import threading

        self.tracemalloc_on = tracemalloc_on
        self.lock = threading.Lock()
        self.executions: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.step: str | None = None
        self.largest_trigger: dict[str, Any] = {"bytes": 0}

    # ------------------------------------------------------------------------- memory, per execution
    @staticmethod
    def _status_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def begin(self, kind: str, ti: Any) -> dict[str, Any]:
        import tracemalloc

        label = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        execution = {"ti": label, "task_id": ti.task_id, "try": ti.try_number, "kind": kind, "requests": [], "lists": [], "steps": []}
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            execution["hwm_reset"] = True
        except OSError:
            execution["hwm_reset"] = False
        execution["rss_start"] = self._status_kib("VmRSS") * 1024
        if self.tracemalloc_on:
            tracemalloc.start()
        execution["t0"] = time.perf_counter()
        self.current = execution
        return execution

    def end(self, execution: dict[str, Any]) -> None:
        import tracemalloc

        execution["seconds"] = time.perf_counter() - execution.pop("t0")
        if self.tracemalloc_on:
            execution["py_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            execution["py_peak"] = None
        execution["rss_hwm"] = self._status_kib("VmHWM") * 1024
        execution["rss_growth"] = max(0, execution["rss_hwm"] - execution["rss_start"]) if execution["hwm_reset"] else None
        self.current = None
        self.executions.append(execution)

    # ------------------------------------------------------------------------------------- requests
    def request(self, method: str, path: str, query: list[tuple[str, Any]] | None, size: int | None) -> None:
        params = dict(query or ())
        verb = method.lower()
        if method == "GET":
            verb = "watch" if str(params.get("watch")) == "true" else ("list" if _is_collection(path) else "get")
        entry = {"verb": verb, "resource": _resource_of(path), "namespaced": "/namespaces/" in path and not path.rstrip("/").endswith("/namespaces"),
                 "selected": bool(params.get("labelSelector") or params.get("fieldSelector")), "bytes": size, "step": self.step}
        with self.lock:
            if self.current is not None:
                self.current["requests"].append(entry)

    def listed(self, plural: str, namespace: str | None, label_selector: str | None, field_selector: str | None, items: int) -> None:
        with self.lock:
            if self.current is not None:
                self.current["lists"].append({"resource": plural, "namespace": namespace, "label_selector": label_selector,
                                              "field_selector": field_selector, "items": items, "step": self.step})

    def install(self, run_batches: int) -> None:
        """Wrap the seams: each task execution and trigger run of ``dag.test``, our Kubernetes
        client's requests and lists, and the node replacement batch's steps."""
        import functools

        import airflow.sdk.definitions.dag as sdk_dag
        import airflow.sdk.execution_time.supervisor as supervisor

        from kube_maintenance.core import k8s
        from kube_maintenance.node_replacement import batches
        from kube_maintenance.node_replacement import tasks as node_tasks

        meter = self
        run_in_process = supervisor.run_task_in_process

        @functools.wraps(run_in_process)
        def measured_task(*, ti: Any, task: Any) -> Any:
            execution = meter.begin("task", ti)
            try:
                return run_in_process(ti=ti, task=task)
            finally:
                meter.end(execution)

        supervisor.run_task_in_process = measured_task
        inline_trigger = sdk_dag._run_inline_trigger

        @functools.wraps(inline_trigger)
        def measured_trigger(trigger: Any, task_sdk_ti: Any) -> Any:
            classpath, kwargs = trigger.serialize()
            size = len(json.dumps(kwargs, default=str))
            execution = meter.begin("trigger", task_sdk_ti)
            execution["trigger"] = classpath.rsplit(".", 1)[-1]
            try:
                event = inline_trigger(trigger, task_sdk_ti)
            finally:
                meter.end(execution)
            event_size = len(json.dumps(getattr(event, "payload", None), default=str))
            if max(size, event_size) > meter.largest_trigger["bytes"]:
                meter.largest_trigger = {"bytes": max(size, event_size), "kwargs_bytes": size, "event_bytes": event_size,
                                         "ti": execution["ti"], "trigger": execution["trigger"]}
            return event

        sdk_dag._run_inline_trigger = measured_trigger

        raw = k8s.KubeClient._raw

        def counted_raw(client: Any, method: str, path: str, query: Any, body: Any, content_type: Any, timeout: Any, stream: bool = False) -> Any:
            resp = raw(client, method, path, query, body, content_type, timeout, stream)
            watching = any(k == "watch" and str(v) == "true" for k, v in query or ())
            size = None if watching or stream else len(resp.data or b"")
            meter.request(method, path, query, size)
            return resp

        k8s.KubeClient._raw = counted_raw  # type: ignore[method-assign]
        original_list = k8s.KubeClient.list

        def counted_list(client: Any, ref: Any, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None, page_size: int = 500,
                         project: Any = None) -> Any:
            items, rv = original_list(client, ref, namespace, label_selector, field_selector, page_size, project)
            meter.listed(ref.plural, namespace, label_selector, field_selector, len(items))
            return items, rv

        k8s.KubeClient.list = counted_list  # type: ignore[method-assign]

        # The batch's steps, so that a wait's requests are told apart from the steps that act.
        for name in batches.STEPS:
            step = getattr(node_tasks, name)

            def wrapped(*a: Any, _step: Any = step, _name: str = name, **kw: Any) -> Any:
                if _name == "previous_batch_done" and kw.get("index", 0) >= run_batches:
                    from airflow.sdk.exceptions import AirflowSkipException

                    raise AirflowSkipException(f"scale benchmark: only the plan's first {run_batches} batch(es) run")
                meter.step = _name
                ex = meter.current
                try:
                    result = _step(*a, **kw)
                except BaseException:
                    if ex is not None:
                        ex["steps"].append({"step": _name, "result": "raised"})
                    raise
                finally:
                    meter.step = None
                if ex is not None:
                    ex["steps"].append({"step": _name, "result": "wait" if result is False else "done"})
                return result

            setattr(node_tasks, name, wrapped)


def _api_parts(path: str) -> list[str]:
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        return parts[2:]
    if parts[:1] == ["apis"]:
        return parts[3:]
    return parts


def _resource_of(path: str) -> str:
    rest = _api_parts(path)
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return "?"
    return rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")


def _is_collection(path: str) -> bool:
    rest = _api_parts(path)
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    return len(rest) == 1


def run_all(args: argparse.Namespace, workdir: Path) -> None:
    """The runner child: one ``dag.test`` per DAG, one after another, measured; each run's figures
    (and the sandbox's log of its requests) go to run-<op>.json as soon as it ends. A run past
    ``--run-timeout`` ends this process (exit 3) after printing every thread's stack: what has not
    finished has no figures, and the parent reports it so."""
    import faulthandler
    import runpy
    import threading

    world = json.loads((workdir / "world.json").read_text())
    setup_started = time.perf_counter()
    dags = {op: runpy.run_path(str(ROOT / "dags" / f"{op}.py"))[f"{op}__{CLUSTER}"] for op in args.runs}
    warm_up(next(iter(dags.values())))
    meter = Meter(tracemalloc_on=not args.no_tracemalloc)
    meter.install(args.run_batches)
    seq = len(fetch_requests(world["url"], 0))
    log(f"runner: ready in {time.perf_counter() - setup_started:.1f}s")
    for op, dag in dags.items():
        def overdue(op: str = op, started: float = time.perf_counter()) -> None:
            log(f"run {op}: not finished within {args.run_timeout:.0f}s; its threads:")
            faulthandler.dump_traceback(all_threads=True)
            try:  # what it did until then, for the post-mortem (no figures are judged on it)
                partial = {"op": op, "error": f"did not finish within {args.run_timeout:.0f} s", "wall_seconds": time.perf_counter() - started,
                           "executions": meter.executions, "requests": fetch_requests(world["url"], seq)}
                (workdir / f"run-{op}.json").write_text(json.dumps(partial, default=str))
            finally:
                os._exit(3)

        watchdog = threading.Timer(args.run_timeout, overdue)
        watchdog.daemon = True
        meter.executions = []
        meter.largest_trigger = {"bytes": 0}
        baseline = Meter._status_kib("VmRSS") * 1024
        conf = run_conf(args, op)
        log(f"run {op}: dag.test starting (RSS {baseline / MIB:.0f} MiB, limit {args.run_timeout:.0f}s)")
        watchdog.start()
        started = time.perf_counter()
        error = None
        try:
            dag_run = dag.test(run_conf=conf)
        except Exception as exc:  # noqa: BLE001 - reported as a run that did not finish
            dag_run, error = None, f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - started
        watchdog.cancel()
        requests = fetch_requests(world["url"], seq)
        seq += len(requests)
        result: dict[str, Any] = {"op": op, "conf": conf, "wall_seconds": wall, "baseline_rss": baseline, "error": error,
                                  "executions": meter.executions, "largest_trigger": meter.largest_trigger, "requests": requests}
        if dag_run is not None:
            tis = dag_run.get_task_instances()
            result["state"] = str(getattr(dag_run.state, "value", dag_run.state))
            result["run_id"] = dag_run.run_id
            result["task_states"] = {
                (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(getattr(ti.state, "value", ti.state)) for ti in tis
            }
            result["mapped"] = dict(collections.Counter(ti.task_id for ti in tis if ti.map_index >= 0))
            result["xcoms"] = xcom_sizes(dag.dag_id, dag_run.run_id)
        (workdir / f"run-{op}.tmp").write_text(json.dumps(result, default=str))
        (workdir / f"run-{op}.tmp").rename(workdir / f"run-{op}.json")
        log(f"run {op}: {result.get('state', error)} in {wall:.1f}s")


# What a task of these DAGs imports: a worker's task process holds them before the task's own work.
TASK_MODULES = (
    "airflow.sdk",
    "airflow.sdk.execution_time.task_runner",
    "kubernetes.client",
    "kubernetes.config",
    "airflow.providers.cncf.kubernetes.hooks.kubernetes",
    "airflow.providers.amazon.aws.hooks.base_aws",
    "boto3",
    "kube_maintenance.core.k8s",
    "kube_maintenance.core.cloud",
    "kube_maintenance.core.runtime",
) + tuple(f"kube_maintenance.{op}.{m}" for op in RUNS for m in ("dag", "tasks", "triggers"))


def task_process_baseline(env: dict[str, str]) -> int:
    """RSS (bytes) of a fresh Python process that imported what a task of these DAGs imports: about
    what an Airflow worker's task process holds before the task's own work starts."""
    code = (
        "import importlib, sys\n"
        f"for m in {TASK_MODULES!r}: importlib.import_module(m)\n"
        "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS:')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"could not measure a task process's baseline:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def warm_up(dag: Any) -> None:
    """What a worker's task process has before a task starts, so that no task is charged for it: the
    modules the tasks import (Airflow's task runner, the Kubernetes client, the amazon and cncf
    providers' hooks, boto3, this package), and dag.test's in-process Execution API server."""
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    client = InProcessTestSupervisor._api_client(dag)  # builds the in-process API server once
    client.get("health")


def xcom_sizes(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every XCom of the run and its size as stored (the JSON Airflow writes)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).filter(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id
        ).all()
    out = []
    for task_id, map_index, key, value in rows:
        size = len(value) if isinstance(value, (str, bytes)) else len(json.dumps(value, default=str))
        out.append({"task_id": task_id, "map_index": map_index, "key": key, "bytes": size})
    return sorted(out, key=lambda x: -x["bytes"])


def run_conf(args: argparse.Namespace, op: str) -> dict[str, Any]:
    common = {"dry_run": False, "ignore_window": True}
    if op == "node_replacement":
        return {**common, "max_nodes": args.replace_nodes, "batch_size": args.batch_size, "surge": args.surge,
                "force_unmanaged_pods": True, "delete_emptydir_data": True, "drain_timeout_seconds": 900,
                "replacement_timeout_seconds": 900, "validation_passes": 2, "validation_interval_seconds": args.validation_interval,
                "validation_timeout_seconds": 900}
    if op == "cronjob_refresh":
        return {**common, "create_fresh_job": True, "pods_gone_timeout_seconds": 900}
    return {**common, "namespace_selector": f"{RESTART_LABEL}=true", "kinds": ["Deployment"],
            "max_concurrent_rollouts": args.max_concurrent_rollouts, "rollout_timeout_seconds": 900}


def registry(args: argparse.Namespace) -> dict[str, Any]:
    max_batches = math.ceil(args.replace_nodes / args.batch_size)
    return {
        "version": 1,
        "clusters": [
            {
                "name": CLUSTER,
                "kubernetes_conn_id": f"k8s_{CLUSTER}",
                "aws_conn_id": f"aws_{CLUSTER}",
                "region": REGION,
                "timezone": "UTC",
                "maintenance_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440},
                "protected_namespaces": [],
                "operations": {
                    "node_replacement": {"max_batches": max_batches, "poke_interval_seconds": 5, "retries": 0},
                    "cronjob_refresh": {"poke_interval_seconds": 5, "retries": 0},
                    "rollout_restart": {"poke_interval_seconds": 5, "retries": 0},
                },
            }
        ],
    }


# ============================================================================================ reports
def fetch_requests(url: str, since: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/_sandbox/requests?since={since}", timeout=120) as resp:
        return json.loads(resp.read())


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def summarise(op: str, result: dict[str, Any], requests: list[dict[str, Any]], run_timeout: float) -> dict[str, Any]:
    """Print one run's figures; return what the targets are checked on."""
    print(f"\n== {op}: {result.get('state', 'did not finish')} in {result.get('wall_seconds', run_timeout):.1f} s (limit {run_timeout:.0f} s)")
    if result.get("error"):
        print(f"   error: {result['error']}")
    ours = [r for r in requests if "kube-maintenance" in r.get("user_agent", "")]
    by_verb = collections.Counter(r["verb"] for r in ours)
    by_resource = collections.Counter(f"{r['resource']} {r['verb']}" for r in ours)
    print(f"   API requests (sandbox request log): {len(ours)}: " + ", ".join(f"{v} {n}" for v, n in by_verb.most_common()))
    print("   by resource: " + ", ".join(f"{k} {n}" for k, n in sorted(by_resource.items(), key=lambda kv: (-kv[1], kv[0]))))
    states = result.get("task_states") or {}
    failed = sorted(t for t, s in states.items() if s == "failed")
    if failed:
        print(f"   failed tasks: {', '.join(failed)}")
    if states:
        print("   task states: " + ", ".join(f"{s} {n}" for s, n in collections.Counter(states.values()).most_common()))

    # Memory, per task instance (the largest over its executions).
    per_ti: dict[str, dict[str, Any]] = {}
    for ex in result.get("executions") or ():
        agg = per_ti.setdefault(ex["ti"], {"executions": 0, "triggers": 0, "seconds": 0.0, "py_peak": 0, "rss_growth": 0, "rss_hwm": 0, "peak_in": ""})
        agg["executions"] += ex["kind"] == "task"
        agg["triggers"] += ex["kind"] == "trigger"
        agg["seconds"] += ex["seconds"]
        if (ex.get("py_peak") or 0) > agg["py_peak"]:
            agg["py_peak"] = ex["py_peak"]
            agg["peak_in"] = ex.get("trigger") or ", ".join(dict.fromkeys(st["step"] for st in ex["steps"]))
        agg["rss_growth"] = max(agg["rss_growth"], ex.get("rss_growth") or 0)
        agg["rss_hwm"] = max(agg["rss_hwm"], ex.get("rss_hwm") or 0)
    if per_ti:
        print(f"   per task instance (exec: tries, pokes and resumes; trig: trigger runs, inline; py: tracemalloc peak of its own allocations; "
              f"+rss: peak RSS growth of the dag.test process; rss: its peak RSS, {result.get('baseline_rss', 0) / MIB:.0f} MiB before the run):")
        shown = sorted(per_ti.items(), key=lambda kv: -kv[1]["py_peak"])
        limit = 12
        for ti, agg in shown[:limit]:
            print(f"     {ti:<40} exec {agg['executions']:>3}  trig {agg['triggers']:>3}  {agg['seconds']:8.1f} s  "
                  f"py {agg['py_peak'] / MIB:7.1f} MiB  +rss {agg['rss_growth'] / MIB:7.1f} MiB  rss {agg['rss_hwm'] / MIB:6.0f} MiB"
                  + (f"  (peak in: {agg['peak_in']})" if agg["peak_in"] else ""))
        if len(shown) > limit:
            print(f"     ... {len(shown) - limit} more task instances, each below {shown[limit - 1][1]['py_peak'] / MIB:.1f} MiB")

    xcoms = result.get("xcoms") or []
    largest = xcoms[0] if xcoms else None
    if largest:
        where = largest["task_id"] + (f"[{largest['map_index']}]" if largest["map_index"] >= 0 else "")
        print(f"   largest XCom: {largest['bytes']:,} bytes ({where}, key {largest['key']!r}); {len(xcoms)} XComs, {sum(x['bytes'] for x in xcoms):,} bytes in all")
    trig = result.get("largest_trigger") or {}
    if trig.get("bytes"):
        print(f"   largest trigger payload (not an XCom; kept in the trigger table and the task's next_kwargs): kwargs {trig['kwargs_bytes']:,} bytes, "
              f"event {trig['event_bytes']:,} bytes ({trig['ti']}, {trig['trigger']})")
    mapped = result.get("mapped") or {}
    print(f"   mapped task instances: {sum(mapped.values())} ({', '.join(f'{t} {n}' for t, n in sorted(mapped.items())) or 'none'})")

    # Waits: what a poke costs.
    pokes = wait_pokes(result.get("executions") or ())
    offenders: list[str] = []
    if pokes:
        print("   waits, per poke (a poke: a wait looked at again after its first look, or a trigger run):")
        for wait, entries in sorted(pokes.items()):
            lists = [lst for e in entries for lst in e["lists"]]
            watches = sum(1 for e in entries for r in e["requests"] if r["verb"] == "watch")
            whole = [lst for lst in lists if not lst["namespace"] and not lst["label_selector"] and not lst["field_selector"]]
            items = sum(lst["items"] for lst in lists)
            n = len(entries)
            print(f"     {wait:<52} pokes {n:>4}  lists/poke {len(lists) / n:6.1f}  watches/poke {watches / n:5.1f}  "
                  f"items listed/poke {items / n:9.1f}  whole-cluster lists {len(whole)}")
            if whole:
                kinds = collections.Counter(lst["resource"] for lst in whole)
                biggest = max(whole, key=lambda lst: lst["items"])
                offenders.append(f"{wait} lists {', '.join(f'{k} x{c}' for k, c in sorted(kinds.items()))} in {n} poke(s) (up to {biggest['items']:,} {biggest['resource']} a list)")
    return {
        "finished": result.get("state") in ("success", "failed") and not result.get("error"),
        "state": result.get("state"),
        "task_peak": max(per_ti.items(), key=lambda kv: kv[1]["py_peak"]) if per_ti else None,
        "xcom": largest,
        "mapped": sum(mapped.values()),
        "wait_offenders": offenders,
    }


def wait_pokes(executions: Any) -> dict[str, list[dict[str, Any]]]:
    """Each wait's pokes: the executions (or, for a batch, its steps' parts of them) that looked
    again at something already looked at once. A trigger run is a poke of the step that deferred."""
    pokes: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    seen: set[tuple[str, int, str]] = set()
    for ex in executions:
        if ex["kind"] == "trigger":
            pokes[f"{ex['ti']} trigger {ex.get('trigger')}"].append(ex)
            continue
        if ex["task_id"] == "batch" or ex["steps"]:
            # Split the execution by step: a step's first call is its first look.
            for step in {r["step"] for r in ex["requests"] if r["step"]} | {s["step"] for s in ex["steps"]}:
                part = {"lists": [lst for lst in ex["lists"] if lst["step"] == step], "requests": [r for r in ex["requests"] if r["step"] == step]}
                key = (ex["ti"], ex["try"], step)
                calls = sum(1 for s in ex["steps"] if s["step"] == step)
                waited = any(s["step"] == step and s["result"] == "wait" for s in ex["steps"])
                if key in seen:
                    pokes[f"{ex['ti']} {step}"].append(part)
                elif waited or calls > 1:
                    seen.add(key)
                    if calls > 1:  # looked again within the same execution (not expected: a step waits by deferring)
                        pokes[f"{ex['ti']} {step}"].append(part)
                else:
                    seen.add(key)
            continue
        key = (ex["ti"], ex["try"], "")
        if key in seen:
            pokes[ex["ti"]].append(ex)
        else:
            seen.add(key)
    return pokes


# ============================================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--namespaces", type=int, default=2000)
    parser.add_argument("--workloads", type=int, default=1000, help="Deployments the rollout restart restarts")
    parser.add_argument("--restart-per-namespace", type=int, default=5, help="Deployments per namespace restarted")
    parser.add_argument("--restart-replicas", type=int, default=2, help="replicas of each restarted Deployment")
    parser.add_argument("--deployments-per-namespace", type=int, default=4, help="in the other namespaces, carrying the rest of the pods")
    parser.add_argument("--stale-jobs", type=int, default=200, help="CronJobs whose running Job has an old image, spread over the namespaces")
    parser.add_argument("--replace-nodes", type=int, default=100, help="nodes in the node replacement's plan")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--run-batches", type=int, default=2, help="how many of the plan's batches run")
    parser.add_argument("--surge", action="store_true", help="node replacement with surge (default: in place)")
    parser.add_argument("--validation-interval", type=int, default=5, help="node replacement's validation_interval_seconds")
    parser.add_argument("--asg-nodes", type=int, default=110, help="nodes that are EC2 instances of Auto Scaling groups (the rest are Karpenter's)")
    parser.add_argument("--asg-poll-seconds", type=float, default=3.0, help="how often the sandbox's cloud bridge asks moto")
    parser.add_argument("--no-daemonset", dest="daemonset", action="store_false", help="no kube-proxy DaemonSet (a pod on every node)")
    parser.add_argument("--max-concurrent-rollouts", type=int, default=50)
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs, comma-separated")
    parser.add_argument("--run-timeout", type=float, default=3600, help="wall-clock limit of each DAG run (s)")
    parser.add_argument("--setup-timeout", type=float, default=5400, help="wall-clock limit of loading the sandbox (s)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="RSS figures only (tracemalloc slows allocation-heavy tasks)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, figures)")
    parser.add_argument("--no-fail-on-targets", action="store_true",
                        help="exit 0 when every run finished, whatever the targets say (the smoke test: a target missed is a finding, not rot)")
    parser.add_argument("--role", choices=("main", "sandbox", "initdb", "run"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.asg_nodes < args.replace_nodes or args.asg_nodes > args.nodes:
        parser.error("--asg-nodes must be at least --replace-nodes and at most --nodes")
    if args.batch_size < 1 or args.run_batches < 1:
        parser.error("--batch-size and --run-batches must be at least 1")
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if unknown := [r for r in args.runs if r not in RUNS]:
        parser.error(f"--runs: unknown {unknown}; expected some of {', '.join(RUNS)}")
    return args


def child_env(workdir: Path, world: dict[str, Any] | None) -> dict[str, str]:
    home = workdir / "airflow"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "KUBE_MAINTENANCE_REGISTRY": str(workdir / "registry.json"),
    }
    if world:
        env[f"AIRFLOW_CONN_K8S_{CLUSTER.upper()}"] = json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": world["kubeconfig"], "namespace": "default"}})
        env[f"AIRFLOW_CONN_AWS_{CLUSTER.upper()}"] = json.dumps(
            {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"region_name": REGION, "endpoint_url": world["moto_url"]}}
        )
    return env


def child_argv(args: argparse.Namespace, role: str, workdir: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--workdir", str(workdir)]
    for name in ("nodes", "pods_per_node", "namespaces", "workloads", "restart_per_namespace", "restart_replicas", "deployments_per_namespace",
                 "stale_jobs", "replace_nodes", "batch_size", "run_batches", "validation_interval", "asg_nodes", "asg_poll_seconds", "max_concurrent_rollouts",
                 "run_timeout", "setup_timeout"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for flag, on in (("--surge", args.surge), ("--no-daemonset", not args.daemonset), ("--no-tracemalloc", args.no_tracemalloc)):
        if on:
            argv.append(flag)
    argv += ["--runs", ",".join(args.runs)]
    return argv


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """End a child we started (its own process group) and wait for it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "sandbox":
        build_world(args, Path(args.workdir))
        return 0
    if args.role == "initdb":
        from airflow.utils import db

        db.resetdb()
        return 0
    if args.role == "run":
        run_all(args, Path(args.workdir))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="scale-run-"))
    (workdir / "registry.json").write_text(json.dumps(registry(args)))
    shape = sizes(args)
    print(f"scale run: {args.nodes:,} nodes ({args.asg_nodes} in Auto Scaling groups, the rest Karpenter's), {shape['pods']:,} pods, "
          f"{args.namespaces:,} namespaces; runs: {', '.join(args.runs)}; work directory {workdir}")
    log(f"loading the sandbox (limit {args.setup_timeout:.0f}s)")
    sandbox_log = open(workdir / "sandbox.log", "w")
    sandbox = subprocess.Popen(child_argv(args, "sandbox", workdir), stdin=subprocess.PIPE, stdout=sandbox_log, stderr=subprocess.STDOUT,
                               env=child_env(workdir, None), start_new_session=True, cwd=ROOT)
    summaries: dict[str, dict[str, Any]] = {}
    try:
        initdb = subprocess.Popen(child_argv(args, "initdb", workdir), stdout=subprocess.DEVNULL, stderr=open(workdir / "initdb.log", "w"),
                                  env=child_env(workdir, None), start_new_session=True, cwd=ROOT)
        try:
            if initdb.wait(timeout=600) != 0:
                raise SystemExit(f"the Airflow database could not be created: see {workdir / 'initdb.log'}")
        except subprocess.TimeoutExpired:
            stop_process(initdb)
            raise SystemExit("the Airflow database was not created within 600 s") from None
        task_baseline = task_process_baseline(child_env(workdir, None))
        print(f"a task process's baseline (a fresh Python process with Airflow's task runner, the providers' hooks, the Kubernetes client, "
              f"boto3 and this package imported): {task_baseline / MIB:.0f} MiB RSS")
        deadline = time.monotonic() + args.setup_timeout + 60
        while not (workdir / "world.json").exists():
            if sandbox.poll() is not None:
                raise SystemExit(f"the sandbox stopped while loading: {tail(workdir / 'sandbox.log')}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the sandbox did not load within {args.setup_timeout:.0f} s: {tail(workdir / 'sandbox.log')}")
            time.sleep(2)
        world = json.loads((workdir / "world.json").read_text())
        c = world["counts"]
        print(f"sandbox loaded in {world['setup_seconds']:.0f} s: {c['nodes']:,} nodes, {c['pods']:,} pods, {c['namespaces']:,} namespaces, "
              f"{c['deployments']:,} Deployments, {c['cronjobs']:,} CronJobs ({world['stale_jobs']} with a stale running Job), {c['pdbs']:,} PDBs; "
              f"sandbox process peak RSS {world['sandbox_peak_rss_mib']:,} MiB")
        env = child_env(workdir, world)
        log(f"runs: {', '.join(args.runs)} (limit {args.run_timeout:.0f}s each)")
        runner_log = open(workdir / "runs.log", "w")
        runner = subprocess.Popen(child_argv(args, "run", workdir), stdout=runner_log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)
        try:
            # Each run has its own watchdog in the runner; this bounds the runner's start and end too.
            runner.wait(timeout=len(args.runs) * args.run_timeout + 600)
        except subprocess.TimeoutExpired:
            stop_process(runner)
            log("the runner did not end in time: stopped")
        runner_log.close()
        for op in args.runs:
            out = workdir / f"run-{op}.json"
            if out.exists():
                result = json.loads(out.read_text())
            else:
                result = {"error": f"did not finish within {args.run_timeout:.0f} s (or the runner stopped first): see {workdir / 'runs.log'}\n{tail(workdir / 'runs.log')}",
                          "wall_seconds": args.run_timeout}
            summaries[op] = summarise(op, result, result.get("requests") or [], args.run_timeout)
            summaries[op]["baseline"] = task_baseline
    finally:
        if sandbox.stdin:
            try:
                sandbox.stdin.close()
            except OSError:
                pass
        try:
            sandbox.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(sandbox)
        sandbox_log.close()
    failed, unfinished = report_targets(summaries, args)
    if args.keep or unfinished or failed and not args.no_fail_on_targets:
        print(f"\nlogs and figures kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    # 2: a run did not finish (no figures to judge it by); 1: a target failed (a finding).
    return 2 if unfinished else 1 if failed and not args.no_fail_on_targets else 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def report_targets(summaries: dict[str, dict[str, Any]], args: argparse.Namespace) -> tuple[bool, bool]:
    print("\ntargets (issue 10, item 4):")
    failed = False

    def verdict(ok: bool, text: str) -> None:
        nonlocal failed
        failed |= not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")

    unfinished = [op for op in args.runs if not summaries.get(op, {}).get("finished")]
    verdict(not unfinished, "every run finished within its limit" + (f" (not: {', '.join(unfinished)})" if unfinished else ""))
    states = {op: s.get("state") for op, s in summaries.items()}
    verdict(all(v == "success" for v in states.values()) and len(states) == len(args.runs), "every run succeeded: " + ", ".join(f"{op} {st}" for op, st in states.items()))
    peaks = [(op, s["task_peak"], s["baseline"]) for op, s in summaries.items() if s.get("task_peak")]
    if args.no_tracemalloc:
        print("  ----  every task under 300 MB peak: not checked (--no-tracemalloc)")
    elif peaks:
        op, (ti, agg), baseline = max(peaks, key=lambda p: p[1][1]["py_peak"])
        worst = max(p[1][1]["py_peak"] + p[2] for p in peaks)
        where = f" ({agg['peak_in']})" if agg.get("peak_in") else ""
        verdict(worst < TASK_MEMORY_LIMIT, f"every task under 300 MB peak: largest {ti}{where} of {op}, {agg['py_peak'] / 1e6:.1f} MB of its own allocations "
                                            f"+ {baseline / 1e6:.0f} MB task process baseline = {(agg['py_peak'] + baseline) / 1e6:.0f} MB")
    xcoms = [(op, s["xcom"]) for op, s in summaries.items() if s.get("xcom")]
    if xcoms:
        op, x = max(xcoms, key=lambda p: p[1]["bytes"])
        where = x["task_id"] + (f"[{x['map_index']}]" if x["map_index"] >= 0 else "")
        over = [f"{o} {y['task_id']}/{y['key']} {y['bytes']:,}" for o, y in xcoms if y["bytes"] >= XCOM_LIMIT]
        verdict(x["bytes"] < XCOM_LIMIT, f"every XCom under 64 KB: largest {x['bytes']:,} bytes ({op}: {where}, key {x['key']!r})" + (f"; over: {'; '.join(over)}" if over else ""))
    mapped = {op: s["mapped"] for op, s in summaries.items()}
    verdict(all(n <= MAPPED_LIMIT for n in mapped.values()), "at most 1,024 mapped task instances per run: " + ", ".join(f"{op} {n}" for op, n in mapped.items()))
    offenders = [f"{op}: {o}" for op, s in summaries.items() for o in s.get("wait_offenders") or ()]
    verdict(not offenders, "waits cost watches, not lists of the whole cluster per poke" + ("" if not offenders else ":\n        " + "\n        ".join(offenders)))
    return failed, bool(unfinished)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as exc:
        if isinstance(exc.code, str):  # setup failed: no run to judge
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise
