"""CronJob image refresh, whole DAG runs against the sandbox through real Airflow connections."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from kube_maintenance import k8s
from kube_maintenance.cronjob_refresh import (
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
from sandbox.resources import CRONJOBS, JOBS, PODS
from sandbox.scenario import World

from harness import DagRunner, registry_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DAG_FILE = "cronjob_refresh.py"
DAG_ID = "cronjob_refresh__staging"
SEEDED = {"payments": "settlement-export", "search": "catalog-reindex"}  # CronJobs whose running Job is on an old image
OLD, NEW = "registry.example/batch/cart-sweeper:1", "registry.example/batch/cart-sweeper:2"
MIGRATE_OLD, MIGRATE_NEW = "registry.example/batch/cart-migrate:1", "registry.example/batch/cart-migrate:2"


# ------------------------------------------------------------------------------------------- helpers
def writes_since(world: World, cluster: str, seq: int) -> list:
    return [r for r in world.clusters[cluster].cluster.requests.since(seq) if r.verb in WRITE_VERBS and "kube-maintenance" in r.user_agent]


def ours_since(world: World, cluster: str, seq: int) -> list:
    return [r for r in world.clusters[cluster].cluster.requests.since(seq) if "kube-maintenance" in r.user_agent]


def run_forever(pod_template: dict[str, Any]) -> None:
    """Sandbox-only: the Job's pods run until deleted (a stuck Job)."""
    pod_template.setdefault("metadata", {}).setdefault("annotations", {})[RUN_SECONDS_ANNOTATION] = "forever"


def add_cronjob(store: Any, namespace: str, name: str, image: str, init_image: str | None = None, suspend: bool = False) -> dict:
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
                "schedule": "0 0 1 1 *",  # once a year: the controller starts nothing during a test
                "concurrencyPolicy": "Forbid",
                "suspend": suspend,
                "jobTemplate": {"metadata": {"labels": {"app": name}}, "spec": {"backoffLimit": 2, "template": template}},
            },
        },
    )


def add_job(store: Any, cron: dict, name: str, image: str, init_image: str | None = None, manual: bool = False) -> dict:
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
            "spec": {"backoffLimit": 2, "template": template},
        },
    )


def keep_fresh_jobs_running(store: Any) -> None:
    """The seeded CronJobs' templates get the sandbox's run-forever annotation, so a fresh Job is still
    running when judged (a template change of no interest to the refresh: images stay as they are)."""
    for namespace, name in SEEDED.items():
        store.mutate(CRONJOBS, namespace, name, lambda c: run_forever(c["spec"]["jobTemplate"]["spec"]["template"]))


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
    # shop: a CronJob with a current Job and a kubectl-made Job whose init container is on an old
    # image (never listed in the CronJob's status.active); a suspended CronJob with a stale Job.
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

    # One fresh Job per refreshed CronJob, made as kubectl create job --from makes it, running the new image.
    for ref in refreshed:
        cron = store.get(CRONJOBS, *ref.split("/"))
        fresh = fresh_jobs_of(store, cron)
        assert len(fresh) == 1, (ref, [j["metadata"]["name"] for j in fresh])
        job = fresh[0]
        assert job["metadata"]["annotations"][INSTANTIATE_ANNOTATION] == "manual"
        assert job["metadata"]["annotations"][REPLACES_ANNOTATION] in {r for r in stale if r.startswith(cron["metadata"]["namespace"] + "/")}
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert staging.wait_for(lambda j=job: bool(running_pods_of(store, j)), timeout=30), f"fresh Job of {ref} runs"
        assert f"job/{job['metadata']['namespace']}/{job['metadata']['name']}" in audit_targets(result, "create-job", "done")
    assert len(audit_targets(result, "create-job", "done")) == 3

    # Only those writes, nothing in kube-system, one list of CronJobs and of Jobs per namespace.
    writes = {(r.verb, r.resource, r.namespace) for r in writes_since(world, "staging", seq) if r.resource != "leases"}
    assert writes == {("delete", "jobs", ns) for ns in ("payments", "search", "shop")} | {("create", "jobs", ns) for ns in ("payments", "search", "shop")}
    ours = ours_since(world, "staging", seq)
    assert [r for r in ours if r.namespace == "kube-system"] == []
    assert [v for v in staging.monitor.report()["violations"] if v["kind"] == "protected-namespace"] == []
    for resource in ("cronjobs", "jobs"):
        per_namespace: dict[str, int] = {}
        for r in ours:
            if r.resource == resource and r.verb == "list":
                per_namespace[r.namespace] = per_namespace.get(r.namespace, 0) + 1
        assert per_namespace and max(per_namespace.values()) == 1, (resource, per_namespace)
    assert not [r for r in ours if r.resource == "jobs" and r.verb == "get"], "no request per Job"
    assert ours_since(world, "production", prod_seq) == []
    summary = [line for line in result.audit if line["action"] == "summary"][-1]["after"]
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
    assert {line["detail"]["cronjob"] for line in result.audit if line["action"] == "plan-create-job"} == {"payments/settlement-export", "search/catalog-reindex"}
    assert all(staging.store.try_get(JOBS, *ref.split("/")) is not None for ref in stale)


def test_a_job_changed_after_it_was_judged_is_not_deleted(dag_runner: DagRunner, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone changes the Job between the judge task and its deletion: the resourceVersion
    precondition refuses the delete. The change is made at the last moment before the DELETE
    request (wrapping the client's delete), so the test does not depend on task timing."""
    staging = world.clusters["staging"].cluster
    store = staging.store
    keep_fresh_jobs_running(store)
    stale = seeded_stale_jobs(store)
    changed_ref = next(ref for ref in stale if ref.startswith("payments/"))
    other_ref = next(ref for ref in stale if ref.startswith("search/"))
    real_delete = k8s.KubeClient.delete

    def delete_after_someone_changed_it(self: k8s.KubeClient, ref: k8s.ResourceRef, name: str, namespace: str | None = None, **kw: Any) -> Any:
        if ref == k8s.JOBS and f"{namespace}/{name}" == changed_ref:
            store.mutate(JOBS, namespace, name, lambda job: job["metadata"].setdefault("labels", {}).update({"debug": "keep-me"}))
        return real_delete(self, ref, name, namespace, **kw)

    monkeypatch.setattr(k8s.KubeClient, "delete", delete_after_someone_changed_it)
    result = dag_runner.run(DAG_FILE, DAG_ID, {"dry_run": False, "create_fresh_job": True})

    assert result.state == "success", (result.failed_tasks(), result.errors())
    kept = store.try_get(JOBS, *changed_ref.split("/"))
    assert kept is not None and kept["metadata"]["labels"]["debug"] == "keep-me" and running_pods_of(store, kept)
    skipped = [line for line in result.audit if line["action"] == "delete-job" and line["target"] == f"job/{changed_ref}"]
    assert [line["outcome"] for line in skipped] == ["skipped"] and "changed since it was judged" in skipped[0]["detail"]["why"]
    assert "Precondition failed: ResourceVersion in precondition" in result.text()
    assert store.try_get(JOBS, *other_ref.split("/")) is None, "the other stale Job is deleted as planned"
    assert fresh_jobs_of(store, store.get(CRONJOBS, "payments", "settlement-export")) == [], "no fresh Job beside a stale one still running"
    assert len(fresh_jobs_of(store, store.get(CRONJOBS, "search", "catalog-reindex"))) == 1
    assert [line for line in result.audit if line["action"] == "summary"][-1]["after"]["changed_since_judged"] == [changed_ref]


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
