"""How long a worker slot is held while a node replacement's batch waits: the deferrable batch
against the reschedule-mode sensors it replaced, on the same drain.

One batch replaces one node carrying N pods of a Deployment whose PodDisruptionBudget allows one
pod out at a time (maxUnavailable 1), each replacement pod taking some seconds to be Ready
elsewhere: the drain goes one pod at a time. Each mode gets a sandbox world of its own (moto, one
Auto Scaling group of three nodes) and runs the DAG's own task functions (plan, preflight, then
the batch's steps: cordon, drain, terminate, wait for the replacement, validate), as a worker
would, without Airflow's scheduler:

- deferrable: ``ReplaceBatchOperator`` as it is. Each worker run (``execute``, then ``resume``
  after each event) is timed; the trigger it defers to is serialised, rebuilt and run to its first
  event as the triggerer runs it (that time holds no worker slot).
- reschedule: what the batch was before (issue 9): a reschedule-mode sensor whose poke calls the
  same step functions; the drain's pass watches the evicted pods go inside the worker for up to
  60 s (as its pokes did), the validation sleeps between its checks inside the poke, and every
  other "not yet" frees the slot until the next poke interval. Each poke is timed.

Slot-held seconds are the time inside the worker (execute / resume / poke), excluding what a real
worker adds per run (starting the task process, parsing the DAG file): the number of worker runs
is printed beside them. Wall time is from the batch's first worker run to its end.

Prints figures, asserts nothing; exits non-zero, saying why, when the code under test refuses to
act (a step fails or skips, e.g. the drain refuses a pod) or a mode does not finish in time.
    .venv/bin/python benchmarks/worker_slots.py [--pods 50] [--pod-ready-seconds 2]
        [--poke-interval 15] [--validation-interval 10] [--node-boot-seconds 5] [--drain-timeout 1800]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

# Airflow reads its settings when first imported: a throwaway home, no examples, no database used.
_HOME = tempfile.mkdtemp(prefix="kube-maintenance-bench-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
    }
)

from sandbox.__main__ import airflow_connections  # noqa: E402
from sandbox.aws import NodeGroup  # noqa: E402
from sandbox.config import SandboxConfig  # noqa: E402
from sandbox.resources import DEPLOYMENTS, NODES, PDBS, PODS  # noqa: E402
from sandbox.scenario import ClusterPlan, World, start_world  # noqa: E402

DAY = 86400.0
MODES = ("deferrable", "reschedule")
OLD_DRAIN_WAIT_PER_POKE_SECONDS = 60.0  # what a drain poke watched for, at most, before the batch deferred


class Refused(Exception):
    """The code under test would not act (a step failed or skipped): no figure would mean anything."""


# ------------------------------------------------------------------------------------ the world
def make_world(directory: Path, name: str, args: argparse.Namespace) -> tuple[World, str]:
    """A cluster of three big nodes in one Auto Scaling group; the first carries the N pods of
    "web", whose PDB lets one pod out at a time. Returns the world and that node's name."""
    config = SandboxConfig(
        pod_start_seconds=args.pod_ready_seconds,
        pod_termination_seconds=args.pod_termination_seconds,
        node_boot_seconds=args.node_boot_seconds,
        node_notready_seconds=0.2,
        node_delete_seconds=0.5,
        asg_poll_seconds=0.2,
        monitor=False,
        extra={"record_events": False},
    )
    group = NodeGroup(f"{name}-general", "m5.2xlarge", desired=3, min_size=3, max_size=6, labels={"workload-type": "general"}, age_seconds=40 * DAY)
    world = start_world(directory, (ClusterPlan(name, "eu-west-1", (group,)),), config, seed=False)
    try:
        cluster = world.clusters[name].cluster
        store = cluster.store
        nodes = sorted(n["metadata"]["name"] for n in store.iter(NODES))
        victim, others = nodes[0], nodes[1:]
        # Every pod on the victim: the others are cordoned while the Deployment starts.
        for node in others:
            store.mutate(NODES, None, node, lambda n: n["spec"].__setitem__("unschedulable", True))
        labels = {"app": "web"}
        container = {"name": "web", "image": "registry.example/web:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
        store.create(
            DEPLOYMENTS,
            {
                "metadata": {"name": "web", "labels": labels},
                "spec": {"replicas": args.pods, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [container], "terminationGracePeriodSeconds": 30}}},
            },
            namespace="default",
        )
        available = lambda: (store.try_get(DEPLOYMENTS, "default", "web") or {}).get("status", {}).get("availableReplicas", 0) == args.pods  # noqa: E731
        if not cluster.wait_for(available, timeout=120, interval=0.2):
            raise SystemExit(f"setup: {args.pods} pods of web never became available on {victim}")
        for node in others:
            store.mutate(NODES, None, node, lambda n: n["spec"].pop("unschedulable", None))
        store.create(PDBS, {"metadata": {"name": "web"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}, namespace="default")
        for i in range(args.unmanaged_pods):
            bare = {"metadata": {"name": f"bare-{i}"}, "spec": {"nodeName": victim, "containers": [container]}}
            store.create(PODS, bare, namespace="default")
        if not cluster.wait_for(lambda: (store.try_get(PDBS, "default", "web") or {}).get("status", {}).get("disruptionsAllowed") == 1, timeout=30):
            raise SystemExit("setup: the PodDisruptionBudget never allowed a disruption")
    except BaseException:
        world.stop()
        raise
    return world, victim


def registry(name: str, poke_interval: float) -> dict[str, Any]:
    return {
        "version": 1,
        "clusters": [
            {
                "name": name, "kubernetes_conn_id": f"k8s_{name}", "aws_conn_id": f"aws_{name}", "region": "eu-west-1", "timezone": "UTC",
                "maintenance_window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440},
                "protected_namespaces": [], "lock_namespace": "default",
                "operations": {"node_replacement": {"max_batches": 1, "poke_interval_seconds": poke_interval}},
            }
        ],
    }


# ------------------------------------------------------------------------------- a worker's view
class BenchTI:
    """What the task functions ask of a task instance: XComs (kept across runs, as Airflow keeps a
    finished task's) and the states of the run's tasks."""

    def __init__(self, task_id: str, xcoms: dict[tuple[str, str], Any], dag_id: str, run_id: str) -> None:
        self.task_id, self.xcoms, self.dag_id, self.run_id = task_id, xcoms, dag_id, run_id
        self.map_index, self.try_number = (0 if task_id == "batch" else -1), 1
        self.first_reschedule: dt.datetime | None = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get((task_ids or self.task_id, key))

    def get_task_states(self, **_: Any) -> dict[str, dict[str, str]]:
        return {self.run_id: {}}

    def get_first_reschedule_date(self, context: Any) -> dt.datetime | None:
        return self.first_reschedule


@dataclass
class Figures:
    mode: str
    wall: float = 0.0
    worker: float = 0.0  # seconds inside execute / resume / poke
    runs: int = 0  # worker runs (each a task start on a real worker)
    triggerer: float = 0.0  # seconds a trigger ran (deferrable only)
    step_worker: dict[str, float] = field(default_factory=dict)
    step_wall: dict[str, list[float]] = field(default_factory=dict)  # first start, last end


def timed_steps(figures: Figures) -> Callable[[], None]:
    """Wrap the batch's step functions to time them (in the worker) and when each ran; returns undo."""
    from kube_maintenance.node_replacement import batches, tasks as op

    originals = {name: getattr(op, name) for name in batches.STEPS}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                ended = time.perf_counter()
                figures.step_worker[name] = figures.step_worker.get(name, 0.0) + ended - started
                span = figures.step_wall.setdefault(name, [started, ended])
                span[1] = ended

        return timed

    for name, fn in originals.items():
        setattr(op, name, wrap(name, fn))
    return lambda: [setattr(op, name, fn) for name, fn in originals.items()]  # type: ignore[func-returns-value]


def as_the_task_runner(task: Any, call: Callable[[dict[str, Any]], Any], ctx: dict[str, Any]) -> Any:
    """Call ``execute`` / ``resume_execution`` as Airflow's task runner does (its safeguard set)."""
    import contextvars

    from airflow.sdk.bases.operator import ExecutorSafeguard

    run = contextvars.copy_context()
    run.run(ExecutorSafeguard.tracker.set, task)
    return run.run(call, ctx)


def raise_refusal(exc: BaseException) -> None:
    """A step that failed or skipped (the drain refusing a pod, a timeout, nothing to do) ends the
    benchmark: looping on would measure nothing."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

    if isinstance(exc, (AirflowFailException, AirflowSkipException, AirflowSensorTimeout)):
        raise Refused(f"{type(exc).__name__}: {exc}") from exc


def run_mode(mode: str, args: argparse.Namespace, tmp: Path) -> Figures:
    from kube_maintenance.node_replacement import tasks as op

    name = f"bench{mode}"  # Airflow connection ids from the environment: no dashes
    world, victim = make_world(tmp / mode, name, args)
    try:
        for var, conn in airflow_connections(world).items():
            os.environ[var] = json.dumps(conn)
        (tmp / f"{name}.json").write_text(json.dumps(registry(name, args.poke_interval)))
        os.environ["KUBE_MAINTENANCE_REGISTRY"] = str(tmp / f"{name}.json")
        params = {
            "dry_run": False, "node_names": [victim], "max_nodes": 1, "batch_size": 1, "ignore_window": True,
            "drain_timeout_seconds": args.drain_timeout, "replacement_timeout_seconds": 900,
            "validation_interval_seconds": args.validation_interval, "validation_passes": 2, "validation_timeout_seconds": 900,
        }
        dag_run = SimpleNamespace(dag_id=f"node_replacement__{name}", run_id=f"manual__{mode}", run_type="manual", conf=params, triggering_user_name=None)
        xcoms: dict[tuple[str, str], Any] = {}

        def context(task_id: str) -> dict[str, Any]:
            ti = BenchTI(task_id, xcoms, dag_run.dag_id, dag_run.run_id)
            return {"ti": ti, "task_instance": ti, "params": dict(params), "dag_run": dag_run, "run_id": dag_run.run_id}

        try:
            batches = op.plan(name, max_batches=1, **context("plan"))
            op.preflight(name, max_batches=1, **context("preflight"))
        except BaseException as exc:  # noqa: BLE001 - a refusal is said and ends the benchmark
            raise_refusal(exc)
            raise
        if len(batches) != 1:
            raise Refused(f"the plan has {len(batches)} batches, expected 1 (replacing {victim})")
        figures = Figures(mode)
        undo = timed_steps(figures)
        try:
            runner = run_deferrable if mode == "deferrable" else run_reschedule
            runner(figures, name, batches[0], context, args)
        finally:
            undo()
        return figures
    finally:
        world.stop()


def run_deferrable(figures: Figures, name: str, batch: dict[str, Any], context: Callable[[str], dict[str, Any]], args: argparse.Namespace) -> None:
    from airflow._shared.module_loading import import_string
    from airflow.sdk.exceptions import TaskDeferred

    from kube_maintenance.node_replacement.batches import ReplaceBatchOperator

    async def first_event(trigger: Any) -> Any:
        async for event in trigger.run():
            return event.payload
        raise Refused(f"{type(trigger).__name__} ended without an event")

    operator = ReplaceBatchOperator(task_id="batch", cluster_name=name, batch=batch, max_batches=1, poke_interval=args.poke_interval)
    run: Callable[[dict[str, Any]], Any] = operator.execute
    started = time.perf_counter()
    while True:
        if time.perf_counter() - started > args.max_seconds:
            raise Refused(f"the deferrable batch did not finish within {args.max_seconds:.0f}s")
        t0 = time.perf_counter()
        figures.runs += 1
        try:
            as_the_task_runner(operator, run, context("batch"))
            figures.worker += time.perf_counter() - t0
            break
        except TaskDeferred as deferred:
            figures.worker += time.perf_counter() - t0
            classpath, kwargs = deferred.trigger.serialize()
            trigger = import_string(classpath)(**json.loads(json.dumps(kwargs)))  # as stored and rebuilt by the triggerer
            t1 = time.perf_counter()
            payload = asyncio.run(first_event(trigger))
            figures.triggerer += time.perf_counter() - t1
            run = functools.partial(lambda ctx, method, event: operator.resume_execution(method, {"event": event}, ctx), method=deferred.method_name, event=payload)
        except BaseException as exc:  # noqa: BLE001 - a refusal is said and ends the benchmark
            raise_refusal(exc)
            raise
    figures.wall = time.perf_counter() - started


def run_reschedule(figures: Figures, name: str, batch: dict[str, Any], context: Callable[[str], dict[str, Any]], args: argparse.Namespace) -> None:
    from airflow.sdk import BaseSensorOperator
    from airflow.sdk.exceptions import AirflowRescheduleException

    from kube_maintenance.node_replacement import batches as batch_module, tasks as op

    real_drain_pass = op.drain_pass

    def drain_pass_watching(kube: Any, node: str, opts: Any, grace: Any, wait_seconds: float) -> Any:
        return real_drain_pass(kube, node, opts, grace, OLD_DRAIN_WAIT_PER_POKE_SECONDS)

    class RescheduleBatchSensor(BaseSensorOperator):
        """The batch as it was: pokes in reschedule mode; between pokes the steps' state is kept
        (as the XComs between the old per-step sensors were)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(mode="reschedule", poke_interval=args.poke_interval, timeout=args.max_seconds, **kwargs)
            self.state: dict[str, Any] = {"step": 0}

        def poke(self, ctx: Any) -> bool:
            ctx["batch_state"] = self.state
            index = int(batch["index"])
            op.drain_pass = drain_pass_watching
            try:
                while self.state["step"] < len(batch_module.STEPS):
                    step = batch_module.STEPS[self.state["step"]]
                    done = getattr(op, step)(cluster_name=name, index=index, max_batches=1, **ctx)
                    for hint in ("watch_nodes", "watch_pods", "watch_budgets", "wait_for_nodes", "wait_for_health"):
                        self.state.pop(hint, None)  # the sensors watched nothing between pokes
                    wake_at = self.state.pop("wake_at", None)
                    if done is False and step in batch_module.WAITING_STEPS:
                        if step == "validate" and wake_at:
                            # The validation slept between its checks inside the poke.
                            pause = max(0.0, (dt.datetime.fromisoformat(wake_at) - dt.datetime.now(dt.timezone.utc)).total_seconds())
                            time.sleep(pause)
                            figures.step_worker["validate"] += pause
                            continue
                        return False
                    self.state["step"] += 1
                return True
            finally:
                op.drain_pass = real_drain_pass

    sensor = RescheduleBatchSensor(task_id="batch")
    started = time.perf_counter()
    first_poke: dt.datetime | None = None
    while True:
        ctx = context("batch")
        ctx["ti"].first_reschedule = first_poke
        t0 = time.perf_counter()
        figures.runs += 1
        try:
            as_the_task_runner(sensor, sensor.execute, ctx)
            figures.worker += time.perf_counter() - t0
            break
        except AirflowRescheduleException as again:
            figures.worker += time.perf_counter() - t0
            first_poke = first_poke or dt.datetime.now(dt.timezone.utc)
            time.sleep(max(0.0, (again.reschedule_date - dt.datetime.now(dt.timezone.utc)).total_seconds()))  # the slot is free meanwhile
        except BaseException as exc:  # noqa: BLE001 - a refusal is said and ends the benchmark
            raise_refusal(exc)
            raise
    figures.wall = time.perf_counter() - started


# --------------------------------------------------------------------------------------- report
def report(args: argparse.Namespace, results: list[Figures]) -> None:
    print()
    print(
        f"batch replacing one node with {args.pods} pods of a Deployment under a PDB (maxUnavailable 1), pods Ready "
        f"{args.pod_ready_seconds:g}s after they start, terminating in {args.pod_termination_seconds:g}s, node boot "
        f"{args.node_boot_seconds:g}s, poke interval {args.poke_interval:g}s, 2 validation checks {args.validation_interval:g}s apart"
    )
    print("slot held = seconds inside the worker (execute / resume / poke), without a real worker's per-run start-up (see runs)")
    for f in results:
        drain_wall = f.step_wall["drain"][1] - f.step_wall["drain"][0] if "drain" in f.step_wall else 0.0
        drain_slot = f.step_worker.get("drain", 0.0)
        print(f"  {f.mode:10s} batch: wall {f.wall:7.1f} s, slot held {f.worker:6.1f} s ({100 * f.worker / f.wall:5.1f}% of wall), worker runs {f.runs}"
              + (f", triggers ran {f.triggerer:.1f} s on the triggerer" if f.mode == "deferrable" else ""))
        print(f"  {'':10s} drain: wall {drain_wall:7.1f} s, slot held {drain_slot:6.1f} s ({100 * drain_slot / max(drain_wall, 1e-9):5.1f}% of wall)")
        steps = ", ".join(f"{step} {f.step_worker[step]:.1f}" for step in f.step_worker)
        print(f"  {'':10s} slot held by step (s): {steps}")
    by = {f.mode: f for f in results}
    if set(by) == set(MODES):
        d, r = by["deferrable"], by["reschedule"]
        print(f"slot held, reschedule / deferrable: {r.worker / max(d.worker, 1e-9):.1f}x ({r.worker:.1f} s vs {d.worker:.1f} s); "
              f"wall: {r.wall:.1f} s vs {d.wall:.1f} s; worker runs: {r.runs} vs {d.runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--pod-ready-seconds", type=float, default=2.0, help="a pod's start until Ready")
    parser.add_argument("--pod-termination-seconds", type=float, default=1.0)
    parser.add_argument("--node-boot-seconds", type=float, default=5.0)
    parser.add_argument("--poke-interval", type=float, default=15.0, help="the registry's poke_interval_seconds")
    parser.add_argument("--validation-interval", type=int, default=10)
    parser.add_argument("--unmanaged-pods", type=int, default=0, help="pods with no controller on the node: the drain refuses them (as kubectl drain does without --force)")
    parser.add_argument("--drain-timeout", type=int, default=1800, help="the run's drain_timeout_seconds: past it the drain fails, and so does the benchmark")
    parser.add_argument("--max-seconds", type=float, default=2400.0, help="give up on a mode after this long")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # Not figures: evictions in parallel outgrowing the client's connection pool (a filter, which
    # Airflow's logging configuration, applied later, leaves in place).
    logging.getLogger("urllib3.connectionpool").addFilter(lambda record: "Connection pool is full" not in record.getMessage())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r}: {', '.join(MODES)}")
            try:
                results.append(run_mode(mode, args, Path(tmp)))
            except Refused as exc:
                print(f"{mode}: the code under test refused to act, no figures: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
    report(args, results)


if __name__ == "__main__":
    main()
