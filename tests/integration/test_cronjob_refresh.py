"""CronJob image refresh, whole DAG runs against the sandbox through real Airflow connections."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from kube_maintenance.core import k8s
from kube_maintenance.cronjob_refresh.decisions import (
    INSTANTIATE_ANNOTATION,
    JOB_CONTROLLER_UID_LABEL,
    REFRESH_OF_ANNOTATION,
    REPLACES_ANNOTATION,
    fresh_job_manifest,
    fresh_job_name,
    refresh_key,
)
from sandbox.config import RUN_SECONDS_ANNOTATION
from sandbox.monitor import WRITE_VERBS
from sandbox.resources import CRONJOBS, JOBS, NAMESPACES, PODS
from sandbox.scenario import World

from harness import DagRunner, registry_for
from triggerer import BackgroundTriggerer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILE = "cronjob_refresh.py"
DAG_ID = "cronjob_refresh__staging"
SEEDED = {"payments": "settlement-export", "search": "catalog-reindex"}  # CronJobs whose running Job is on an old image
OLD, NEW = "registry.example/batch/cart-sweeper:1", "registry.example/batch/cart-sweeper:2"
MIGRATE_OLD, MIGRATE_NEW = "registry.example/batch/cart-migrate:1", "registry.example/batch/cart-migrate:2"


@pytest.fixture(autouse=True)
def triggerer(monkeypatch: pytest.MonkeyPatch) -> BackgroundTriggerer:
    """Groups wait deferred, side by side, as on a real Airflow (dag.test would run each inline in turn)."""
    return BackgroundTriggerer().install(monkeypatch)


# ------------------------------------------------------------------------------------------- helpers
def writes_since(world: World, cluster: str, seq: int) -> list:
    return [r for r in world.clusters[cluster].cluster.requests.since(seq) if r.verb in WRITE_VERBS and "kube-maintenance" in r.user_agent]


def ours_since(world: World, cluster: str, seq: int) -> list:
    return [r for r in world.clusters[cluster].cluster.requests.since(seq) if "kube-maintenance" in r.user_agent]


def run_forever(pod_template: dict[str, Any]) -> None:
    """Sandbox-only: the Job's pods run until deleted (a stuck Job)."""
    pod_template.setdefault("metadata", {}).setdefault("annotations", {})[RUN_SECONDS_ANNOTATION] = "forever"


def add_cronjob(
    store: Any, namespace: str, name: str, image: str, init_image: str | None = None, suspend: bool = False, policy: str = "Allow", schedule: str = "0 0 1 1 *"
) -> dict:
    """A CronJob (by default once a year: the controller starts nothing during a test)."""
    pod_spec: dict[str, Any] = {"containers": [{"name": "main", "image": image}], "restartPolicy": "OnFailure"}
    if init_image:
        pod_spec["initContainers"] = [{"name": "migrate", "image": init_image}]
    template: dict[str, Any] = {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
    run_forever(template)
    return store.create(
        CRONJOBS,
        {
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "tier": "batch"}},
            "spec": {
                "schedule": schedule,
                "concurrencyPolicy": policy,
                "suspend": suspend,
                "jobTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"backoffLimit": 2, "template": template}},
            },
        },
    )


def add_job(store: Any, cron: dict, name: str, image: str, init_image: str | None = None, manual: bool = False, **spec: Any) -> dict:
    """A running Job of ``cron`` on the given images, as its controller (or kubectl create job --from) made it."""
    template = json.loads(json.dumps(cron["spec"]["jobTemplate"]["spec"]["template"]))
    template["spec"]["containers"][0]["image"] = image
    if init_image:
        template["spec"]["initContainers"][0]["image"] = init_image
    m = cron["metadata"]
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": m["name"], "uid": m["uid"], "controller": True}
    annotations = {INSTANTIATE_ANNOTATION: "manual"} if manual else {}
    return store.create(
        JOBS,
        {
            "metadata": {"name": name, "namespace": m["namespace"], "labels": {"app": m["name"]}, "annotations": annotations, "ownerReferences": [owner]},
            "spec": {"backoffLimit": 2, "template": template, **spec},
        },
    )


def keep_fresh_jobs_running(store: Any) -> None:
    """The seeded CronJobs' templates get the sandbox's run-forever annotation, so a fresh Job is still
    running when judged (a template change of no interest to the refresh: images stay as they are)."""
    for namespace, name in SEEDED.items():
        store.mutate(CRONJOBS, namespace, name, lambda c: run_forever(c["spec"]["jobTemplate"]["spec"]["template"]))


def allow_concurrency(store: Any, *refs: str) -> None:
    """The seeded CronJobs are Forbid (never a fresh Job beside the schedule): these become Allow."""
    for ref in refs or [f"{ns}/{name}" for ns, name in SEEDED.items()]:
        store.mutate(CRONJOBS, *ref.split("/"), lambda c: c["spec"].update(concurrencyPolicy="Allow"))


def events_about(world: World, obj: dict) -> list[dict]:
    """The Events ``kubectl describe`` shows for ``obj``: listed by field selector on the object's
    kind, name, namespace and uid, through the API as kubectl does."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(world.kubeconfig("staging"))))
    m = obj["metadata"]
    selector = f"involvedObject.kind={obj['kind']},involvedObject.name={m['name']},involvedObject.namespace={m['namespace']},involvedObject.uid={m['uid']}"
    return [e.to_dict() for e in api.list_namespaced_event(m["namespace"], field_selector=selector).items]


def summary_of(result: Any) -> dict:
    return [line for line in result.audit if line["action"] == "summary"][-1]["after"]


def by_ref(grouped: dict[str, list[str]]) -> dict[str, str]:
    """A summary field that groups references by reason (the reason said once), as ref -> reason."""
    return {ref: why for why, refs in grouped.items() for ref in refs}


def seeded_stale_jobs(store: Any) -> dict[str, dict]:
    """namespace/name -> the seeded running Job of each seeded CronJob (on the old image)."""
    out = {}
    for namespace, name in SEEDED.items():
        cron = store.get(CRONJOBS, namespace, name)
        for job in store.iter(JOBS, namespace):
            owner = (job["metadata"].get("ownerReferences") or [{}])[0].get("uid")
            if owner == cron["metadata"]["uid"] and not any(c.get("type") == "Complete" for c in job.get("status", {}).get("conditions") or ()):
                out[f"{namespace}/{job['metadata']['name']}"] = job
    assert len(out) == 2, out
    return out


def pods_of(store: Any, uids: set[str]) -> list[str]:
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in store.iter(PODS)
        if p["metadata"].get("labels", {}).get(JOB_CONTROLLER_UID_LABEL) in uids or any(r.get("uid") in uids for r in p["metadata"].get("ownerReferences") or ())
    ]


def running_pods_of(store: Any, job: dict) -> list[dict]:
    return [
        p
        for p in store.iter(PODS, job["metadata"]["namespace"])
        if p["metadata"].get("labels", {}).get(JOB_CONTROLLER_UID_LABEL) == job["metadata"]["uid"] and p.get("status", {}).get("phase") == "Running"
    ]


def fresh_jobs_of(store: Any, cron: dict) -> list[dict]:
    return [
        j
        for j in store.iter(JOBS, cron["metadata"]["namespace"])
        if REFRESH_OF_ANNOTATION in (j["metadata"].get("annotations") or {})
        and any(r.get("uid") == cron["metadata"]["uid"] and r.get("controller") for r in j["metadata"].get("ownerReferences") or ())
    ]


def audit_targets(result: Any, action: str, outcome: str) -> set[str]:
    return {line["target"] for line in result.audit if line["action"] == action and line["outcome"] == outcome}


# --------------------------------------------------------------------------------------------- tests
def test_deletes_exactly_the_stale_active_jobs_starts_fresh_ones_and_a_rerun_changes_nothing(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store, "payments/settlement-export")  # search/catalog-reindex stays Forbid: no fresh Job
    # shop: an Allow CronJob with a current Job and a kubectl-made Job whose init container is on an
    # old image (never listed in the CronJob's status.active): no fresh Job beside the current one;
    # a suspended CronJob with a stale Job.
    sweeper = add_cronjob(store, "shop", "cart-sweeper", NEW, init_image=MIGRATE_NEW)
    current = add_job(store, sweeper, "cart-sweeper-current", NEW, MIGRATE_NEW)
    manual = add_job(store, sweeper, "cart-sweeper-manual", NEW, MIGRATE_OLD, manual=True)
    paused = add_cronjob(store, "shop", "price-sync", NEW, suspend=True)
    paused_job = add_job(store, paused, "price-sync-1", OLD)
    # kube-system is protected: its stale Job stays whatever the parameters say.
    system = add_cronjob(store, "kube-system", "node-reaper", NEW)
    system_job = add_job(store, system, "node-reaper-1", OLD)
    stale = seeded_stale_jobs(store)
    stale["shop/cart-sweeper-manual"] = manual
    untouched = [current, paused_job, system_job] + [j for j in store.iter(JOBS) if j["metadata"]["name"] in ("ledger-db-migrate-42",) or j.get("status", {}).get("conditions")]
    assert staging.wait_for(lambda: all(running_pods_of(store, j) for j in [*stale.values(), current, paused_job, system_job]), timeout=30)
    stale_pods = pods_of(store, {j["metadata"]["uid"] for j in stale.values()})
    refreshed = {"payments/settlement-export", "search/catalog-reindex", "shop/cart-sweeper"}
    fresh_for = "payments/settlement-export"
    dag_runner.set_registry(registry_for(world, cronjob_refresh={"max_namespace_groups": 2}))
    staging.monitor.reset()
    seq = len(staging.requests)
    prod_seq = len(world.clusters["production"].cluster.requests)

    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True, "pods_gone_timeout_seconds": 60})

    assert result.state == "success", (result.failed_tasks(), result.errors())
    # Six namespaces (default, observability, payments, scratch, search, shop; no kube-*) in two groups.
    assert sorted(t for t in result.task_states if t.startswith("refresh.judge")) == ["refresh.judge[0]", "refresh.judge[1]"]
    deleted = audit_targets(result, "delete-job", "done")
    assert deleted == {f"job/{ref}" for ref in stale}
    assert all(store.try_get(JOBS, *ref.split("/")) is None for ref in stale)
    assert stale_pods and pods_of(store, {j["metadata"]["uid"] for j in stale.values()}) == [], "every pod of a deleted Job is gone, none orphaned"
    for job in untouched:
        kept = store.try_get(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
        assert kept is not None and kept["metadata"]["uid"] == job["metadata"]["uid"], job["metadata"]["name"]
    for line in (line for line in result.audit if line["action"] == "delete-job"):
        assert line["detail"]["cronjob"] in refreshed and line["detail"]["old_images"] and line["detail"]["new_images"]
    assert {line["detail"]["old_images"]["migrate"] for line in result.audit if line["target"] == "job/shop/cart-sweeper-manual" and line["action"] == "delete-job"} == {MIGRATE_OLD}

    # One fresh Job for the Allow CronJob without a current Job, made as kubectl create job --from
    # makes it, running the new image; none for the Forbid one, nor beside shop's current Job.
    assert [fresh_jobs_of(store, store.get(CRONJOBS, *ref.split("/"))) for ref in sorted(refreshed - {fresh_for})] == [[], []]
    not_created = by_ref(summary_of(result)["fresh_jobs_not_created"])
    assert "concurrencyPolicy Forbid" in not_created["search/catalog-reindex"] and "already runs: cart-sweeper-current" in not_created["shop/cart-sweeper"]
    assert set(by_ref(summary_of(result)["next_scheduled_jobs"])) == {"search/catalog-reindex", "shop/cart-sweeper"}
    for ref in [fresh_for]:
        cron = store.get(CRONJOBS, *ref.split("/"))
        fresh = fresh_jobs_of(store, cron)
        assert len(fresh) == 1, (ref, [j["metadata"]["name"] for j in fresh])
        job = fresh[0]
        assert job["metadata"]["annotations"][INSTANTIATE_ANNOTATION] == "manual"
        assert job["metadata"]["annotations"][REPLACES_ANNOTATION] in {r for r in stale if r.startswith(cron["metadata"]["namespace"] + "/")}
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert staging.wait_for(lambda j=job: bool(running_pods_of(store, j)), timeout=30), f"fresh Job of {ref} runs"
        assert f"job/{job['metadata']['namespace']}/{job['metadata']['name']}" in audit_targets(result, "create-job", "done")
        # kubectl describe cronjob shows the fresh Job's Event.
        assert sorted(e["reason"] for e in events_about(world, cron) if e["source"]["component"] == "kube-maintenance") == ["FreshJobCreated", "StaleJobDeleted"]
    assert len(audit_targets(result, "create-job", "done")) == 1

    # kubectl describe shows an Event on each deleted Job (found by its uid though the Job is gone), naming the run.
    for ref, stale_job in stale.items():
        (event,) = [e for e in events_about(world, stale_job) if e["reason"] == "StaleJobDeleted"]
        assert event["type"] == "Normal" and "now runs" in event["message"] and "Airflow DAG run" in event["message"]
    assert [e for job in untouched for e in events_about(world, job) if (e.get("source") or {}).get("component") == "kube-maintenance"] == []

    # Only those writes, nothing in kube-system, one list of CronJobs per namespace, of Jobs once
    # to judge and once more where a fresh Job is about to be created.
    writes = {(r.verb, r.resource, r.namespace) for r in writes_since(world, "staging", seq) if r.resource not in ("leases", "events")}
    # (and the fresh-job-owed mark on the CronJob that gets a fresh Job, set before its Job goes and settled after)
    assert writes == {("delete", "jobs", ns) for ns in ("payments", "search", "shop")} | {("create", "jobs", "payments"), ("patch", "cronjobs", "payments")}
    assert {r.namespace for r in writes_since(world, "staging", seq) if r.resource == "events"} == {"payments", "search", "shop"}
    ours = ours_since(world, "staging", seq)
    assert [r for r in ours if r.namespace == "kube-system"] == []
    assert [v for v in staging.monitor.report()["violations"] if v["kind"] == "protected-namespace"] == []
    for resource, most in (("cronjobs", {}), ("jobs", {"payments": 2})):
        per_namespace: dict[str, int] = {}
        for r in ours:
            if r.resource == resource and r.verb == "list":
                per_namespace[r.namespace] = per_namespace.get(r.namespace, 0) + 1
        assert per_namespace and all(count == most.get(ns, 1) for ns, count in per_namespace.items()), (resource, per_namespace)
    # One fresh read of each stale Job, right before its deletion.
    assert sorted(f"{r.namespace}/{r.name}" for r in ours if r.resource == "jobs" and r.verb == "get") == sorted(stale)
    assert ours_since(world, "production", prod_seq) == []
    summary = summary_of(result)
    assert summary["suspended_left_alone"] == ["shop/price-sync"] and summary["lock_released"] is True
    assert store.try_get("leases.coordination.k8s.io", "default", "kube-maintenance-lock") is None

    # Re-running is harmless: nothing is stale any more, so nothing is deleted or started again.
    jobs_before = {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in store.iter(JOBS)}
    seq = len(staging.requests)
    again = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True})
    assert again.state == "success", (again.failed_tasks(), again.errors())
    assert [r for r in writes_since(world, "staging", seq) if r.resource != "leases"] == []
    assert {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in store.iter(JOBS)} >= jobs_before
    assert not [line for line in again.audit if line["action"] in ("delete-job", "create-job")]


def test_dry_run_changes_nothing_and_logs_the_plan(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    stale = seeded_stale_jobs(staging.store)
    seq = len(staging.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "create_fresh_job": True})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert writes_since(world, "staging", seq) == []
    planned = [line for line in result.audit if line["action"] == "plan-delete-job"]
    assert {line["target"] for line in planned} == {f"job/{ref}" for ref in stale}
    assert all(line["outcome"] == "planned" and line["dry_run"] for line in result.audit)
    by_target = {line["target"]: line for line in planned}
    export = by_target[f"job/{next(r for r in stale if r.startswith('payments/'))}"]
    assert export["detail"]["old_images"] == {"settlement-export": "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/settlement-export:3.2.0"}
    assert export["detail"]["new_images"] == {"settlement-export": "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/settlement-export:3.3.0"}
    # Both seeded CronJobs are Forbid: no fresh Job planned; the plan says when the schedule starts the next one.
    assert [line for line in result.audit if line["action"] == "plan-create-job"] == []
    no_fresh = {line["target"]: line["detail"] for line in result.audit if line["action"] == "plan-skip" and line["target"].startswith("cronjob/")}
    assert set(no_fresh) == {"cronjob/payments/settlement-export", "cronjob/search/catalog-reindex"}
    assert all("concurrencyPolicy Forbid" in d["why"] and "runs the new image" in d["why"] for d in no_fresh.values())
    assert "(schedule '*/30 * * * *', Etc/UTC)" in no_fresh["cronjob/search/catalog-reindex"]["next_run"]
    assert by_ref(summary_of(result)["next_scheduled_jobs"]) == {ref: d["next_run"] for ref, d in ((t.split("/", 1)[1], d) for t, d in no_fresh.items())}
    assert all(staging.store.try_get(JOBS, *ref.split("/")) is not None for ref in stale)


def test_a_busy_job_is_judged_again_and_deleted_and_one_that_finished_or_whose_cronjob_was_suspended_is_left(
    dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the judge task and the deletion: one stale Job's status moves on (a busy Job: pods
    come and go), another finishes, a third's CronJob is suspended. The changes are made at the
    last moment (wrapping the client's calls), so the test does not depend on task timing. The busy
    one is deleted all the same (UID precondition; a resourceVersion taken earlier would refuse
    it), the others are left and reported, and the run says so."""
    staging = world.clusters["staging"].cluster
    store = staging.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store)
    stale = seeded_stale_jobs(store)
    busy_ref = next(ref for ref in stale if ref.startswith("payments/"))
    finished_ref = next(ref for ref in stale if ref.startswith("search/"))
    sweeper = add_cronjob(store, "shop", "cart-sweeper", NEW)
    paused_job = add_job(store, sweeper, "cart-sweeper-1", OLD)
    real_delete, real_get = k8s.KubeClient.delete, k8s.KubeClient.get_or_none

    def finish(job: dict) -> None:
        job.setdefault("status", {})["conditions"] = [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ]

    def get_after_someone_changed_it(self: k8s.KubeClient, ref: k8s.ResourceRef, name: str, namespace: str | None = None) -> Any:
        if ref == k8s.JOBS and f"{namespace}/{name}" == finished_ref:
            store.mutate(JOBS, namespace, name, finish, subresource="status")
        if ref == k8s.CRONJOBS and f"{namespace}/{name}" == "shop/cart-sweeper":
            store.mutate(CRONJOBS, namespace, name, lambda c: c["spec"].update(suspend=True))
        return real_get(self, ref, name, namespace)

    def delete_after_its_status_moved_on(self: k8s.KubeClient, ref: k8s.ResourceRef, name: str, namespace: str | None = None, **kw: Any) -> Any:
        if ref == k8s.JOBS and f"{namespace}/{name}" == busy_ref:
            store.mutate(JOBS, namespace, name, lambda job: job.setdefault("status", {}).update(ready=0, active=2), subresource="status")
        return real_delete(self, ref, name, namespace, **kw)

    monkeypatch.setattr(k8s.KubeClient, "get_or_none", get_after_someone_changed_it)
    monkeypatch.setattr(k8s.KubeClient, "delete", delete_after_its_status_moved_on)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True})

    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert store.try_get(JOBS, *busy_ref.split("/")) is None, "the busy Job is deleted: its template is what makes it stale"
    assert len(fresh_jobs_of(store, store.get(CRONJOBS, "payments", "settlement-export"))) == 1
    finished = store.try_get(JOBS, *finished_ref.split("/"))
    assert finished is not None and finished["metadata"]["uid"] == stale[finished_ref]["metadata"]["uid"]
    assert store.try_get(JOBS, "shop", "cart-sweeper-1")["metadata"]["uid"] == paused_job["metadata"]["uid"]
    assert fresh_jobs_of(store, store.get(CRONJOBS, "search", "catalog-reindex")) == [], "a Job that finished by itself is not replaced"
    assert fresh_jobs_of(store, store.get(CRONJOBS, "shop", "cart-sweeper")) == []
    skipped = {line["target"]: line["detail"]["why"] for line in result.audit if line["action"] == "delete-job" and line["outcome"] == "skipped"}
    assert skipped == {f"job/{finished_ref}": "the Job finished since it was judged", "job/shop/cart-sweeper-1": "its CronJob was suspended since it was judged"}
    summary = summary_of(result)
    assert summary["deleted"] == [busy_ref]
    assert summary["left_since_judged"] == {"the Job finished since it was judged": [finished_ref], "its CronJob was suspended since it was judged": ["shop/cart-sweeper-1"]}


@pytest.mark.parametrize(
    "conf,message",
    [
        ({"min_job_age_minutes": -1}, "Invalid input for param min_job_age_minutes"),
        ({"namespace_selector": "team in (payments"}, "namespace_selector: invalid label selector"),
        ({"namespaces": ["kube-system", "shop"]}, "namespaces: kube-system protected"),
        ({"namespaces": ["shop", "shopp"]}, "namespaces: no such namespace(s) in the cluster: shopp"),
    ],
)
def test_bad_parameters_fail_before_any_change(dag_runner: DagRunner, world: World, conf: dict, message: str) -> None:
    seq = len(world.clusters["staging"].cluster.requests)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True, **conf})
    # Refused by the trigger form's own validation, or by the plan task: either way before any change.
    assert result.state == "rejected" or (result.state == "failed" and result.failed_tasks() == ["cleanup", "plan"])
    assert message in result.text()
    assert writes_since(world, "staging", seq) == []


def test_injected_faults_give_the_same_end_state(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store)
    stale = seeded_stale_jobs(store)
    stale_uids = {j["metadata"]["uid"] for j in stale.values()}
    # An earlier try created search's fresh Job and lost the answer: this run must find it, not add one.
    reindex = store.get(CRONJOBS, "search", "catalog-reindex")
    key = refresh_key(reindex["metadata"]["uid"], reindex["metadata"]["generation"])
    name = fresh_job_name("catalog-reindex", reindex["metadata"]["uid"], reindex["metadata"]["generation"])
    store.create(JOBS, fresh_job_manifest(reindex, name, [r for r in stale if r.startswith("search/")], key))
    staging.faults.configure(
        {
            "errors": [
                {"code": 500, "rate": 0.3, "verb": "list"},
                {"code": 429, "rate": 0.3, "verb": "delete", "resource": "jobs"},
                {"code": 500, "rate": 0.3, "verb": "create", "resource": "jobs"},
                {"code": 503, "rate": 0.2, "verb": "get"},
            ],
            "watch_cut_after_events": 1,
        }
    )
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True})
    staging.faults.clear()

    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert all(store.try_get(JOBS, *ref.split("/")) is None for ref in stale)
    assert staging.wait_for(lambda: pods_of(store, stale_uids) == [], timeout=10)
    for namespace, cronjob in SEEDED.items():
        assert len(fresh_jobs_of(store, store.get(CRONJOBS, namespace, cronjob))) == 1, cronjob
    assert audit_targets(result, "create-job", "skipped") == {f"job/search/{name}"}
    assert {line["detail"]["why"] for line in result.audit if line["action"] == "create-job" and line["outcome"] == "skipped"} == {"already created by an earlier try"}
    assert len(audit_targets(result, "create-job", "done")) == 1
    assert any(r.code in (429, 500, 503) for r in staging.requests.since(0) if "kube-maintenance" in r.user_agent), "faults were injected"


@pytest.mark.kubectl
def test_fresh_job_matches_kubectl_create_job_from_cronjob(world: World) -> None:
    """Oracle: the real kubectl builds the same Job from the same CronJob (our two annotations aside)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    cron = world.clusters["staging"].cluster.store.get(CRONJOBS, "payments", "settlement-export")
    proc = subprocess.run(
        ["kubectl", "create", "job", "fresh", "--from=cronjob/settlement-export", "-n", "payments", "--dry-run=client", "-o", "json"],
        capture_output=True,
        text=True,
        env=dict(os.environ, KUBECONFIG=str(world.kubeconfig("staging"))),
        timeout=60,
        check=True,
    )
    theirs = json.loads(proc.stdout)
    ours = fresh_job_manifest(cron, "fresh", ["payments/old"], "uid/1")
    for annotation in (REFRESH_OF_ANNOTATION, REPLACES_ANNOTATION):
        del ours["metadata"]["annotations"][annotation]
    assert theirs["apiVersion"] == ours["apiVersion"] and theirs["kind"] == ours["kind"]
    for key in ("name", "namespace", "labels", "annotations", "ownerReferences"):
        assert theirs["metadata"].get(key) == ours["metadata"].get(key), key
    theirs_template_meta = theirs["spec"]["template"]["metadata"]
    theirs_template_meta.pop("creationTimestamp", None)  # a typed client's empty timestamp
    assert theirs["spec"] == ours["spec"]


# ------------------------------------------------------------------------------------ issue 12 edges
def test_opted_out_cronjobs_and_namespaces_are_left_alone_and_reported(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    stale = seeded_stale_jobs(store)
    # search's CronJob is opted out on itself, the new ledger namespace as a whole; shop's annotation
    # is a typo, which opts nothing out (and is reported as not understood).
    store.mutate(
        CRONJOBS,
        "search",
        "catalog-reindex",
        lambda c: c["metadata"].setdefault("annotations", {}).update({"kube-maintenance.io/skip": "true", "kube-maintenance.io/skip-reason": "reindex freeze until Friday"}),
    )
    store.create(NAMESPACES, {"metadata": {"name": "ledger", "annotations": {"kube-maintenance.io/skip": "true", "kube-maintenance.io/skip-reason": "month-end close"}}})
    ledger_job = add_job(store, add_cronjob(store, "ledger", "close-books", NEW), "close-books-1", OLD)
    typo_cron = add_cronjob(store, "shop", "cart-sweeper", NEW)
    store.mutate(CRONJOBS, "shop", "cart-sweeper", lambda c: c["metadata"].setdefault("annotations", {}).update({"kube-maintenance.io/skip": "yes"}))
    typo_job = add_job(store, typo_cron, "cart-sweeper-1", OLD)
    seq = len(staging.requests)

    dry = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True})
    assert dry.state == "success", (dry.failed_tasks(), dry.errors())
    skips = {line["target"]: line["detail"]["why"] for line in dry.audit if line["action"] == "plan-skip"}
    assert skips == {
        "namespace/ledger": "opted out (kube-maintenance.io/skip=true on the namespace): month-end close",
        "cronjob/search/catalog-reindex": "opted out (kube-maintenance.io/skip=true on the cronjob): reindex freeze until Friday",
    }
    assert "kube-maintenance.io/skip='yes' is not \"true\": not opted out" in dry.text()
    assert {line["target"] for line in dry.audit if line["action"] == "plan-delete-job"} == {f"job/{r}" for r in stale if r.startswith("payments/")} | {"job/shop/cart-sweeper-1"}

    real = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False})
    assert real.state == "success", (real.failed_tasks(), real.errors())
    search_ref = next(r for r in stale if r.startswith("search/"))
    assert store.try_get(JOBS, *search_ref.split("/"))["metadata"]["uid"] == stale[search_ref]["metadata"]["uid"]
    assert store.try_get(JOBS, "ledger", "close-books-1")["metadata"]["uid"] == ledger_job["metadata"]["uid"]
    assert store.try_get(JOBS, "shop", "cart-sweeper-1") is None and typo_job
    assert not [r for r in ours_since(world, "staging", seq) if r.namespace == "ledger"], "an opted-out namespace is not even read"
    opted = summary_of(real)["opted_out"]
    assert set(by_ref(opted["namespaces"])) == {"ledger"} and set(by_ref(opted["cronjobs_with_stale_jobs"])) == {"search/catalog-reindex"}


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_forbid_and_replace_cronjobs_get_no_fresh_job_and_never_two_active_jobs(dag_runner: DagRunner, world: World, policy: str) -> None:
    """The CronJob controller counts only the Jobs it started (status.active): a Job of ours beside the
    schedule would run next to its next Job. So no fresh Job; the schedule starts the next one, on the
    new image, and the plan and summary say when. Every moment has at most one active Job."""
    staging = world.clusters["staging"].cluster
    store = staging.store
    cron = add_cronjob(store, "shop", "cart-sweeper", OLD, policy=policy, schedule="*/5 * * * *")
    active: set[str] = set()
    most_active = [0]

    def count_active(type_key: str, event: str, old: Any, new: Any) -> None:
        job = new if new is not None else old
        if type_key != JOBS or not any(r.get("uid") == cron["metadata"]["uid"] for r in job["metadata"].get("ownerReferences") or ()):
            return
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or ())
        if event == "DELETED" or finished or job["metadata"].get("deletionTimestamp"):
            active.discard(job["metadata"]["uid"])
        else:
            active.add(job["metadata"]["uid"])
        most_active[0] = max(most_active[0], len(active))

    store.add_listener(count_active)
    # The controller starts the first Job on the old image; then the template moves on.
    now = staging.clock.time()
    staging.clock.advance((now // 300 + 1) * 300 - now + 1)
    assert staging.wait_for(lambda: len(store.get(CRONJOBS, "shop", "cart-sweeper").get("status", {}).get("active") or ()) == 1, timeout=10)
    (scheduled_ref,) = store.get(CRONJOBS, "shop", "cart-sweeper")["status"]["active"]
    store.mutate(CRONJOBS, "shop", "cart-sweeper", lambda c: c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].update(image=NEW))

    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True, "namespaces": ["shop"]})

    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert store.try_get(JOBS, "shop", scheduled_ref["name"]) is None
    assert fresh_jobs_of(store, store.get(CRONJOBS, "shop", "cart-sweeper")) == []
    (skipped,) = [line for line in result.audit if line["action"] == "create-job"]
    assert skipped["outcome"] == "skipped" and f"concurrencyPolicy {policy}" in skipped["detail"]["why"]
    next_run = by_ref(summary_of(result)["next_scheduled_jobs"])["shop/cart-sweeper"]
    assert "(schedule '*/5 * * * *', UTC)" in next_run and skipped["detail"]["next_run"] == next_run
    # The next scheduled run starts the new image, alone.
    staging.clock.advance(300)

    def scheduled_on_new_image() -> bool:
        refs = store.get(CRONJOBS, "shop", "cart-sweeper").get("status", {}).get("active") or ()
        jobs = [store.try_get(JOBS, "shop", r["name"]) for r in refs]
        return any(j and j["spec"]["template"]["spec"]["containers"][0]["image"] == NEW for j in jobs)

    assert staging.wait_for(scheduled_on_new_image, timeout=10)
    staging.wait_idle(2)
    assert most_active[0] == 1, "never two active Jobs of the CronJob"


def test_an_allow_cronjob_gets_no_fresh_job_when_one_on_the_current_image_runs(dag_runner: DagRunner, world: World) -> None:
    store = world.clusters["staging"].cluster.store
    sweeper = add_cronjob(store, "shop", "cart-sweeper", NEW)
    add_job(store, sweeper, "cart-sweeper-old", OLD)
    current = add_job(store, sweeper, "cart-sweeper-new", NEW)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True, "namespaces": ["shop"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert store.try_get(JOBS, "shop", "cart-sweeper-old") is None
    assert fresh_jobs_of(store, store.get(CRONJOBS, "shop", "cart-sweeper")) == []
    assert store.get(JOBS, "shop", "cart-sweeper-new")["metadata"]["uid"] == current["metadata"]["uid"]
    assert summary_of(result)["fresh_jobs_not_created"] == {"a Job on the current image already runs: cart-sweeper-new": ["shop/cart-sweeper"]}


def test_images_are_compared_as_normalised_references_and_by_container_set(dag_runner: DagRunner, world: World) -> None:
    store = world.clusters["staging"].cluster.store
    digest = "sha256:" + "4" * 64
    same = {  # CronJob image -> a Job's image naming the same image
        "nginx:1.27": "docker.io/library/nginx:1.27",
        "busybox": "index.docker.io/library/busybox:latest",
        f"registry.example/batch/pinned:2@{digest}": f"registry.example/batch/pinned@{digest}",
    }
    for i, (template_image, job_image) in enumerate(same.items()):
        add_job(store, add_cronjob(store, "shop", f"same-{i}", template_image), f"same-{i}-1", job_image)
    # A container added to the template: the running Job lacks it, so it is stale.
    grown = add_cronjob(store, "shop", "grown", NEW)
    grown_job = add_job(store, grown, "grown-1", NEW)
    store.mutate(CRONJOBS, "shop", "grown", lambda c: c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].append({"name": "metrics", "image": "registry.example/exporter:1"}))
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert all(store.try_get(JOBS, "shop", f"same-{i}-1") is not None for i in range(len(same)))
    assert store.try_get(JOBS, "shop", "grown-1") is None and grown_job
    (line,) = [line for line in result.audit if line["action"] == "delete-job"]
    assert line["target"] == "job/shop/grown-1" and line["detail"]["old_images"] == {"metrics": None} and line["detail"]["new_images"] == {"metrics": "registry.example/exporter:1"}


def test_running_digests_option_trusts_what_the_pods_run(dag_runner: DagRunner, world: World) -> None:
    """The template pins the digest the Job's tag resolved to when its pods pulled it: by reference
    the Job is stale (a tag against a digest); by what the pods run (imageID), it is current."""
    staging = world.clusters["staging"].cluster
    store = staging.store
    cron = add_cronjob(store, "shop", "cart-sweeper", NEW)
    job = add_job(store, cron, "cart-sweeper-1", NEW)
    assert staging.wait_for(lambda: bool(running_pods_of(store, job)), timeout=30)
    running = running_pods_of(store, job)[0]["status"]["containerStatuses"][0]["imageID"]
    pulled = running.split("@", 1)[1]
    store.mutate(CRONJOBS, "shop", "cart-sweeper", lambda c: c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].update(image=f"registry.example/batch/cart-sweeper@{pulled}"))
    other = add_job(store, cron, "cart-sweeper-2", OLD)  # runs another digest: stale either way
    assert staging.wait_for(lambda: bool(running_pods_of(store, other)), timeout=30)

    by_digest = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "namespaces": ["shop"], "compare_running_digests": True})
    assert by_digest.state == "success", (by_digest.failed_tasks(), by_digest.errors())
    assert {line["target"] for line in by_digest.audit if line["action"] == "plan-delete-job"} == {"job/shop/cart-sweeper-2"}
    by_reference = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "namespaces": ["shop"]})
    assert {line["target"] for line in by_reference.audit if line["action"] == "plan-delete-job"} == {"job/shop/cart-sweeper-1", "job/shop/cart-sweeper-2"}
    real = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"], "compare_running_digests": True})
    assert real.state == "success", (real.failed_tasks(), real.errors())
    assert store.try_get(JOBS, "shop", "cart-sweeper-1") is not None and store.try_get(JOBS, "shop", "cart-sweeper-2") is None
    # A Job pinned by the same digest runs it (as a kubelet reports it) and is current either way.
    pinned = add_job(store, cron, "cart-sweeper-3", f"registry.example/batch/cart-sweeper:2@{pulled}")
    assert staging.wait_for(lambda: bool(running_pods_of(store, pinned)), timeout=30)
    assert running_pods_of(store, pinned)[0]["status"]["containerStatuses"][0]["imageID"] == f"registry.example/batch/cart-sweeper@{pulled}"
    again = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": True, "namespaces": ["shop"]})
    assert {line["target"] for line in again.audit if line["action"] == "plan-delete-job"} == {"job/shop/cart-sweeper-1"}, "by reference only the tagged Job differs"


def test_jobs_with_completed_work_and_suspended_jobs_are_left_alone_unless_asked(dag_runner: DagRunner, world: World) -> None:
    staging = world.clusters["staging"].cluster
    store = staging.store
    cron = add_cronjob(store, "shop", "cart-sweeper", NEW)
    indexed = add_job(store, cron, "cart-sweeper-indexed", OLD, completionMode="Indexed", completions=3, parallelism=3)
    queued = add_job(store, cron, "cart-sweeper-queued", OLD, suspend=True)  # as Kueue creates it, waiting for admission
    plain = add_job(store, cron, "cart-sweeper-plain", OLD)
    # Index 1 finishes early (its pod's run time cut short): the Job reports completedIndexes "1".
    assert staging.wait_for(lambda: len(running_pods_of(store, indexed)) == 3, timeout=30)
    pod_1 = next(p for p in running_pods_of(store, indexed) if p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "1")
    store.mutate(PODS, "shop", pod_1["metadata"]["name"], lambda p: p["metadata"]["annotations"].update({RUN_SECONDS_ANNOTATION: "0"}))
    assert staging.wait_for(lambda: store.get(JOBS, "shop", "cart-sweeper-indexed").get("status", {}).get("completedIndexes") == "1", timeout=30)

    first = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"]})
    assert first.state == "success", (first.failed_tasks(), first.errors())
    assert store.try_get(JOBS, "shop", "cart-sweeper-plain") is None and plain
    assert store.get(JOBS, "shop", "cart-sweeper-indexed")["metadata"]["uid"] == indexed["metadata"]["uid"]
    assert store.get(JOBS, "shop", "cart-sweeper-queued")["metadata"]["uid"] == queued["metadata"]["uid"]
    skips = {line["target"]: line["detail"]["why"] for line in first.audit if line["action"] == "plan-skip"}
    assert "indexes 1 completed" in skips["job/shop/cart-sweeper-indexed"] and "suspended" in skips["job/shop/cart-sweeper-queued"]
    assert set(by_ref(summary_of(first)["jobs_left_alone"])) == {"shop/cart-sweeper-indexed", "shop/cart-sweeper-queued"}

    second = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["shop"], "refresh_jobs_with_progress": True, "refresh_suspended_jobs": True})
    assert second.state == "success", (second.failed_tasks(), second.errors())
    assert store.try_get(JOBS, "shop", "cart-sweeper-indexed") is None and store.try_get(JOBS, "shop", "cart-sweeper-queued") is None


@pytest.mark.kubectl
def test_kubectl_describe_shows_what_the_run_did(dag_runner: DagRunner, world: World) -> None:
    """Oracle: the real ``kubectl describe cronjob`` lists the Events of the deletion and the fresh Job."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    store = world.clusters["staging"].cluster.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store, "payments/settlement-export")
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True, "namespaces": ["payments"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    described = subprocess.run(
        ["kubectl", "describe", "cronjob", "settlement-export", "-n", "payments"],
        capture_output=True,
        text=True,
        env=dict(os.environ, KUBECONFIG=str(world.kubeconfig("staging"))),
        timeout=60,
        check=True,
    ).stdout
    events = [line.split() for line in described.split("Events:", 1)[1].splitlines() if "kube-maintenance" in line]
    assert sorted(line[1] for line in events) == ["FreshJobCreated", "StaleJobDeleted"], described


@pytest.mark.parametrize("point", ["between-deletion-and-creation", "mid-deletion"])
def test_a_run_killed_between_deletion_and_creation_and_run_again_starts_each_fresh_job_once(
    dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """Kill and resume: the task process dies after the stale Jobs went (or after the first of
    them) and before any fresh Job started; the operator clears the run and runs it again: every
    stale Job is gone, each CronJob gets exactly one fresh Job, and none owes one any more."""
    import datetime as dt

    from kube_maintenance.cronjob_refresh import tasks as cronjob_refresh_tasks
    from kube_maintenance.cronjob_refresh.decisions import FRESH_JOB_OWED_ANNOTATION

    store = world.clusters["staging"].cluster.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store)
    stale = seeded_stale_jobs(store)
    dag_runner.set_registry(registry_for(world, cronjob_refresh={"retries": 0}))
    conf = {"dry_run": False, "create_fresh_job": True, "pods_gone_timeout_seconds": 60}
    same_run = {"logical_date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)}
    same_run["run_after"] = same_run["logical_date"]
    with monkeypatch.context() as patched:
        if point == "between-deletion-and-creation":
            patched.setattr(cronjob_refresh_tasks, "create_fresh_jobs", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed before the fresh Jobs")))
        else:
            original = cronjob_refresh_tasks._delete_if_still_stale

            def dies_after_one(*args: Any, **kwargs: Any) -> Any:
                original(*args, **kwargs)
                raise RuntimeError("killed after one deletion")

            patched.setattr(cronjob_refresh_tasks, "_delete_if_still_stale", dies_after_one)
        killed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert killed.state == "failed" and "killed " in killed.text()
    assert [f"job/{ref}" for ref in stale if store.try_get(JOBS, *ref.split("/")) is None], "the kill came after a deletion"
    assert not [c for c in store.iter(CRONJOBS) if fresh_jobs_of(store, c)], "no fresh Job before the re-run"

    resumed = dag_runner.run(DAG_FILE, DAG_ID, conf, **same_run)
    assert resumed.state == "success", (resumed.failed_tasks(), resumed.errors())
    assert all(store.try_get(JOBS, *ref.split("/")) is None for ref in stale), "every stale Job is gone"
    for namespace, name in SEEDED.items():
        cron = store.get(CRONJOBS, namespace, name)
        assert len(fresh_jobs_of(store, cron)) == 1, f"{namespace}/{name}: one fresh Job, not zero, not two"
        assert FRESH_JOB_OWED_ANNOTATION not in (cron["metadata"].get("annotations") or {}), "the debt is settled"
    created = [l for run in (killed, resumed) for l in run.audit if l["action"] == "create-job" and l["outcome"] == "done"]
    assert len(created) == len(SEEDED), created


# ----------------------------------------------------------------------------------- deferred waits
PODS_TRIGGER = "kube_maintenance.cronjob_refresh.triggers.JobPodsGoneTrigger"


def pods_slow_to_go(store: Any, monkeypatch: pytest.MonkeyPatch, job_uids: set[str]) -> Any:
    """The pods of these Jobs, once deleted, stay terminating (as a long grace period or a preStop
    hook keeps them) until ``release()``: their kubelet's final removal waits for it."""
    import threading

    original = store.remove_now
    released = threading.Event()
    pending: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def remove_now(key: str, namespace: str | None, name: str) -> Any:
        pod = store.try_get(key, namespace, name) if key == PODS else None
        if pod is not None and (pod["metadata"].get("labels") or {}).get(JOB_CONTROLLER_UID_LABEL) in job_uids:
            with lock:
                if not released.is_set():
                    pending.add((namespace, name))
                    return None
        return original(key, namespace, name)

    def release() -> None:
        with lock:
            released.set()
            held = sorted(pending)
        for namespace, name in held:
            original(PODS, namespace, name)

    monkeypatch.setattr(store, "remove_now", remove_now)
    return release


def test_the_wait_for_deleted_jobs_pods_is_deferred_and_woken_as_they_go(dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch, triggerer: BackgroundTriggerer) -> None:
    """The stale Jobs' pods take a while to terminate: each group's wait holds no worker slot, it
    defers (never reschedules) to a trigger watching those pods from its own list, and their going
    wakes it before the trigger's deadline (at most the longest sleep between looks, a minute here)."""
    store = world.clusters["staging"].cluster.store
    stale = seeded_stale_jobs(store)
    uids = {job["metadata"]["uid"] for job in stale.values()}
    assert world.clusters["staging"].cluster.wait_for(lambda: all(running_pods_of(store, j) for j in stale.values()), timeout=30)
    release = pods_slow_to_go(store, monkeypatch, uids)
    namespaces = {ref.split("/")[0] for ref in stale}

    def both_waits_deferred() -> None:
        waiting = lambda: {r.task for r in triggerer.of("refresh.wait_for_pods_gone")}  # noqa: E731
        world.clusters["staging"].cluster.wait_for(lambda: len(waiting()) == len(namespaces), timeout=120, interval=0.05)
        release()

    import threading

    releaser = threading.Thread(target=both_waits_deferred, daemon=True)
    releaser.start()
    dag_runner.set_registry(registry_for(world, cronjob_refresh={"poke_interval_seconds": 60}))
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "pods_gone_timeout_seconds": 300})
    releaser.join(timeout=5)
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert audit_targets(result, "delete-job", "done") == {f"job/{ref}" for ref in stale}
    assert pods_of(store, uids) == [], "every pod of the deleted Jobs is gone"
    assert triggerer.reschedules == [], "waits are deferrals, not reschedules"
    runs = triggerer.of("refresh.wait_for_pods_gone")
    assert {r.classpath for r in runs} == {PODS_TRIGGER}
    watched = {w["namespace"] for r in runs for w in r.kwargs["watches"]}
    assert watched == namespaces, watched
    for run in runs:
        for watch in run.kwargs["watches"]:
            assert watch["plural"] == "pods" and watch["wake_on"] == ["DELETED"] and watch["resource_version"], watch
            assert watch["label_selector"].startswith(f"{JOB_CONTROLLER_UID_LABEL} in (") and watch["seen"], watch
        assert run.moment is not None and run.moment <= run.started + 61, "the deadline is absolute, at most the longest sleep ahead"
        assert run.payload["woke"] == "change" and run.ended < run.moment, run.payload
        assert "deleted" in run.payload["why"]


def test_pods_that_outlast_the_timeout_fail_the_wait_at_its_deadline_and_no_fresh_job_starts(
    dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch, triggerer: BackgroundTriggerer
) -> None:
    """A deleted Job's pods never go: the deferred wait's deadline is the pods-gone timeout (not the
    longest sleep, a minute here); at it the task fails, naming the pods, and no fresh Job starts."""
    store = world.clusters["staging"].cluster.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store, "payments/settlement-export")
    stale = {ref: job for ref, job in seeded_stale_jobs(store).items() if ref.startswith("payments/")}
    uids = {job["metadata"]["uid"] for job in stale.values()}
    assert world.clusters["staging"].cluster.wait_for(lambda: all(running_pods_of(store, j) for j in stale.values()), timeout=30)
    release = pods_slow_to_go(store, monkeypatch, uids)
    dag_runner.set_registry(registry_for(world, cronjob_refresh={"poke_interval_seconds": 60, "retries": 0}))
    try:
        result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "namespaces": ["payments"], "create_fresh_job": True, "pods_gone_timeout_seconds": 3})
    finally:
        release()
    assert result.state == "failed"
    assert sorted(t for t in result.failed_tasks() if t != "cleanup") == ["refresh.wait_for_pods_gone[0]"], result.failed_tasks()
    assert "pod(s) of deleted Jobs still there 3s after the deletion" in result.text() and "no fresh Job is started for their CronJobs" in result.text()
    assert not [line for line in result.audit if line["action"] == "create-job" and line["outcome"] == "done"]
    assert not fresh_jobs_of(store, store.get(CRONJOBS, "payments", "settlement-export"))
    runs = triggerer.of("refresh.wait_for_pods_gone")
    assert runs and triggerer.reschedules == []
    import datetime as dt

    deleted_at = max(dt.datetime.fromisoformat(line["ts"]).timestamp() for line in result.audit if line["action"] == "delete-job" and line["outcome"] == "done")
    # (audit times are whole seconds: the deletion was within the second after its line's time)
    assert all(r.moment is not None and r.moment <= deleted_at + 1 + 3 for r in runs), "the timeout, not the minute, is the deadline"
    assert runs[-1].payload["woke"] == "deadline", [r.payload for r in runs]
