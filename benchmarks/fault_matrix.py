"""Fault matrix: each DAG under each injected fault, judged from the cluster and AWS, not the DAG.

Every cell is one real run of a DAG (``dag.test``, as tests/integration/harness.py's DagRunner runs
it) against a fresh sandbox world (one cluster, moto behind an AWS fault proxy), in a worker process
that is killed if the cell outlasts its wall-clock bound. While the DAG runs, the fault is on: Kubernetes API 500s or 429s (with
Retry-After) on any request at a rate, latency on every request, watches cut, an eviction a PDB
blocks for ever, a replacement node that never becomes Ready, a kubelet that dies mid-drain, EC2 and
Auto Scaling errors or throttling at a rate (``sandbox/aws_faults.py``). Then the faults stop and the
cell reads the end state:

- **converged**: the intended end state is reached (node replaced, stale Jobs gone and a Job on the
  current image for each CronJob, every workload restarted and rolled out) and nothing below is broken;
- **failed safely**: not converged, the run failed with a reason (its first task error), and nothing
  below is broken;
- **unsafe**: any of: a node left cordoned (or kept off the cluster autoscaler), an instance the DAG
  asked AWS to terminate twice (its SDK's retries of one call count once) or one outside the plan, a
  group's desired capacity changed, an Auto Scaling process or the run's tag left on a group, a PDB
  below its minimum or more nodes out of service than the batch (the sandbox's invariants monitor),
  a lock renewed after the run or held with no expiry, a Job created twice (or beside one already
  on the current image) or one not stale deleted, a workload restarted twice or outside the chosen
  namespaces, a write in a protected namespace, or a run that said success without the end state;
- **timeout**: the cell did not finish within its bound (killed; counted as a failure of the matrix);
- **error**: the cell itself broke (counted as a failure of the matrix).

Retries: task tries beyond the first, the Kubernetes client's own retries (its "retrying in" log
lines) and botocore's (requests the AWS proxy saw with attempt > 1).

Prints a table (DAG x fault x rate -> outcome, reason, retries, wall time); exits 1 if a cell is
unsafe, timed out or broke. ``--self-check`` adds one run per DAG whose end state is sabotaged after
the run: each must be judged unsafe (else exit 1), so a green matrix comes from a judge that can fail.
    .venv/bin/python benchmarks/fault_matrix.py [--reduced] [--dag NAME ...] [--fault NAME ...]
        [--jobs 3] [--bound SECONDS] [--self-check] [--keep] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

DAGS = ("node_replacement", "cronjob_refresh", "rollout_restart")
# fault -> (rates, the DAGs it applies to, what it is). A rate is a share of requests, except for
# latency (seconds per request) and watch-cut (after N events: "1ev", or N seconds: "2s").
K8S = DAGS
NODES_ONLY = ("node_replacement",)
FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "none": (("-",), K8S, "no fault (baseline)"),
    "api-500": (("0.05", "0.2", "0.5"), K8S, "Kubernetes API answers 500 to this share of requests (any verb)"),
    "api-429": (("0.05", "0.2", "0.5"), K8S, "Kubernetes API answers 429 with Retry-After: 1 to this share of requests"),
    "latency": (("0.05", "0.2"), K8S, "every Kubernetes API request takes this many more seconds"),
    "watch-cut": (("1ev", "2s"), K8S, "every watch stream is closed after one event / two seconds"),
    "eviction-blocked": (("-",), NODES_ONLY, "a PDB of a pod on the node never allows an eviction"),
    "node-never-ready": (("-",), NODES_ONLY, "the replacement node never becomes Ready"),
    "kubelet-dies": (("-",), NODES_ONLY, "the node's kubelet dies at the drain's first eviction"),
    "aws-500": (("0.05", "0.2", "0.5"), NODES_ONLY, "EC2/Auto Scaling answer 500 to this share of requests (before acting)"),
    "aws-500-lost": (("0.2",), NODES_ONLY, "EC2/Auto Scaling act on this share of requests, then answer 500 (answer lost)"),
    "aws-throttle": (("0.05", "0.2", "0.5"), NODES_ONLY, "EC2 RequestLimitExceeded / Auto Scaling Throttling on this share of requests"),
}
REDUCED = {
    ("node_replacement", "api-500", "0.2"),
    ("node_replacement", "aws-500-lost", "0.2"),
    ("cronjob_refresh", "api-429", "0.2"),
    ("rollout_restart", "watch-cut", "1ev"),
}
# Wall-clock bound of a cell (setup, run, settling, judging), seconds.
BOUND = {"node_replacement": 300, "cronjob_refresh": 240, "rollout_restart": 240}
FAILING_OUTCOMES = ("unsafe", "timeout", "error")


@dataclass
class Cell:
    dag: str
    fault: str
    rate: str
    sabotage: bool = False  # break the invariants after the run: the judge must call it unsafe

    @property
    def key(self) -> str:
        return f"{self.dag}/{self.fault}/{self.rate}" + ("/sabotaged" if self.sabotage else "")


@dataclass
class Outcome:
    dag: str
    fault: str
    rate: str
    outcome: str
    reason: str = ""
    run_state: str = ""
    task_retries: int = 0
    k8s_retries: int = 0
    aws_retries: int = 0
    faults_injected: int = 0
    run_seconds: float = 0.0
    cell_seconds: float = 0.0
    cpu_seconds: float = 0.0
    unsafe: list[str] = field(default_factory=list)
    sabotaged: bool = False


def all_cells(reduced: bool, dags: list[str] | None, faults: list[str] | None) -> list[Cell]:
    cells = []
    for dag in DAGS:
        for fault, (rates, applies, _) in FAULTS.items():
            for rate in rates:
                if dag not in applies or (dags and dag not in dags) or (faults and fault not in faults):
                    continue
                if reduced and (dag, fault, rate) not in REDUCED:
                    continue
                cells.append(Cell(dag, fault, rate))
    return cells


# =============================================================================== the parent: the matrix
def airflow_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), str(ROOT / "tests" / "integration")]),
    }


def make_template_db(workdir: Path) -> None:
    """One fresh Airflow metadata database, copied for every cell (a cell's runs never meet)."""
    home = workdir / "template"
    home.mkdir(parents=True)
    code = "from airflow.utils import db; db.resetdb()"
    proc = subprocess.run([sys.executable, "-c", code], env=airflow_env(home), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"could not create the Airflow database:\n{proc.stderr[-3000:]}")


class Worker:
    """A process running cells one at a time (Airflow and the sandbox imported once), each cell with
    a fresh sandbox world and moto. A cell past its bound gets the process killed (its cells'
    threads with it) and reported as a timeout; the next cell gets a new process."""

    def __init__(self, workdir: Path, index: int) -> None:
        self.workdir = workdir
        self.index = index
        self.spawned = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.spawned += 1
        home = self.workdir / f"worker{self.index}-{self.spawned}"
        home.mkdir(parents=True)
        shutil.copy(self.workdir / "template" / "airflow.db", home / "airflow.db")
        self.log_file = home / "worker.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        with open(self.log_file, "wb") as log:
            return subprocess.Popen(cmd, env=airflow_env(home), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)

    def run(self, cell: Cell) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._spawn()
        cell_dir = self.workdir / cell.key.replace("/", "__")
        cell_dir.mkdir(parents=True)
        result_file = cell_dir / "result.json"
        started = time.monotonic()
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({**asdict(cell), "dir": str(cell_dir)}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = started + BOUND[cell.dag]
        while not result_file.exists():
            if self.proc.poll() is not None:
                tail = " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
                self.proc = None
                return Outcome(cell.dag, cell.fault, cell.rate, "error", f"the worker died: {tail} (log: {self.log_file})", cell_seconds=time.monotonic() - started)
            if time.monotonic() > deadline:
                self.stop(kill=True)
                return Outcome(cell.dag, cell.fault, cell.rate, "timeout", f"no result within {BOUND[cell.dag]} s (logs: {cell_dir})", cell_seconds=time.monotonic() - started)
            time.sleep(0.2)
        outcome = Outcome(**json.loads(result_file.read_text()))
        outcome.cell_seconds = time.monotonic() - started
        return outcome

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if not kill and self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                kill = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def run_cells(cells: list[Cell], workdir: Path, jobs: int, report: Callable[[Outcome], None]) -> list[Outcome]:
    """The cells over ``jobs`` workers, the slowest DAG's first; outcomes in the cells' order."""
    queue = sorted(cells, key=lambda c: -BOUND[c.dag])
    lock = threading.Lock()
    outcomes: dict[str, Outcome] = {}

    def work(index: int) -> None:
        worker = Worker(workdir, index)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    cell = queue.pop(0)
                try:
                    outcome = worker.run(cell)
                except Exception as exc:  # noqa: BLE001 - one broken cell must not hide the others
                    worker.stop(kill=True)
                    outcome = Outcome(cell.dag, cell.fault, cell.rate, "error", f"{type(exc).__name__}: {exc}")
                outcome.sabotaged = cell.sabotage
                with lock:
                    outcomes[cell.key] = outcome
                    report(outcome)
        finally:
            worker.stop()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(max(1, min(jobs, len(cells))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [outcomes[c.key] for c in cells]


def short(reason: str, width: int = 150) -> str:
    reason = reason.replace("|", "/")
    return reason if len(reason) <= width else reason[: width - 3] + "..."


def print_table(outcomes: list[Outcome]) -> None:
    header = ("DAG", "fault", "rate", "outcome", "retries (task/k8s/aws)", "faults", "run s", "reason")
    rows = [
        (o.dag, o.fault + (" (sabotaged)" if o.sabotaged else ""), o.rate, o.outcome, f"{o.task_retries}/{o.k8s_retries}/{o.aws_retries}", str(o.faults_injected), f"{o.run_seconds:.0f}", short(o.reason))
        for o in outcomes
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header[:-1])]
    line = lambda cols: "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " | " + cols[-1] + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    for row in rows:
        print(line(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="a few cells per DAG (make test); default: the full matrix")
    parser.add_argument("--dag", action="append", choices=DAGS, help="only this DAG (repeatable)")
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="only this fault (repeatable)")
    parser.add_argument("--jobs", type=int, default=3, help="cells run side by side (default 3: a cell mostly waits, on pokes, boots and backoffs)")
    parser.add_argument("--bound", type=float, help="every cell's wall-clock bound in seconds (default: 300 for node replacement, 240 for the others)")
    parser.add_argument("--keep", action="store_true", help="keep the cells' logs and databases (their directory is printed)")
    parser.add_argument("--json", type=Path, help="also write the outcomes to this JSON file")
    parser.add_argument("--self-check", action="store_true", help="also run each chosen DAG once more without faults and break, after the run, what the judge checks (a node cordoned, an instance terminated, a Job created twice ...): those cells must come out unsafe")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_loop()

    cells = all_cells(args.reduced, args.dag, args.fault)
    if args.self_check:
        cells += [Cell(dag, "none", "-", sabotage=True) for dag in DAGS if not args.dag or dag in args.dag]
    if not cells:
        parser.error("no cell matches these filters")
    if args.bound:
        BOUND.update({dag: args.bound for dag in BOUND})
    workdir = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    started = time.monotonic()
    print(f"fault matrix: {len(cells)} cells, {args.jobs} at a time (cells in {workdir})", flush=True)
    failing = True
    try:
        make_template_db(workdir)
        report = lambda o: print(f"  {o.dag}/{o.fault}/{o.rate}{' (sabotaged)' if o.sabotaged else ''}: {o.outcome} ({o.cell_seconds:.0f} s, {o.cpu_seconds:.0f} s CPU) {o.reason}", flush=True)  # noqa: E731
        ordered = run_cells(cells, workdir, args.jobs, report)
        print()
        print_table(ordered)
        counts = {name: sum(1 for o in ordered if o.outcome == name and not o.sabotaged) for name in ("converged", "failed safely", "unsafe", "timeout", "error")}
        print()
        print("cells: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
        print(f"wall time: {time.monotonic() - started:.0f} s ({args.jobs} at a time); CPU time of the cells: {sum(o.cpu_seconds for o in ordered):.0f} s")
        for o in ordered:
            if o.outcome == "unsafe" and not o.sabotaged:
                print(f"UNSAFE {o.dag}/{o.fault}/{o.rate}: " + "; ".join(o.unsafe))
        if args.json:
            args.json.write_text(json.dumps([asdict(o) for o in ordered], indent=1))
        matrix = [o for o in ordered if not o.sabotaged]
        failing = any(o.outcome in FAILING_OUTCOMES for o in matrix)
        if args.self_check:
            missed = [o.dag for o in ordered if o.sabotaged and o.outcome != "unsafe"]
            print("self-check: " + (f"sabotage NOT CAUGHT in {', '.join(missed)}" if missed else "the sabotaged runs of " + ", ".join(o.dag for o in ordered if o.sabotaged) + " were all judged unsafe"))
            failing = failing or bool(missed)
        return 1 if failing else 0
    finally:
        if args.keep or failing:
            print(f"cells kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def worker_loop() -> int:
    """Cells from stdin, one JSON object a line; each cell's outcome to <its dir>/result.json."""
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        cell_dir = Path(spec.pop("dir"))
        cpu = time.process_time()
        try:
            outcome = run_cell(Cell(**spec), cell_dir)
        except Exception as exc:  # noqa: BLE001 - reported as the cell's error
            import traceback

            traceback.print_exc()
            outcome = Outcome(spec["dag"], spec["fault"], spec["rate"], "error", f"{type(exc).__name__}: {exc}"[:300])
        outcome.cpu_seconds = time.process_time() - cpu
        outcome.sabotaged = bool(spec.get("sabotage"))
        tmp = cell_dir / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(outcome)))
        tmp.rename(cell_dir / "result.json")
    return 0


# ===================================================================================== the child: a cell
LEASES = "leases.coordination.k8s.io"
SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
LOCK = ("kube-maintenance", "kube-maintenance-lock")
OUR_AGENT = "kube-maintenance"
DAY = 86400.0


class FdCapture:
    """What the run writes to stdout and stderr (task logs go there through structlog), as pytest's capfd."""

    def __enter__(self) -> "FdCapture":
        sys.stdout.flush()
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", "replace")
        self.file.close()


def first_error(text: str) -> str:
    """The run's first task error, short (the exception line a failed try's log ends with), ahead
    of the cleanup's "the run did not complete" that only points back at it."""
    errors = [m.group(1) + ": " + m.group(2).strip() for m in re.finditer(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", text, re.MULTILINE)]
    errors = [e for e in errors if "retrying in" not in e]
    causes = [e for e in errors if "the run did not complete" not in e]
    return ((causes or errors or [""])[0])[:200]


class Judge:
    """Collects what a cell found wrong (unsafe) and what it did not reach (not converged)."""

    def __init__(self) -> None:
        self.unsafe: list[str] = []
        self.missing: list[str] = []
        self.notes: list[str] = []

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.unsafe.append(problem)

    def reached(self, ok: bool, what: str) -> None:
        if not ok:
            self.missing.append(what)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_cell(cell: Cell, workdir: Path) -> Outcome:
    from harness import fast_world_config, registry_for
    from sandbox.__main__ import airflow_connections
    from sandbox.aws_faults import AwsFaultProxy
    from sandbox.scenario import start_world

    world = start_world(workdir / "sandbox", ("staging",), fast_world_config())
    proxy = AwsFaultProxy(world.moto_url).start()
    try:
        connections = airflow_connections(world)
        for variable, connection in connections.items():
            if variable.startswith("AIRFLOW_CONN_AWS_"):
                connection["extra"]["endpoint_url"] = proxy.url  # the DAG's AWS traffic goes through the fault proxy
            os.environ[variable] = json.dumps(connection)
        scenario = SCENARIOS[cell.dag](world, proxy)
        registry = registry_for(world, lock_namespace=None, **{cell.dag: scenario.settings})
        (workdir / "clusters.json").write_text(json.dumps(registry))
        os.environ["KUBE_MAINTENANCE_REGISTRY"] = str(workdir / "clusters.json")
        cluster = world.clusters["staging"].cluster
        scenario.prepare()
        cluster.monitor.reset()
        seq = len(cluster.requests)
        stop_faults = apply_fault(cell, world, proxy, scenario)
        started = time.monotonic()
        try:
            state, tries, messages, output = run_dag(cell.dag, scenario.conf)
        finally:
            stop_faults()
            cluster.faults.clear()
            proxy.faults.clear()
        run_seconds = time.monotonic() - started
        if cell.sabotage:
            scenario.sabotage()
        text = "\n".join(messages)
        (workdir / "run.log").write_text(text + "\n" + output)
        judge = Judge()
        converged = scenario.judge(judge, seq, state)
        common_invariants(judge, world, proxy, seq, scenario)
        if state == "success" and not converged:
            judge.unsafe.append("the run reported success without the end state: " + "; ".join(judge.missing))
        reason = first_error(text + "\n" + output) if state != "success" else ""
        if judge.unsafe:
            outcome = "unsafe"
            reason = "; ".join(judge.unsafe)
        elif converged:
            outcome = "converged"
            reason = f"run {state}: {reason}" if state != "success" else ""
        else:
            outcome = "failed safely"
            reason = reason or f"run {state}, no error found in its logs"
        if judge.notes:
            reason = "; ".join(filter(None, [reason, *judge.notes]))
        ours = [r for r in cluster.requests.since(seq) if OUR_AGENT in r.user_agent]
        k8s_faults = sum(1 for r in ours if r.code in (429, 500, 503))
        aws_faults = sum(1 for r in proxy.faults.log() if r.injected)
        return Outcome(
            cell.dag,
            cell.fault,
            cell.rate,
            outcome,
            reason,
            state,
            task_retries=tries,
            k8s_retries=len(re.findall(r": (?:\d{3}|.+), retrying in [\d.]+s", text)),
            aws_retries=proxy.faults.retries(),
            faults_injected=k8s_faults + aws_faults,
            run_seconds=run_seconds,
            unsafe=judge.unsafe,
        )
    finally:
        proxy.stop()
        world.stop()


def run_dag(dag_name: str, conf: dict[str, Any]) -> tuple[str, int, list[str], str]:
    """One run through ``dag.test`` (tasks in process, sensors rescheduled, triggers run inline):
    the run's state, its task tries beyond the first, its log records (through the root logger)
    and everything it wrote to stdout and stderr (the task logs, through structlog)."""
    import logging
    import runpy

    dags = runpy.run_path(str(ROOT / "dags" / f"{dag_name}.py"))
    dag = dags[f"{dag_name}__staging"]
    messages: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Capture(logging.INFO)
    logging.getLogger().addHandler(handler)
    try:
        with FdCapture() as captured:
            dag_run = dag.test(run_conf=conf)
    finally:
        logging.getLogger().removeHandler(handler)
    tries = sum(max(0, (ti.try_number or 1) - 1) for ti in dag_run.get_task_instances())
    return str(getattr(dag_run.state, "value", dag_run.state)), tries, messages, captured.text


# ------------------------------------------------------------------------------------------ faults
def apply_fault(cell: Cell, world: Any, proxy: Any, scenario: "Scenario") -> Callable[[], None]:
    """Switch the cell's fault on; returns what switches off what outlives the configuration."""
    cluster = world.clusters["staging"].cluster
    fault, rate = cell.fault, cell.rate
    if fault == "api-500":
        cluster.faults.configure({"errors": [{"code": 500, "rate": float(rate)}]})
    elif fault == "api-429":
        cluster.faults.configure({"errors": [{"code": 429, "rate": float(rate)}]})
    elif fault == "latency":
        cluster.faults.configure({"latency_seconds": float(rate)})
    elif fault == "watch-cut":
        key = "watch_cut_after_events" if rate.endswith("ev") else "watch_cut_after_seconds"
        cluster.faults.configure({key: float(rate.rstrip("evs")) if key.endswith("seconds") else int(rate.rstrip("ev"))})
    elif fault == "eviction-blocked":
        cluster.faults.configure({"blocked_pdbs": [scenario.blocked_pdb]})
    elif fault == "node-never-ready":
        cluster.faults.configure({"never_ready_nodes": 1})
    elif fault == "kubelet-dies":
        return kill_kubelet_at_first_eviction(cluster, scenario.victim_node)
    elif fault in ("aws-500", "aws-500-lost", "aws-throttle"):
        kind = "throttle" if fault == "aws-throttle" else "error"
        proxy.faults.configure([{"kind": kind, "rate": float(rate), "when": "after" if fault == "aws-500-lost" else "before"}])
    elif fault != "none":
        raise ValueError(f"unknown fault {fault}")
    return lambda: None


def kill_kubelet_at_first_eviction(cluster: Any, node: str) -> Callable[[], None]:
    """The node's kubelet stops posting status as soon as the drain evicts its first pod."""
    from sandbox.controllers.nodes import mark_node_not_ready

    done = threading.Event()
    seq = len(cluster.requests)

    def watch() -> None:
        while not done.is_set():
            if any(r.resource == "pods/eviction" and r.code == 201 and OUR_AGENT in r.user_agent for r in cluster.requests.since(seq)):
                mark_node_not_ready(cluster, node)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=2)

    return stop


# ----------------------------------------------------------------------------------- AWS, directly
def aws(world: Any, service: str) -> Any:
    from sandbox.aws import aws_client

    return aws_client(service, world.moto_url, world.region("staging"))


def groups(world: Any) -> dict[str, dict[str, Any]]:
    return {g["AutoScalingGroupName"]: g for g in aws(world, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]}


def instance_states(world: Any) -> dict[str, str]:
    return {i["InstanceId"]: i["State"]["Name"] for r in aws(world, "ec2").describe_instances()["Reservations"] for i in r["Instances"]}


def common_invariants(judge: Judge, world: Any, proxy: Any, seq: int, scenario: "Scenario") -> None:
    """What no run may break, whatever it is: the invariants monitor, the lock, protected namespaces."""
    cluster = world.clusters["staging"].cluster
    report = cluster.monitor.report()
    for violation in report["violations"]:
        if scenario.allows(violation):
            judge.notes.append(f"allowed: {violation['kind']}: {violation['detail']}")
            continue
        judge.unsafe.append(f"{violation['kind']}: {violation['detail']}")
    if report["max_nodes_out_of_service"] > scenario.nodes_out_of_service_budget:
        judge.unsafe.append(f"{report['max_nodes_out_of_service']} nodes out of service at once (budget {scenario.nodes_out_of_service_budget})")
    lease = cluster.store.try_get(LEASES, *LOCK)
    if lease is not None:
        spec = lease.get("spec") or {}
        if not spec.get("leaseDurationSeconds"):
            judge.unsafe.append("the lock is left held with no expiry")
        else:
            renewed = spec.get("renewTime")
            time.sleep(1.5)
            again = (cluster.store.try_get(LEASES, *LOCK) or {}).get("spec", {}).get("renewTime")
            if again != renewed:
                judge.unsafe.append("the lock is still renewed after the run ended")
            else:
                judge.notes.append(f"lock left to expire ({spec['leaseDurationSeconds']} s)")
    for name, group in groups(world).items():
        if group.get("SuspendedProcesses"):
            judge.unsafe.append(f"{name}: processes left suspended: {sorted(p['ProcessName'] for p in group['SuspendedProcesses'])}")


# -------------------------------------------------------------------------------------- scenarios
class Scenario:
    settings: dict[str, Any] = {}
    conf: dict[str, Any] = {}
    nodes_out_of_service_budget = 1
    victim_node = ""
    blocked_pdb = ""

    def __init__(self, world: Any, proxy: Any) -> None:
        self.world = world
        self.proxy = proxy
        self.cluster = world.clusters["staging"].cluster
        self.store = self.cluster.store

    def prepare(self) -> None:
        pass

    def allows(self, violation: dict[str, Any]) -> bool:
        """A violation the monitor records that this operation's runbook calls for (none by default)."""
        return False

    def judge(self, judge: Judge, seq: int, state: str) -> bool:
        raise NotImplementedError

    def sabotage(self) -> None:
        """What a broken run could leave behind, done after the run (``--self-check``)."""
        raise NotImplementedError

    def api(self, method: str, path: str, body: dict[str, Any]) -> None:
        """A request to the cluster's API as the DAGs' client makes it (same user agent)."""
        import urllib.request

        request = urllib.request.Request(self.cluster.url + path, data=json.dumps(body).encode(), method=method,
                                         headers={"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json", "User-Agent": "kube-maintenance/sabotage"})
        with urllib.request.urlopen(request, timeout=10):
            pass


class NodeReplacement(Scenario):
    """Replace one general node carrying a PDB-guarded pod (replaced in place: terminated in its
    group, which launches the replacement)."""

    settings = {
        "retries": 1,
        "retry_delay_seconds": 1,
        "poke_interval_seconds": 1,
        "defaults": {"validation_interval_seconds": 1, "drain_timeout_seconds": 25, "replacement_timeout_seconds": 40, "validation_timeout_seconds": 40},
    }

    def prepare(self) -> None:
        from sandbox.resources import DEPLOYMENTS, NODES, PDBS, PODS

        store = self.store
        pdb = next(p for p in store.iter(PDBS, "shop") if p["metadata"]["name"] == "storefront-web")
        selector = pdb["spec"]["selector"]["matchLabels"]
        self.blocked_pdb = f"shop/{pdb['metadata']['name']}"
        guarded = {p["spec"]["nodeName"] for p in store.iter(PODS, "shop") if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())}
        general = sorted(n["metadata"]["name"] for n in store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general")
        self.victim_node = next(n for n in general if n in guarded)
        self.victim_instance = store.get(NODES, None, self.victim_node)["spec"]["providerID"].rsplit("/", 1)[1]
        self.nodes_before = len(list(store.iter(NODES)))
        self.instances_before = instance_states(self.world)
        self.desired_before = {name: g["DesiredCapacity"] for name, g in groups(self.world).items()}
        self.replicas_before = {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d["spec"].get("replicas") for d in store.iter(DEPLOYMENTS)}
        self.conf = {"dry_run": False, "force_unmanaged_pods": True, "delete_emptydir_data": True, "node_names": [self.victim_node],
                     "pod_grace_period_seconds": 1, "skip_wait_for_delete_timeout_seconds": 2}

    def allows(self, violation: dict[str, Any]) -> bool:
        # Draining the node evicts every pod on it that is not a DaemonSet's or a mirror pod,
        # kube-system's included (CoreDNS lands on any node), through the Eviction API under the
        # pods' budgets, as `kubectl drain` does. Any other write in a protected namespace, or an
        # eviction from another node, stays unsafe.
        return violation["kind"] == "protected-namespace" and violation["detail"].startswith("create pods/eviction ") and violation.get("node") == self.victim_node

    def judge(self, judge: Judge, seq: int, state: str) -> bool:
        from sandbox import podutil
        from sandbox.resources import DEPLOYMENTS, NODES

        store = self.store

        def ready_nodes() -> int:
            return sum(1 for n in store.iter(NODES) if podutil.is_node_ready(n) and not n["spec"].get("unschedulable"))

        def replaced() -> bool:
            gone = instance_states(self.world).get(self.victim_instance) in ("shutting-down", "terminated", None)
            node = store.try_get(NODES, None, self.victim_node)
            node_gone = node is None or node["spec"].get("providerID", "").rsplit("/", 1)[-1] != self.victim_instance
            return gone and node_gone and ready_nodes() >= self.nodes_before

        def available() -> list[str]:
            return [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in store.iter(DEPLOYMENTS) if d.get("status", {}).get("availableReplicas", 0) < d["spec"].get("replicas", 1)]

        # The cloud and the cluster settle after the run (a terminated node goes away, pods start).
        is_replaced = wait_until(replaced, 20 if state == "success" else 5)
        judge.reached(is_replaced, f"node {self.victim_node} not replaced")
        if is_replaced:
            judge.reached(wait_until(lambda: available() == [], 20), f"deployments not available: {available()}")
        cordoned = [n["metadata"]["name"] for n in store.iter(NODES) if n["spec"].get("unschedulable")]
        if cordoned:
            wait_until(lambda: not [n for n in store.iter(NODES) if n["spec"].get("unschedulable") and n["metadata"]["name"] in cordoned and podutil.is_node_ready(n)], 10)
            cordoned = [n["metadata"]["name"] for n in store.iter(NODES) if n["spec"].get("unschedulable") and podutil.is_node_ready(n)]
        judge.check(not cordoned, f"node(s) left cordoned: {cordoned}")
        # Two termination calls for one instance (the SDK's retries of a call are one call).
        for iid, count in self.proxy.faults.termination_calls().items():
            judge.check(count <= 1, f"instance {iid}: {count} termination calls")
            judge.check(iid == self.victim_instance, f"instance {iid} terminated, not in the plan")
        now = instance_states(self.world)
        extra = [i for i, s in now.items() if i in self.instances_before and s in ("shutting-down", "terminated") and i != self.victim_instance and self.instances_before[i] not in ("shutting-down", "terminated")]
        judge.check(not extra, f"instances terminated outside the plan: {extra}")
        desired = {name: g["DesiredCapacity"] for name, g in groups(self.world).items()}
        judge.check(desired == self.desired_before, f"desired capacity changed: {self.desired_before} -> {desired}")
        # The run's own marks undone: the cluster autoscaler allowed again on every node (none had
        # the mark before), Auto Scaling's record of what the run suspended gone.
        marked = [n["metadata"]["name"] for n in store.iter(NODES) if SCALE_DOWN_DISABLED in (n["metadata"].get("annotations") or {}) and podutil.is_node_ready(n)]
        judge.check(not marked, f"cluster autoscaler still kept off node(s): {marked}")
        tagged = sorted(f"{name}:{t['Key']}" for name, g in groups(self.world).items() for t in g.get("Tags") or () if t["Key"].startswith("kube-maintenance.io/"))
        judge.check(not tagged, f"run's tags left on Auto Scaling groups: {tagged}")
        scaled = {ref: (was, store.get(DEPLOYMENTS, *ref.split("/"))["spec"].get("replicas")) for ref, was in self.replicas_before.items()}
        changed = {ref: f"{was}->{now}" for ref, (was, now) in scaled.items() if was != now}
        if changed:
            judge.notes.append(f"replicas changed: {changed}")
        return not judge.missing

    def sabotage(self) -> None:
        import boto3

        from sandbox import podutil
        from sandbox.aws import FAKE_CREDENTIALS
        from sandbox.resources import NODES

        cordoned, terminated = [n for n in self.store.iter(NODES) if n["metadata"]["name"] != self.victim_node and podutil.is_node_ready(n)][:2]
        self.api("PATCH", f"/api/v1/nodes/{cordoned['metadata']['name']}", {"spec": {"unschedulable": True}, "metadata": {"annotations": {SCALE_DOWN_DISABLED: "true"}}})
        ec2 = boto3.client("ec2", endpoint_url=self.proxy.url, region_name=self.world.region("staging"), **FAKE_CREDENTIALS)
        ec2.terminate_instances(InstanceIds=[terminated["spec"]["providerID"].rsplit("/", 1)[1]])
        aws(self.world, "autoscaling").suspend_processes(AutoScalingGroupName="staging-general", ScalingProcesses=["AZRebalance"])
        self.api("POST", f"/apis/coordination.k8s.io/v1/namespaces/{LOCK[0]}/leases", {"metadata": {"name": LOCK[1]}, "spec": {"holderIdentity": "sabotage"}})


class CronJobRefresh(Scenario):
    """The demo's two CronJobs whose running Job is on an old image, made Allow and run-forever:
    delete each stale Job and start one fresh Job from each CronJob."""

    settings = {"retries": 1, "retry_delay_seconds": 1, "poke_interval_seconds": 1}
    conf = {"dry_run": False, "create_fresh_job": True, "pods_gone_timeout_seconds": 60}
    SEEDED = {"payments": "settlement-export", "search": "catalog-reindex"}

    def prepare(self) -> None:
        from sandbox.config import RUN_SECONDS_ANNOTATION
        from sandbox.resources import CRONJOBS, JOBS

        store = self.store
        for namespace, name in self.SEEDED.items():
            def forever_and_allow(cron: dict[str, Any]) -> None:
                template = cron["spec"]["jobTemplate"]["spec"]["template"]
                template.setdefault("metadata", {}).setdefault("annotations", {})[RUN_SECONDS_ANNOTATION] = "forever"
                cron["spec"]["concurrencyPolicy"] = "Allow"
            store.mutate(CRONJOBS, namespace, name, forever_and_allow)
        self.crons = {f"{ns}/{name}": store.get(CRONJOBS, ns, name) for ns, name in self.SEEDED.items()}
        uids = {c["metadata"]["uid"] for c in self.crons.values()}
        self.stale = {
            f"{j['metadata']['namespace']}/{j['metadata']['name']}": j["metadata"]["uid"]
            for j in store.iter(JOBS)
            if (j["metadata"].get("ownerReferences") or [{}])[0].get("uid") in uids
            and not any(c.get("type") == "Complete" for c in j.get("status", {}).get("conditions") or ())
        }
        assert len(self.stale) == 2, self.stale
        self.jobs_before = {f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in store.iter(JOBS)}

    def fresh_jobs(self, cron: dict[str, Any]) -> list[str]:
        from kube_maintenance.cronjob_refresh.decisions import REFRESH_OF_ANNOTATION
        from sandbox.resources import JOBS

        return [
            j["metadata"]["name"]
            for j in self.store.iter(JOBS, cron["metadata"]["namespace"])
            if REFRESH_OF_ANNOTATION in (j["metadata"].get("annotations") or {})
            and any(r.get("uid") == cron["metadata"]["uid"] and r.get("controller") for r in j["metadata"].get("ownerReferences") or ())
        ]

    def current_jobs(self, cron: dict[str, Any]) -> list[dict[str, Any]]:
        """The CronJob's running Jobs whose containers run its template's images."""
        from sandbox.resources import JOBS

        def images(pod_spec: dict[str, Any]) -> dict[str, str]:
            return {c["name"]: c.get("image", "") for key in ("initContainers", "containers") for c in pod_spec.get(key) or ()}

        want = images(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        return [
            j
            for j in self.store.iter(JOBS, cron["metadata"]["namespace"])
            if any(r.get("uid") == cron["metadata"]["uid"] for r in j["metadata"].get("ownerReferences") or ())
            and not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in j.get("status", {}).get("conditions") or ())
            and images(j["spec"]["template"]["spec"]) == want
        ]

    def judge(self, judge: Judge, seq: int, state: str) -> bool:
        from kube_maintenance.cronjob_refresh.decisions import FRESH_JOB_OWED_ANNOTATION, JOB_CONTROLLER_UID_LABEL
        from sandbox.resources import CRONJOBS, JOBS, PODS

        store = self.store
        stale_uids = set(self.stale.values())
        stale_pods = lambda: [p["metadata"]["name"] for p in store.iter(PODS) if p["metadata"].get("labels", {}).get(JOB_CONTROLLER_UID_LABEL) in stale_uids]  # noqa: E731
        left = [ref for ref in self.stale if store.try_get(JOBS, *ref.split("/")) is not None]
        judge.reached(not left, f"stale Job(s) left: {left}")
        judge.reached(wait_until(lambda: stale_pods() == [], 10 if not left else 1), f"stale pods left: {stale_pods()}")
        owed = []
        for ref, cron in self.crons.items():
            # A Job on the current image runs: ours, or one the schedule started meanwhile (the
            # refresh then rightly starts none: "a Job on the current image already runs").
            fresh = self.fresh_jobs(cron)
            current = self.current_jobs(cron)
            judge.check(len(fresh) <= 1, f"{ref}: {len(fresh)} fresh Jobs")
            judge.reached(bool(current), f"{ref}: no Job on the current image")
            for name in fresh:
                ours = store.get(JOBS, cron["metadata"]["namespace"], name)["metadata"]["creationTimestamp"]
                earlier = [j["metadata"]["name"] for j in current if j["metadata"]["name"] != name and j["metadata"]["creationTimestamp"] < ours]
                judge.check(not earlier, f"{ref}: fresh Job {name} started beside {earlier}, already on the current image")
            live = store.get(CRONJOBS, *ref.split("/"))
            if FRESH_JOB_OWED_ANNOTATION in (live["metadata"].get("annotations") or {}):
                owed.append(ref)
        judge.reached(not owed, f"still owing a fresh Job: {owed}")
        ours = [r for r in self.cluster.requests.since(seq) if OUR_AGENT in r.user_agent and r.resource == "jobs"]
        created = [r for r in ours if r.verb == "create" and r.code in (200, 201)]
        judge.check(len(created) <= len(self.crons), f"{len(created)} Jobs created for {len(self.crons)} CronJobs")
        deleted = {f"{r.namespace}/{r.name}" for r in ours if r.verb == "delete" and r.code in (200, 202)}
        judge.check(deleted <= set(self.stale), f"Jobs deleted that were not stale: {sorted(deleted - set(self.stale))}")
        return not judge.missing

    def sabotage(self) -> None:
        import copy

        from sandbox.resources import JOBS

        cron = self.crons["payments/settlement-export"]
        fresh = self.fresh_jobs(cron)
        twin = copy.deepcopy(self.store.get(JOBS, "payments", fresh[0]))
        twin["metadata"] = {k: twin["metadata"][k] for k in ("annotations", "ownerReferences", "labels")} | {"name": fresh[0] + "-twin"}
        twin["spec"].pop("selector", None)
        for key in ("batch.kubernetes.io/controller-uid", "controller-uid", "batch.kubernetes.io/job-name", "job-name"):
            twin["metadata"]["labels"].pop(key, None)
            twin["spec"]["template"]["metadata"].get("labels", {}).pop(key, None)
        twin.pop("status", None)
        self.api("POST", "/apis/batch/v1/namespaces/payments/jobs", twin)
        self.api("DELETE", "/apis/batch/v1/namespaces/payments/jobs/ledger-db-migrate-42", {})


class RolloutRestart(Scenario):
    """Restart every workload of shop, payments and observability (Deployments, the ledger-db
    StatefulSet, the fluent-bit DaemonSet), three rollouts at a time."""

    settings = {"retries": 1, "retry_delay_seconds": 1, "poke_interval_seconds": 1}
    conf = {"dry_run": False, "namespaces": ["shop", "payments", "observability"], "max_concurrent_rollouts": 3, "rollout_timeout_seconds": 90, "stuck_pod_seconds": 30}
    nodes_out_of_service_budget = 0

    def workloads(self) -> dict[str, dict[str, Any]]:
        from kube_maintenance.rollout_restart import decisions as rules
        from sandbox.resources import DAEMONSETS, DEPLOYMENTS, STATEFULSETS

        out = {}
        for kind, key in ((rules.DEPLOYMENT, DEPLOYMENTS), (rules.DAEMONSET, DAEMONSETS), (rules.STATEFULSET, STATEFULSETS)):
            for obj in self.store.iter(key):
                out[rules.workload_ref(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return out

    def prepare(self) -> None:
        self.before = self.workloads()
        self.targets = {ref for ref, obj in self.before.items() if obj["metadata"]["namespace"] in self.conf["namespaces"]}

    def judge(self, judge: Judge, seq: int, state: str) -> bool:
        from kube_maintenance.rollout_restart import decisions as rules

        kinds = {k.lower(): k for k in (rules.DEPLOYMENT, rules.DAEMONSET, rules.STATEFULSET)}

        def not_done() -> list[str]:
            now = self.workloads()
            return [ref for ref in sorted(self.targets) if not (rules.restarted_at_value(now[ref]) and rules.rollout_status(now[ref], kinds[ref.split("/")[0]]).done)]

        pending = not_done()
        if pending and state == "success":
            wait_until(lambda: not not_done(), 10)
            pending = not_done()
        judge.reached(not pending, f"not restarted and rolled out: {pending}")
        now = self.workloads()
        for ref, obj in self.before.items():
            bumps = now[ref]["metadata"].get("generation", 0) - obj["metadata"].get("generation", 0)
            if ref in self.targets:
                judge.check(bumps <= 1, f"{ref} restarted {bumps} times")
            else:
                judge.check(bumps == 0, f"{ref} changed, not in the chosen namespaces")
        return not judge.missing

    def sabotage(self) -> None:
        again = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2000-01-01T00:00:00Z"}}}}}
        self.api("PATCH", "/apis/apps/v1/namespaces/shop/deployments/cart-api", again)
        self.api("PATCH", "/apis/apps/v1/namespaces/kube-system/deployments/coredns", again)


SCENARIOS: dict[str, type[Scenario]] = {"node_replacement": NodeReplacement, "cronjob_refresh": CronJobRefresh, "rollout_restart": RolloutRestart}


if __name__ == "__main__":
    sys.exit(main())
