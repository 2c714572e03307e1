"""Namespace-wide rollout restart, whole DAG runs against the sandbox through real Airflow connections."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from kube_maintenance.rollout_restart import decisions as rules
from sandbox.aws import _backdate
from sandbox.cluster import SandboxCluster
from sandbox.config import NEVER_READY_ANNOTATION
from sandbox.monitor import WRITE_VERBS
from sandbox.resources import DAEMONSETS, DEPLOYMENTS, NAMESPACES, PODS, STATEFULSETS
from sandbox.scenario import World
from sandbox.server import ApiServer

from harness import DagRunner, registry_for
from triggerer import BackgroundTriggerer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILE = "rollout_restart.py"
DAG_ID = "rollout_restart__staging"
KEYS = {rules.DEPLOYMENT: DEPLOYMENTS, rules.DAEMONSET: DAEMONSETS, rules.STATEFULSET: STATEFULSETS}
# shop, payments and observability (kube-system gets the label too: it must stay untouched anyway).
SELECTOR = "team in (storefront,payments,platform)"
CHOSEN = ("observability", "payments", "shop")


@pytest.fixture(autouse=True)
def triggerer(monkeypatch: pytest.MonkeyPatch) -> BackgroundTriggerer:
    """Shards wait deferred, side by side, as on a real Airflow (dag.test would run each inline in turn)."""
    return BackgroundTriggerer().install(monkeypatch)


# ------------------------------------------------------------------------------------------- helpers
def staging(world: World) -> SandboxCluster:
    return world.clusters["staging"].cluster


def workloads(cluster: SandboxCluster, namespaces: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """ref -> object for every Deployment, DaemonSet and StatefulSet (of the namespaces)."""
    out = {}
    for kind, key in KEYS.items():
        for obj in cluster.store.iter(key):
            ns = obj["metadata"]["namespace"]
            if namespaces is None or ns in namespaces:
                out[rules.workload_ref(kind, ns, obj["metadata"]["name"])] = obj
    return out


def kind_of(ref: str) -> str:
    return next(k for k in KEYS if k.lower() == ref.split("/")[0])


def pods_of(cluster: SandboxCluster, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Live pods owned by the workload (through its ReplicaSets for a Deployment)."""
    uid = obj["metadata"]["uid"]
    owners = {uid}
    owners |= {rs["metadata"]["uid"] for rs in cluster.store.iter("replicasets.apps", obj["metadata"]["namespace"]) if any(r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or ())}
    return [
        p
        for p in cluster.store.iter(PODS, obj["metadata"]["namespace"])
        if any(r.get("uid") in owners for r in p["metadata"].get("ownerReferences") or ()) and not p["metadata"].get("deletionTimestamp")
    ]


def pod_uids(cluster: SandboxCluster, refs: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    with cluster.store.lock:
        return {ref: {p["metadata"]["uid"] for p in pods_of(cluster, obj)} for ref, obj in refs.items()}


def our_writes(cluster: SandboxCluster, seq: int) -> list[Any]:
    return [r for r in cluster.requests.since(seq) if r.verb in WRITE_VERBS and "kube-maintenance" in r.user_agent]


def label_namespace(cluster: SandboxCluster, name: str, labels: dict[str, str]) -> None:
    cluster.store.mutate(NAMESPACES, None, name, lambda ns: ns["metadata"].setdefault("labels", {}).update(labels))


def add_skippable_workloads(cluster: SandboxCluster) -> set[str]:
    """A paused Deployment in shop, OnDelete StatefulSet in payments and DaemonSet in observability."""
    store = cluster.store

    def template(app: str) -> dict[str, Any]:
        return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": app, "image": f"registry.example/{app}:1"}]}}

    # Paused once rolled out (a Deployment created paused never gets a ReplicaSet at all).
    store.create(DEPLOYMENTS, {"metadata": {"name": "legacy-admin"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "legacy-admin"}}, "template": template("legacy-admin")}}, namespace="shop")
    store.create(
        STATEFULSETS,
        {"metadata": {"name": "archive-db"}, "spec": {"replicas": 1, "serviceName": "archive-db", "updateStrategy": {"type": "OnDelete"}, "selector": {"matchLabels": {"app": "archive-db"}}, "template": template("archive-db")}},
        namespace="payments",
    )
    store.create(
        DAEMONSETS,
        {"metadata": {"name": "legacy-exporter"}, "spec": {"updateStrategy": {"type": "OnDelete"}, "selector": {"matchLabels": {"app": "legacy-exporter"}}, "template": template("legacy-exporter")}},
        namespace="observability",
    )
    return {"deployment/shop/legacy-admin", "statefulset/payments/archive-db", "daemonset/observability/legacy-exporter"}


def settled(cluster: SandboxCluster, refs: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Workloads whose rollout kubectl would not call complete yet (skippable ones aside)."""
    pending = []
    for ref, obj in (refs or workloads(cluster)).items():
        kind = kind_of(ref)
        if rules.skip_reason(obj, kind):
            continue
        if not rules.rollout_status(cluster.store.get(KEYS[kind], obj["metadata"]["namespace"], obj["metadata"]["name"]), kind).done:
            pending.append(ref)
    return pending


@pytest.fixture
def seeded(world: World) -> SandboxCluster:
    cluster = staging(world)
    label_namespace(cluster, "kube-system", {"team": "platform"})
    add_skippable_workloads(cluster)
    assert cluster.wait_for(lambda: settled(cluster) == [] and all(pods_of(cluster, o) for o in workloads(cluster).values()), timeout=60), settled(cluster)
    cluster.store.mutate(DEPLOYMENTS, "shop", "legacy-admin", lambda d: d["spec"].update(paused=True))
    return cluster


# --------------------------------------------------------------------------------------------- tests
def test_restarts_every_workload_of_the_chosen_namespaces_and_nothing_else(dag_runner: DagRunner, world: World, seeded: SandboxCluster) -> None:
    cluster = seeded
    cluster.monitor.reset()
    chosen = workloads(cluster, CHOSEN)
    skippable = {ref for ref, obj in chosen.items() if rules.skip_reason(obj, kind_of(ref))}
    assert skippable == {"deployment/shop/legacy-admin", "statefulset/payments/archive-db", "daemonset/observability/legacy-exporter"}
    targets = {ref: obj for ref, obj in chosen.items() if ref not in skippable}
    assert {r.split("/")[0] for r in targets} == {"deployment", "daemonset", "statefulset"}
    others = {ref: obj for ref, obj in workloads(cluster).items() if ref not in chosen}
    assert any("/kube-system/" in r for r in others) and any("/scratch/" in r for r in others) and any("/search/" in r for r in others)
    before = pod_uids(cluster, chosen | others)
    seq = len(cluster.requests)
    # Looks at least every second (the registry's poke interval): shards wake mid-rollout, deferred,
    # and must pick up where they were.

    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespace_selector": SELECTOR, "max_concurrent_rollouts": 3})
    assert result.state == "success", (result.failed_tasks(), result.errors())

    after = pod_uids(cluster, chosen | others)
    for ref, obj in targets.items():
        live = cluster.store.get(KEYS[kind_of(ref)], obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert rules.restarted_at_value(live), ref
        assert rules.rollout_status(live, kind_of(ref)).done, ref
        assert after[ref] and not (after[ref] & before[ref]), f"{ref}: every pod replaced"
    for ref in skippable | set(others):
        assert after[ref] == before[ref], f"{ref} untouched"
    writes = our_writes(cluster, seq)
    patches = Counter(f"{r.resource}/{r.namespace}/{r.name}" for r in writes if r.verb == "patch")
    assert patches == {f"{kind_of(ref).lower()}s/{ref.split('/', 1)[1]}": 2 for ref in targets}, "per workload a restart and a rolled-out mark, none elsewhere"
    assert {r.resource for r in writes if r.verb != "patch"} == {"leases", "events"}
    for ref, obj in targets.items():
        live = cluster.store.get(KEYS[kind_of(ref)], obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert live["metadata"]["annotations"][rules.ROLLED_OUT_ANNOTATION] == rules.restarted_at_value(live), ref
        # What `kubectl describe` shows: Events about the object (by its uid).
        reasons = sorted(e["reason"] for e in cluster.store.iter("events", obj["metadata"]["namespace"]) if e["involvedObject"].get("uid") == obj["metadata"]["uid"] and e["source"]["component"] == "kube-maintenance")
        assert reasons == ["RolloutComplete", "RolloutRestarted"], (ref, reasons)
    restarts = [line for line in result.audit if line["action"] == "restart"]
    assert sorted(line["target"] for line in restarts) == sorted(targets) and all(line["outcome"] == "done" for line in restarts)
    summary = [line for line in result.audit if line["action"] == "summary"][-1]["after"]
    assert sorted(summary["restarted"]) == sorted(targets)
    assert set(summary["skipped"]) == skippable and "paused" in summary["skipped"]["deployment/shop/legacy-admin"]
    assert "OnDelete" in summary["skipped"]["statefulset/payments/archive-db"]
    assert summary["failed"] == {} and summary["not_completed"] == {} and summary["lock_released"] is True
    assert [v for v in cluster.monitor.report()["violations"] if v["kind"] == "protected-namespace"] == []
    # Real kubectl agrees that every restarted rollout completed.
    if shutil.which("kubectl"):
        env = dict(os.environ, KUBECONFIG=str(world.kubeconfig("staging")))
        for ref in targets:
            kind, ns, name = ref.split("/")
            proc = subprocess.run(["kubectl", "rollout", "status", f"{kind}/{name}", "-n", ns, "--watch=false"], capture_output=True, text=True, env=env, timeout=60)
            live = cluster.store.get(KEYS[kind_of(ref)], ns, name)
            assert (proc.returncode, proc.stdout) == (0, rules.rollout_status(live, kind_of(ref)).message), (ref, proc.stderr)


def break_template(cluster: SandboxCluster, key: str, namespace: str, name: str, **spec: Any) -> None:
    """Pods of the workload's next template never become Ready (and spec fields, e.g. a short progress deadline)."""

    def edit(obj: dict[str, Any]) -> None:
        obj["spec"].update(spec)
        obj["spec"]["template"]["metadata"].setdefault("annotations", {})[NEVER_READY_ANNOTATION] = "true"

    cluster.store.mutate(key, namespace, name, edit)


def break_after_our_restart(cluster: SandboxCluster, key: str, namespace: str, name: str) -> threading.Thread:
    """A bad change landing while our restart rolls: once our restartedAt is on the template, the
    template changes again so every pod made from then on never becomes Ready."""

    def restarted() -> bool:
        return rules.restarted_at_value(cluster.store.get(key, namespace, name)) is not None

    def run() -> None:
        if cluster.wait_for(restarted, timeout=300, interval=0.02):
            break_template(cluster, key, namespace, name)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_rollouts_that_never_become_ready_fail_the_run_naming_them_before_the_timeout(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    # A Deployment whose new pods never become Ready, with a short progress deadline; a StatefulSet
    # whose restart meets a bad template change: its new pod is never Ready (no deadline of its own).
    # The Deployment's deadline is long enough for the StatefulSet's shard to fail first: a failure
    # stops the other shards from starting restarts, but what they started is still followed.
    break_template(cluster, DEPLOYMENTS, "search", "search-api", progressDeadlineSeconds=20)
    breaker = break_after_our_restart(cluster, STATEFULSETS, "payments", "ledger-db")
    # The shards wait deferred side by side, as on a real Airflow (the background triggerer).
    started = time.monotonic()
    result = dag_runner.run(
        DAG_FILE, DAG_ID,
        {"dry_run": False, "namespaces": ["search", "payments"], "max_concurrent_rollouts": 2, "rollout_timeout_seconds": 600, "stuck_pod_seconds": 5},
    )
    elapsed = time.monotonic() - started
    breaker.join(timeout=1)
    assert result.state == "failed"
    assert elapsed < 200, f"failed fast, long before the 600 s timeout ({elapsed:.0f} s)"
    assert sorted(t for t in result.failed_tasks() if t.startswith("restart")) == ["restart[0]", "restart[1]"], result.failed_tasks()
    text = result.text()
    assert 'deployment/search/search-api: deployment "search-api" exceeded its progress deadline' in text
    assert "statefulset/payments/ledger-db: rollout stuck: new pod(s) ledger-db-2 (Running, not Ready" in text
    summary = [line for line in result.audit if line["action"] == "summary"][-1]["after"]
    assert set(summary["failed"]) == {"deployment/search/search-api", "statefulset/payments/ledger-db"}
    assert summary["restarted"] == ["deployment/payments/payments-api"] and summary["lock_released"] is True
    assert cluster.store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock") is None


def test_dry_run_changes_nothing_and_logs_the_plan(dag_runner: DagRunner, world: World, seeded: SandboxCluster) -> None:
    cluster = seeded
    chosen = workloads(cluster, CHOSEN)
    before = pod_uids(cluster, workloads(cluster))
    seq = len(cluster.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "namespace_selector": SELECTOR})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert our_writes(cluster, seq) == []
    assert pod_uids(cluster, workloads(cluster)) == before
    planned = {line["target"] for line in result.audit if line["action"] == "plan-restart"}
    skippable = {ref for ref, obj in chosen.items() if rules.skip_reason(obj, kind_of(ref))}
    assert planned == set(chosen) - skippable
    assert all(line["outcome"] == "planned" and line["dry_run"] for line in result.audit)
    summary = [line for line in result.audit if line["action"] == "summary"][-1]["after"]
    assert set(summary["would_restart"]) == planned and set(summary["skipped"]) == skippable


@pytest.mark.parametrize(
    "conf,message",
    [
        ({"namespaces": ["shop"], "max_concurrent_rollouts": 0}, "Invalid input for param max_concurrent_rollouts: 0 is less than the minimum of 1"),
        ({"namespaces": ["shop", "kube-system"]}, "namespaces: kube-system protected on this cluster"),
        ({"namespaces": ["shpo"]}, "namespaces: no such namespace(s) in the cluster: shpo"),
        ({"namespace_selector": "team in (storefront"}, "namespace_selector: invalid label selector"),
        ({}, "choose the namespaces to restart"),
    ],
)
def test_bad_parameters_fail_before_any_change(dag_runner: DagRunner, world: World, conf: dict[str, Any], message: str) -> None:
    cluster = staging(world)
    seq = len(cluster.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, **conf})
    # Refused by the trigger form's own validation, or by the plan task: either way before any change.
    assert result.state == "rejected" or (result.state == "failed" and result.failed_tasks() == ["cleanup", "plan"]), result.failed_tasks()
    assert message in result.text()
    assert our_writes(cluster, seq) == []


def test_injected_faults_give_the_same_end_state(dag_runner: DagRunner, world: World, seeded: SandboxCluster) -> None:
    cluster = seeded
    chosen = workloads(cluster, CHOSEN)
    targets = {ref: obj for ref, obj in chosen.items() if not rules.skip_reason(obj, kind_of(ref))}
    before = pod_uids(cluster, targets)
    cluster.faults.configure(
        {
            "errors": [
                {"code": 500, "rate": 0.15, "verb": "list"},
                {"code": 429, "rate": 0.3, "verb": "patch"},
                {"code": 503, "rate": 0.2, "verb": "watch"},
                {"code": 503, "rate": 0.1, "verb": "get"},
            ],
            "watch_cut_after_events": 2,
        }
    )
    try:
        result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespace_selector": SELECTOR, "max_concurrent_rollouts": 3})
    finally:
        cluster.faults.clear()
    assert result.state == "success", (result.failed_tasks(), result.errors())
    after = pod_uids(cluster, targets)
    for ref, obj in targets.items():
        live = cluster.store.get(KEYS[kind_of(ref)], obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert rules.restarted_at_value(live) and rules.rollout_status(live, kind_of(ref)).done, ref
        assert after[ref] and not (after[ref] & before[ref]), f"{ref}: every pod replaced"
    restarts = sorted(line["target"] for line in result.audit if line["action"] == "restart")
    assert restarts == sorted(targets), "one restart per workload, faults or not"
    summary = [line for line in result.audit if line["action"] == "summary"][-1]["after"]
    assert sorted(summary["restarted"]) == sorted(targets) and summary["failed"] == {}


def test_rerun_after_a_failure_restarts_only_what_did_not_complete(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    # One shard: search first, then shop, whose cart-api (first by name) never becomes Ready.
    break_template(cluster, DEPLOYMENTS, "shop", "cart-api", progressDeadlineSeconds=2)
    conf = {"dry_run": False, "namespaces": ["search", "shop"], "max_concurrent_rollouts": 1}
    same_run = {"logical_date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)}
    same_run["run_after"] = same_run["logical_date"]
    seq = len(cluster.requests)

    first = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert first.state == "failed" and "restart[0]" in first.failed_tasks(), first.failed_tasks()
    assert [l["target"] for l in first.audit if l["action"] == "restart"] == ["deployment/search/search-api", "deployment/shop/cart-api"]
    first_summary = [l for l in first.audit if l["action"] == "summary"][-1]["after"]
    assert set(first_summary["not_completed"]) == {"deployment/shop/recommendations", "deployment/shop/storefront-web"}
    search_pods = pod_uids(cluster, workloads(cluster, ("search",)))

    # The owner fixes cart-api (its template keeps our restartedAt); the run is cleared and re-run.
    cluster.store.mutate(DEPLOYMENTS, "shop", "cart-api", lambda d: d["spec"]["template"]["metadata"]["annotations"].pop(NEVER_READY_ANNOTATION))
    second = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert second.state == "success", (second.failed_tasks(), second.errors())
    assert sorted(l["target"] for l in second.audit if l["action"] == "restart") == ["deployment/shop/recommendations", "deployment/shop/storefront-web"]
    assert pod_uids(cluster, workloads(cluster, ("search",))) == search_pods, "the healthy, restarted search-api is not bounced twice"
    patches = Counter(f"{r.namespace}/{r.name}" for r in our_writes(cluster, seq) if r.verb == "patch" and r.resource == "deployments")
    assert patches == {n: 2 for n in ("search/search-api", "shop/cart-api", "shop/recommendations", "shop/storefront-web")}, "a restart and a rolled-out mark each"
    summary = [l for l in second.audit if l["action"] == "summary"][-1]["after"]
    assert sorted(summary["restarted"]) == ["deployment/search/search-api", "deployment/shop/cart-api", "deployment/shop/recommendations", "deployment/shop/storefront-web"]
    assert summary["failed"] == {} and summary["not_completed"] == {}


# ------------------------------------------------------------------------------------ issue 12's edges
def stuck_until(cluster: SandboxCluster, key: str, namespace: str, name: str, release: Callable[[], bool]) -> threading.Thread:
    """Our restart of the workload rolls until ``release()``: its new pods are never Ready before."""

    def restarted() -> bool:
        return rules.restarted_at_value(cluster.store.get(key, namespace, name)) is not None

    def run() -> None:
        if cluster.wait_for(restarted, timeout=300, interval=0.02):
            break_template(cluster, key, namespace, name)
            cluster.wait_for(release, timeout=300, interval=0.1)
            cluster.store.mutate(key, namespace, name, lambda o: o["spec"]["template"]["metadata"]["annotations"].pop(NEVER_READY_ANNOTATION, None))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def restarts(result: Any) -> list[str]:
    return [line["target"] for line in result.audit if line["action"] == "restart"]


def summary_of(result: Any) -> dict[str, Any]:
    return [line for line in result.audit if line["action"] == "summary"][-1]["after"]


def backdate_pods(cluster: SandboxCluster, namespaces: tuple[str, ...], days: int = 3) -> None:
    """Pods as old as a real cluster's, not seconds old as the sandbox made them."""
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for ns in namespaces:
        for pod in list(cluster.store.iter(PODS, ns)):
            _backdate(cluster.store, PODS, ns, pod["metadata"]["name"], old)


def test_a_rollout_seen_complete_is_not_failed_by_a_later_dip(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    store = cluster.store
    dipped: list[str] = []

    def search_api_rolled_out() -> bool:
        live = store.get(DEPLOYMENTS, "search", "search-api")
        return bool(rules.restarted_at_value(live)) and rules.rollout_status(live, rules.DEPLOYMENT).done

    def dip_search_api_once_rolled_out() -> None:
        # After search-api's rollout completed, one of its pods fails its readiness probe for the
        # rest of the run: kubectl rollout status would now say "2 of 3 updated replicas are available".
        if not cluster.wait_for(search_api_rolled_out, timeout=120, interval=0.05):
            return
        time.sleep(1)
        pod = pods_of(cluster, store.get(DEPLOYMENTS, "search", "search-api"))[0]

        def unready(p: dict[str, Any]) -> None:
            for cond in p["status"]["conditions"]:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["status"] = "False"

        store.mutate(PODS, "search", pod["metadata"]["name"], unready, subresource="status")
        dipped.append(pod["metadata"]["name"])

    def slow_rollout(name: str, seconds: float) -> None:
        # shop's Deployments each take a while (under the timeout) to roll: the shard (search,
        # then shop, one rollout at a time) lives on long past search-api's timeout.
        marked = time.monotonic

        def restarted() -> bool:
            return rules.restarted_at_value(store.get(DEPLOYMENTS, "shop", name)) is not None

        if cluster.wait_for(restarted, timeout=300, interval=0.02):
            break_template(cluster, DEPLOYMENTS, "shop", name)
            started = marked()
            cluster.wait_for(lambda: marked() - started > seconds, timeout=60, interval=0.1)
            store.mutate(DEPLOYMENTS, "shop", name, lambda o: o["spec"]["template"]["metadata"]["annotations"].pop(NEVER_READY_ANNOTATION, None))

    threads = [threading.Thread(target=dip_search_api_once_rolled_out, daemon=True)]
    threads += [threading.Thread(target=slow_rollout, args=(name, 5), daemon=True) for name in ("cart-api", "recommendations", "storefront-web")]
    for thread in threads:
        thread.start()
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search", "shop"], "max_concurrent_rollouts": 1, "rollout_timeout_seconds": 10})
    for thread in threads:
        thread.join(timeout=5)
    assert dipped, "search-api dipped during the run"
    live = store.get(DEPLOYMENTS, "search", "search-api")
    assert not rules.rollout_status(live, rules.DEPLOYMENT).done, "still dipping at the end"
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert "deployment/search/search-api" in summary_of(result)["restarted"] and summary_of(result)["failed"] == {}
    assert restarts(result).count("deployment/search/search-api") == 1
    marks = [line for line in result.audit if line["action"] == "rolled-out" and line["target"] == "deployment/search/search-api"]
    assert len(marks) == 1 and "successfully rolled out" in marks[0]["before"]


def test_a_new_run_skips_what_was_restarted_or_redeployed_within_the_window(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    backdate_pods(cluster, ("search", "shop", "payments"))
    first = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search", "shop"]})
    assert first.state == "success", (first.failed_tasks(), first.errors())
    assert len(restarts(first)) == 4
    # Someone deploys a new payments-api image: every pod of it is replaced.
    cluster.store.mutate(DEPLOYMENTS, "payments", "payments-api", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="registry.example/payments-api:2"))
    assert cluster.wait_for(lambda: rules.rollout_status(cluster.store.get(DEPLOYMENTS, "payments", "payments-api"), rules.DEPLOYMENT).done and all(
        p["spec"]["containers"][0]["image"].endswith(":2") for p in pods_of(cluster, cluster.store.get(DEPLOYMENTS, "payments", "payments-api"))), timeout=60)
    shop_pods = pod_uids(cluster, workloads(cluster, ("search", "shop")))
    # Pressing Trigger again, for more namespaces, with the option on: only ledger-db is left to do.
    second = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search", "shop", "payments"], "skip_if_restarted_within_minutes": 60})
    assert second.state == "success", (second.failed_tasks(), second.errors())
    assert restarts(second) == ["statefulset/payments/ledger-db"]
    skipped = summary_of(second)["skipped"]
    assert "within skip_if_restarted_within_minutes" in skipped["deployment/shop/cart-api"] and skipped["deployment/shop/cart-api"].startswith("restarted at")
    assert skipped["deployment/payments/payments-api"].startswith("every pod created since")
    assert pod_uids(cluster, workloads(cluster, ("search", "shop"))) == shop_pods, "nothing restarted twice"
    # With the option off, a run restarts what it is told to.
    third = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search"]})
    assert third.state == "success" and restarts(third) == ["deployment/search/search-api"]


def test_a_run_cut_by_its_window_fails_saying_so_and_the_next_run_continues(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    backdate_pods(cluster, ("shop",))
    # A window of one minute, which the run starts early in and outlasts (shop's cart-api rolls
    # until the window has closed).
    now = dt.datetime.now(dt.timezone.utc)
    if now.second > 5:
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.2)
        now = dt.datetime.now(dt.timezone.utc)
    closes = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    registry = registry_for(world)
    for cluster_entry in registry["clusters"]:
        cluster_entry["maintenance_window"] = {"days": [now.strftime("%a").lower()], "start": now.strftime("%H:%M"), "duration_minutes": 1}
    dag_runner.set_registry(registry)
    holder = stuck_until(cluster, DEPLOYMENTS, "shop", "cart-api", lambda: dt.datetime.now(dt.timezone.utc) > closes + dt.timedelta(seconds=2))
    cut = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"], "max_concurrent_rollouts": 1})
    holder.join(timeout=5)
    assert cut.state == "failed", (cut.failed_tasks(), cut.errors())
    assert cut.failed_tasks() == ["cleanup"], "nothing failed but the window: the teardown says the run is incomplete"
    assert "incomplete: the maintenance window closed with 2 workload(s) not restarted" in cut.text()
    assert restarts(cut) == ["deployment/shop/cart-api"]
    summary = summary_of(cut)
    assert summary["restarted"] == ["deployment/shop/cart-api"] and summary["cut_by_window"]
    assert set(summary["not_completed"]) == {"deployment/shop/recommendations", "deployment/shop/storefront-web"}
    # The next run (window open again) skips what the cut run restarted and does the rest.
    dag_runner.set_registry(registry_for(world))
    after = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"], "skip_if_restarted_within_minutes": 60})
    assert after.state == "success", (after.failed_tasks(), after.errors())
    assert restarts(after) == ["deployment/shop/recommendations", "deployment/shop/storefront-web"]


def test_a_failure_stops_every_shard_from_starting_restarts_but_what_started_is_followed(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    store = cluster.store

    def stop_signalled() -> bool:
        lease = store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock")
        return lease is not None and "kube-maintenance.io/stop" in (lease["metadata"].get("annotations") or {})

    seen_stop: list[bool] = []
    gave_up = threading.Event()

    def release() -> bool:
        # cart-api completes once search-api's failure was signalled (or after a minute, if never).
        if stop_signalled():
            seen_stop.append(True)
            return True
        return gave_up.is_set()

    break_template(cluster, DEPLOYMENTS, "search", "search-api", progressDeadlineSeconds=2)
    holder = stuck_until(cluster, DEPLOYMENTS, "shop", "cart-api", release)
    give_up = threading.Timer(60, gave_up.set)
    give_up.start()
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search", "shop"], "max_concurrent_rollouts": 2})
    give_up.cancel()
    holder.join(timeout=5)
    assert result.state == "failed"
    assert seen_stop, "the failing shard signalled the others on the Lease"
    assert sorted(restarts(result)) == ["deployment/search/search-api", "deployment/shop/cart-api"], "shop's shard started nothing after the failure"
    failed = [t for t in result.failed_tasks() if t.startswith("restart")]
    assert len(failed) == 1, result.failed_tasks()
    assert "another shard failed" in result.text()
    summary = summary_of(result)
    assert "deployment/shop/cart-api" in summary["restarted"], "the rollout already started was followed to its end"
    assert set(summary["failed"]) == {"deployment/search/search-api"}
    assert set(summary["not_completed"]) == {"deployment/shop/recommendations", "deployment/shop/storefront-web"}


def test_restarts_that_change_nothing_and_opted_out_objects_are_skipped_and_reported(dag_runner: DagRunner, world: World) -> None:
    cluster = staging(world)
    store = cluster.store
    store.mutate(NAMESPACES, None, "search", lambda ns: ns["metadata"].setdefault("annotations", {}).update({"kube-maintenance.io/skip": "true", "kube-maintenance.io/skip-reason": "search reindex running"}))
    store.mutate(DEPLOYMENTS, "shop", "recommendations", lambda d: d["metadata"].setdefault("annotations", {}).update({"kube-maintenance.io/skip": "true"}))
    store.mutate(DEPLOYMENTS, "shop", "storefront-web", lambda d: d["spec"].update(replicas=0))
    ledger = store.get(STATEFULSETS, "payments", "ledger-db")
    store.mutate(STATEFULSETS, "payments", "ledger-db", lambda s: s["spec"]["updateStrategy"].update(rollingUpdate={"partition": s["spec"]["replicas"]}))
    assert cluster.wait_for(lambda: settled(cluster) == [], timeout=60), settled(cluster)
    before = pod_uids(cluster, workloads(cluster, ("search", "shop", "payments")))
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search", "shop", "payments"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert sorted(restarts(result)) == ["deployment/payments/payments-api", "deployment/shop/cart-api"]
    skipped = summary_of(result)["skipped"]
    assert skipped["deployment/shop/recommendations"] == "opted out (kube-maintenance.io/skip=true on the deployment)"
    assert skipped["deployment/shop/storefront-web"] == "scaled to zero: no pod to restart"
    assert skipped["statefulset/payments/ledger-db"] == f"rollingUpdate partition {ledger['spec']['replicas']} >= replicas {ledger['spec']['replicas']}: a restart would update no pod"
    assert [l["detail"]["why"] for l in result.audit if l["action"] == "skip-namespace"] == ["opted out (kube-maintenance.io/skip=true on the namespace): search reindex running"]
    after = pod_uids(cluster, workloads(cluster, ("search", "shop", "payments")))
    for ref in ("deployment/search/search-api", "deployment/shop/recommendations", "statefulset/payments/ledger-db"):
        assert after[ref] == before[ref], f"{ref} untouched"


def test_a_run_killed_mid_restart_and_run_again_restarts_each_workload_once(dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill and resume: the restart task's process dies right after its first patch (nothing
    recorded, the run ends and its cleanup runs); the operator clears the run and runs it again:
    every workload ends restarted and rolled out, none twice, no lock left."""
    from kube_maintenance.rollout_restart import tasks as rollout_tasks

    cluster = staging(world)
    targets = workloads(cluster, ("shop", "search"))
    before = pod_uids(cluster, targets)
    original = rollout_tasks.KindRollout._restart

    def dies_after_the_first_patch(self: Any, view: Any, obj: Any) -> bool:
        original(self, view, obj)
        raise RuntimeError("task process killed right after a restart patch")

    dag_runner.set_registry(registry_for(world, rollout_restart={"retries": 0}))
    conf = {"dry_run": False, "namespaces": ["search", "shop"], "max_concurrent_rollouts": 1}
    same_run = {"logical_date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)}
    same_run["run_after"] = same_run["logical_date"]
    seq = len(cluster.requests)
    with monkeypatch.context() as patched:
        patched.setattr(rollout_tasks.KindRollout, "_restart", dies_after_the_first_patch)
        killed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert killed.state == "failed" and "killed right after a restart patch" in killed.text()
    assert cluster.store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock") is None
    resumed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert resumed.state == "success", (resumed.failed_tasks(), resumed.errors())
    # One restart per workload across both runs: the killed run's patch is recognised (its
    # restartedAt is after the run began), never sent again; at most one rolled-out mark more.
    assert restarts(killed) == ["deployment/search/search-api"]
    assert Counter(restarts(killed) + restarts(resumed)) == {ref: 1 for ref in targets}
    patches = Counter(f"{r.namespace}/{r.name}" for r in our_writes(cluster, seq) if r.verb == "patch" and r.resource == "deployments")
    assert all(1 <= patches[ref.split("/", 1)[1]] <= 2 for ref in targets), patches
    after = pod_uids(cluster, targets)
    for ref in targets:
        assert after[ref] and not (after[ref] & before[ref]), f"{ref}: every pod replaced"
    assert sorted(summary_of(resumed)["restarted"]) == sorted(targets)


# ----------------------------------------------------------------------------------- deferred waits
ROLLOUT_TRIGGER = "kube_maintenance.rollout_restart.triggers.RolloutProgressTrigger"


def test_a_shard_waits_deferred_and_its_rollout_progressing_wakes_it(dag_runner: DagRunner, world: World, triggerer: BackgroundTriggerer) -> None:
    """While its rollout rolls the shard holds no worker slot: it defers (it is never rescheduled)
    to a trigger watching the namespace's Deployments from its own list, and the rollout
    progressing wakes it, long before the trigger's deadline (at most the longest sleep between
    looks, here a minute); the task's state (where it stands, when it began) comes back in the event."""
    cluster = staging(world)
    dag_runner.set_registry(registry_for(world, rollout_restart={"poke_interval_seconds": 60}))
    # search-api's new pods stay unready until the shard has deferred once: only the watch can
    # tell the shard that its rollout moved on.
    holder = stuck_until(cluster, DEPLOYMENTS, "search", "search-api", lambda: bool(triggerer.of("restart")))
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["search"], "max_concurrent_rollouts": 1})
    holder.join(timeout=5)
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert restarts(result) == ["deployment/search/search-api"] and summary_of(result)["restarted"] == ["deployment/search/search-api"]
    assert triggerer.reschedules == [], "waits are deferrals, not reschedules"
    runs = triggerer.of("restart")
    assert runs and {r.classpath for r in runs} == {ROLLOUT_TRIGGER} and all(r.task == "restart[0]" for r in runs)
    for run in runs:
        (watch,) = run.kwargs["watches"]
        assert (watch["plural"], watch["namespace"], watch["resource_version"] != "") == ("deployments", "search", True), watch
        assert watch["seen"].get("search-api"), "what the look saw of the workload, its own patch included"
        assert run.moment is not None and run.moment <= run.started + 61, "the deadline is absolute, at most the longest sleep ahead"
        assert run.payload["state"]["at"] == [0, 0] and run.payload["state"]["began"]
        assert run.payload["woke"] != "error", run.payload
    woken = [r for r in runs if r.payload["woke"] == "change"]
    assert woken and all(r.ended is not None and r.ended < r.moment for r in woken), [(r.payload, r.moment) for r in runs]
    assert any("deployments/search/search-api" in r.payload["why"] for r in woken), [r.payload for r in woken]
    assert "resumed: woke by change" in result.text()


# -------------------------------------------------------------------------------- kubectl as the oracle
ORACLE_NS = "rollouts"


def _oracle_objects() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(kind, name, spec changes, status) in the states a rollout passes through, and its failures."""
    rolling_sts = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    return [
        (rules.DEPLOYMENT, "d-unobserved", {}, {"observedGeneration": 0}),
        (rules.DEPLOYMENT, "d-deadline", {}, {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
                                            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": 'ReplicaSet "d-deadline-1" has timed out progressing.'}]}),
        (rules.DEPLOYMENT, "d-updating", {}, {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
        (rules.DEPLOYMENT, "d-old-pending", {}, {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        (rules.DEPLOYMENT, "d-unavailable", {}, {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        (rules.DEPLOYMENT, "d-done", {}, {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        (rules.DAEMONSET, "ds-ondelete", {"updateStrategy": {"type": "OnDelete"}}, {"observedGeneration": 1}),
        (rules.DAEMONSET, "ds-unobserved", {}, {"observedGeneration": 0, "desiredNumberScheduled": 5}),
        (rules.DAEMONSET, "ds-updating", {}, {"observedGeneration": 1, "desiredNumberScheduled": 5, "updatedNumberScheduled": 2, "numberAvailable": 5}),
        (rules.DAEMONSET, "ds-unavailable", {}, {"observedGeneration": 1, "desiredNumberScheduled": 5, "updatedNumberScheduled": 5, "numberAvailable": 4}),
        (rules.DAEMONSET, "ds-done", {}, {"observedGeneration": 1, "desiredNumberScheduled": 5, "updatedNumberScheduled": 5, "numberAvailable": 5}),
        (rules.STATEFULSET, "s-ondelete", {"updateStrategy": {"type": "OnDelete"}}, {"observedGeneration": 1}),
        (rules.STATEFULSET, "s-unobserved", {"updateStrategy": rolling_sts}, {"observedGeneration": 0}),
        (rules.STATEFULSET, "s-not-ready", {"updateStrategy": rolling_sts}, {"observedGeneration": 1, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 1, "updateRevision": "s-2", "currentRevision": "s-1"}),
        (rules.STATEFULSET, "s-updating", {"updateStrategy": rolling_sts}, {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 2, "updateRevision": "s-2", "currentRevision": "s-1"}),
        (rules.STATEFULSET, "s-partitioned", {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}, {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 1}),
        (rules.STATEFULSET, "s-done", {"updateStrategy": rolling_sts}, {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3, "updateRevision": "s-2", "currentRevision": "s-2"}),
    ]


def test_our_judgement_is_kubectl_rollout_status(tmp_path: Path) -> None:
    """The same objects, served by a sandbox API server, judged by real kubectl and by us."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    from kubernetes import config as kube_config

    from kube_maintenance.core.k8s import KubeClient
    from kube_maintenance.rollout_restart.tasks import KIND_REFS

    cluster = SandboxCluster("oracle")  # no controllers running: the statuses stay as written
    cluster.bootstrap()
    server = ApiServer(cluster)
    server.start()
    cluster.server = server
    try:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "oracle.kubeconfig")
        cluster.store.create(NAMESPACES, {"metadata": {"name": ORACLE_NS}})
        for kind, name, spec, status in _oracle_objects():
            body = {
                "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}, **spec},
            }
            if kind != rules.DAEMONSET:
                body["spec"]["replicas"] = 3
            cluster.store.create(KEYS[kind], body, namespace=ORACLE_NS)
            cluster.store.mutate(KEYS[kind], ORACLE_NS, name, lambda obj, s=status: obj.update(status=s), subresource="status")
        kube = KubeClient(kube_config.new_client_from_config(str(kubeconfig)), "oracle")
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        compared = []
        for kind, name, _, _ in _oracle_objects():
            ours = rules.rollout_status(kube.get(KIND_REFS[kind], name, ORACLE_NS), kind)
            proc = subprocess.run(["kubectl", "rollout", "status", f"{kind.lower()}/{name}", "-n", ORACLE_NS, "--watch=false"], capture_output=True, text=True, env=env, timeout=60)
            if ours.error:
                assert (proc.returncode, proc.stderr.strip()) == (1, f"error: {ours.error}"), (name, proc.stdout, proc.stderr)
            else:
                assert (proc.returncode, proc.stdout) == (0, ours.message), (name, proc.stderr)
            compared.append((name, ours.done, bool(ours.error)))
        assert sum(1 for _, done, error in compared if done and not error) == 4  # each kind's "done", and the partition
    finally:
        server.stop()
        cluster.stop()
