"""CronJob image refresh decisions: parameters, namespaces and shards, stale Jobs, the fresh Job."""
from __future__ import annotations

import datetime as dt

import pytest

from kube_maintenance.cronjob_refresh.decisions import (
    INSTANTIATE_ANNOTATION,
    JOB_CONTROLLER_UID_LABEL,
    MAX_NAMESPACE_GROUPS,
    REFRESH_OF_ANNOTATION,
    REPLACES_ANNOTATION,
    CronJobRefreshParams,
    CronJobVerdict,
    fresh_job_manifest,
    fresh_job_name,
    is_fresh_job_of,
    is_job_finished,
    judge_namespace,
    namespace_groups_setting,
    next_scheduled_job,
    select_namespaces,
    shard,
)
from kube_maintenance.cronjob_refresh.images import normalise_image, running_digest
from kube_maintenance.node_replacement.plan import ParamError
from kube_maintenance.core.registry import RegistryError

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


def params(**kw: object) -> CronJobRefreshParams:
    return CronJobRefreshParams.from_mapping(kw)


def stamp(minutes_ago: float) -> str:
    return (NOW - dt.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_spec(images: dict[str, str], init: dict[str, str] | None = None) -> dict:
    spec: dict = {"containers": [{"name": n, "image": i} for n, i in images.items()], "restartPolicy": "OnFailure"}
    if init:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init.items()]
    return spec


def cronjob(name: str, images: dict[str, str], init: dict[str, str] | None = None, suspend: bool = False, labels: dict | None = None, generation: int = 3) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generation, "labels": labels or {}},
        "spec": {
            "schedule": "0 * * * *",
            "suspend": suspend,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}, "annotations": {"team": "batch"}},
                "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(images, init)}},
            },
        },
    }


def job(name: str, owner: str | None, images: dict[str, str], init: dict[str, str] | None = None, age_minutes: float = 60, finished: str | None = None, controller: bool = True) -> dict:
    meta: dict = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "41", "creationTimestamp": stamp(age_minutes)}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "CronJob", "name": owner, "uid": f"uid-{owner}", "controller": controller}]
    status: dict = {"active": 1}
    if finished:
        status = {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": finished, "status": "True"}]}
    return {"metadata": meta, "spec": {"template": {"spec": pod_spec(images, init)}}, "status": status}


def by_name(verdicts: list[CronJobVerdict]) -> dict[str, CronJobVerdict]:
    return {v.name: v for v in verdicts}


# ------------------------------------------------------------------------------------------ parameters
def test_defaults_are_a_dry_run_over_every_namespace() -> None:
    p = params()
    assert p.dry_run and not p.create_fresh_job and p.namespaces == () and p.namespace_selector == "" and p.min_job_age_minutes == 0


def test_every_bad_parameter_is_reported_at_once_naming_its_field() -> None:
    with pytest.raises(ParamError) as err:
        params(namespace_selector="team in (a", cronjob_selector="=x", min_job_age_minutes=-5, dry_run="no", pods_gone_timeout_seconds=0, namespaces=["Shop"])
    text = str(err.value)
    for field in ("namespace_selector:", "cronjob_selector:", "min_job_age_minutes:", "dry_run:", "pods_gone_timeout_seconds:", "namespaces: not valid namespace names: 'Shop'"):
        assert field in text, (field, text)


def test_names_and_a_selector_together_are_refused() -> None:
    with pytest.raises(ParamError, match="give namespace names or a namespace selector, not both"):
        params(namespaces=["shop"], namespace_selector="team=x")


def test_namespace_names_may_come_as_text() -> None:
    assert params(namespaces="shop, payments\nsearch,shop").namespaces == ("shop", "payments", "search")


def test_namespace_groups_setting_is_bounded_well_below_airflows_map_limit() -> None:
    assert namespace_groups_setting({}, "c") == 16
    assert namespace_groups_setting({"max_namespace_groups": 4}, "c") == 4
    assert MAX_NAMESPACE_GROUPS < 1024
    for bad in (0, MAX_NAMESPACE_GROUPS + 1, "8", True):
        with pytest.raises(RegistryError, match=r"clusters \(c\)\.operations\.cronjob_refresh\.max_namespace_groups"):
            namespace_groups_setting({"max_namespace_groups": bad}, "c")


# ------------------------------------------------------------------------------------------ namespaces
NAMESPACES = [
    {"metadata": {"name": n, "labels": labels}, "status": {"phase": phase}}
    for n, labels, phase in [
        ("shop", {"managed-by": "Helm"}, "Active"),
        ("payments", {"managed-by": "Helm"}, "Active"),
        ("scratch", {}, "Active"),
        ("kube-system", {"managed-by": "Helm"}, "Active"),
        ("monitoring", {"managed-by": "Helm"}, "Active"),
        ("old", {"managed-by": "Helm"}, "Terminating"),
    ]
]
PROTECTED = ("kube-system", "kube-public", "kube-node-lease", "monitoring")


def test_a_selector_never_picks_protected_or_terminating_namespaces() -> None:
    chosen = select_namespaces(NAMESPACES, params(namespace_selector="managed-by=Helm"), PROTECTED)
    assert chosen.chosen == ["payments", "shop"]
    assert chosen.skipped == {"kube-system": "protected", "monitoring": "protected", "old": "being deleted", "scratch": "labels do not match 'managed-by=Helm'"}
    assert select_namespaces(NAMESPACES, params(), PROTECTED).chosen == ["payments", "scratch", "shop"]


def test_explicit_names_must_exist_and_not_be_protected() -> None:
    assert select_namespaces(NAMESPACES, params(namespaces=["scratch", "shop"]), PROTECTED).chosen == ["scratch", "shop"]
    with pytest.raises(ParamError, match="namespaces: no such namespace.*: nope"):
        select_namespaces(NAMESPACES, params(namespaces=["shop", "nope"]), PROTECTED)
    with pytest.raises(ParamError, match="namespaces: kube-system, monitoring protected"):
        select_namespaces(NAMESPACES, params(namespaces=["kube-system", "monitoring", "shop"]), PROTECTED)


@pytest.mark.parametrize("count,max_groups,sizes", [(0, 4, []), (3, 16, [1, 1, 1]), (10, 4, [3, 3, 2, 2]), (700, 16, [44] * 12 + [43] * 4)])
def test_shards_are_at_most_max_groups_and_keep_every_namespace_once(count: int, max_groups: int, sizes: list[int]) -> None:
    names = [f"ns-{i:04d}" for i in range(count)]
    groups = shard(names, max_groups)
    assert [len(g) for g in groups] == sizes
    assert [n for g in groups for n in g] == names


# ------------------------------------------------------------------------------------------ judging
def test_finished_means_a_true_complete_or_failed_condition() -> None:
    assert is_job_finished(job("a", "c", {}, finished="Complete")) and is_job_finished(job("b", "c", {}, finished="Failed"))
    assert not is_job_finished(job("c", "c", {}))
    assert not is_job_finished({"status": {"conditions": [{"type": "Complete", "status": "False"}, {"type": "Suspended", "status": "True"}]}})


def test_stale_current_finished_and_foreign_jobs() -> None:
    cronjobs = [cronjob("export", {"main": "export:2"}), cronjob("other", {"main": "other:1"})]
    jobs = [
        job("export-1", "export", {"main": "export:1"}),  # stale: made by the controller
        job("export-manual", "export", {"main": "export:1"}),  # stale: kubectl create job --from (never in status.active)
        job("export-2", "export", {"main": "export:2"}),  # current
        job("export-0", "export", {"main": "export:1"}, finished="Complete"),  # finished: not active
        job("export-failed", "export", {"main": "export:1"}, finished="Failed"),
        job("lookalike", "export", {"main": "export:1"}, controller=False),  # owned, but not its controller
        job("bare", None, {"main": "export:1"}),
        job("other-1", "other", {"main": "other:1"}),
    ]
    verdicts = by_name(judge_namespace(cronjobs, jobs, params(), NOW))
    export = verdicts["export"]
    assert [j.name for j in export.stale] == ["export-1", "export-manual"]
    assert export.current == ["export-2"]
    stale = export.stale[0]
    assert (stale.uid, stale.old_images, stale.new_images) == ("uid-export-1", {"main": "export:1"}, {"main": "export:2"})
    assert verdicts["other"].stale == [] and verdicts["other"].current == ["other-1"]


def test_init_containers_count_and_containers_are_matched_by_name() -> None:
    cron = cronjob("etl", {"main": "etl:2", "sidecar": "proxy:1"}, init={"migrate": "etl-migrate:2"})
    jobs = [
        job("init-only", "etl", {"sidecar": "proxy:1", "main": "etl:2"}, init={"migrate": "etl-migrate:1"}),  # order differs, init is old
        job("same", "etl", {"sidecar": "proxy:1", "main": "etl:2"}, init={"migrate": "etl-migrate:2"}),
        job("renamed", "etl", {"worker": "etl:2"}, init={"migrate": "etl-migrate:2"}),  # 'worker' is not in the template any more
    ]
    verdict = judge_namespace([cron], jobs, params(), NOW)[0]
    stale = {j.name: j for j in verdict.stale}
    assert set(stale) == {"init-only", "renamed"} and verdict.current == ["same"]
    assert stale["init-only"].old_images == {"migrate": "etl-migrate:1"} and stale["init-only"].new_images == {"migrate": "etl-migrate:2"}
    # The template lost 'worker' and gained 'main' and 'sidecar': each side says which.
    assert stale["renamed"].old_images == {"main": None, "sidecar": None, "worker": "etl:2"}
    assert stale["renamed"].new_images == {"main": "etl:2", "sidecar": "proxy:1", "worker": None}


def test_a_container_added_to_or_removed_from_the_template_makes_a_job_stale() -> None:
    cron = cronjob("etl", {"main": "etl:2", "metrics": "exporter:1"})
    jobs = [job("without-metrics", "etl", {"main": "etl:2"}), job("with-extra", "etl", {"main": "etl:2", "metrics": "exporter:1", "debug": "busybox"}), job("same", "etl", {"metrics": "exporter:1", "main": "etl:2"})]
    verdict = judge_namespace([cron], jobs, params(), NOW)[0]
    stale = {j.name: (j.old_images, j.new_images) for j in verdict.stale}
    assert stale == {"without-metrics": ({"metrics": None}, {"metrics": "exporter:1"}), "with-extra": ({"debug": "busybox"}, {"debug": None})}
    assert verdict.current == ["same"]


@pytest.mark.parametrize(
    "job_image,template_image",
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "index.docker.io/library/nginx:1.27"),
        ("team/tool", "docker.io/team/tool:latest"),
        ("registry.example/a/b:1@sha256:" + "a" * 64, "registry.example/a/b@sha256:" + "a" * 64),
        ("localhost:5000/b", "localhost:5000/b:latest"),
    ],
)
def test_references_naming_the_same_image_are_not_stale(job_image: str, template_image: str) -> None:
    verdict = judge_namespace([cronjob("c", {"main": template_image})], [job("c-1", "c", {"main": job_image})], params(), NOW)[0]
    assert verdict.current == ["c-1"] and verdict.stale == []


@pytest.mark.parametrize(
    "job_image,template_image",
    [
        ("nginx:1.27", "nginx:1.28"),
        ("nginx", "quay.io/library/nginx"),
        ("registry.example/a/b@sha256:" + "a" * 64, "registry.example/a/b@sha256:" + "b" * 64),
        ("registry.example/a/b:1", "registry.example/a/b:1@sha256:" + "a" * 64),  # pinned now: not provably the same by reference
        ("localhost:5000/b:1", "localhost/b:1"),
    ],
)
def test_references_naming_other_images_are_stale(job_image: str, template_image: str) -> None:
    verdict = judge_namespace([cronjob("c", {"main": template_image})], [job("c-1", "c", {"main": job_image})], params(), NOW)[0]
    assert [j.name for j in verdict.stale] == ["c-1"]


def test_normalised_references() -> None:
    assert str(normalise_image("nginx")) == "docker.io/library/nginx:latest"
    assert str(normalise_image("localhost:5000/tools/b")) == "localhost:5000/tools/b:latest"
    assert str(normalise_image("r.example:443/b:2@sha256:ab")) == "r.example:443/b:2@sha256:ab"
    assert normalise_image("r.example/b@sha256:ab").tag is None
    assert running_digest("docker-pullable://nginx@sha256:ab") == "sha256:ab" and running_digest("docker.io/library/nginx@sha256:cd") == "sha256:cd"
    assert running_digest("sha256:ab") is None and running_digest("") is None and running_digest(None) is None


def pod_of(job_name: str, statuses: dict[str, str], init: dict[str, str] | None = None) -> dict:
    status = {"containerStatuses": [{"name": n, "imageID": i} for n, i in statuses.items()]}
    if init:
        status["initContainerStatuses"] = [{"name": n, "imageID": i} for n, i in init.items()]
    return {"metadata": {"name": f"{job_name}-x", "labels": {JOB_CONTROLLER_UID_LABEL: f"uid-{job_name}"}}, "status": status}


def test_running_digests_prove_a_tagged_job_current_only_when_asked_and_every_pod_agrees() -> None:
    pinned, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    cron = cronjob("c", {"main": f"registry.example/c@{pinned}"}, init={"migrate": "registry.example/m:2"})
    jobs = [job(n, "c", {"main": "registry.example/c:2"}, init={"migrate": "registry.example/m:2"}) for n in ("runs-it", "runs-other", "mixed", "no-report")]
    pods = [
        pod_of("runs-it", {"main": f"registry.example/c@{pinned}"}, init={"migrate": "registry.example/m@" + other}),
        pod_of("runs-other", {"main": f"registry.example/c@{other}"}),
        pod_of("mixed", {"main": f"registry.example/c@{pinned}"}),
        pod_of("mixed", {"main": f"docker-pullable://registry.example/c@{other}"}),
        pod_of("no-report", {"main": ""}),
    ]
    by_refs = judge_namespace([cron], jobs, params(), NOW, pods)[0]
    assert {j.name for j in by_refs.stale} == {"runs-it", "runs-other", "mixed", "no-report"}
    by_digests = judge_namespace([cron], jobs, params(compare_running_digests=True), NOW, pods)[0]
    assert by_digests.current == ["runs-it"]
    assert {j.name for j in by_digests.stale} == {"runs-other", "mixed", "no-report"}


def test_young_jobs_wait_for_the_minimum_age() -> None:
    cron = cronjob("export", {"main": "export:2"})
    jobs = [job("young", "export", {"main": "export:1"}, age_minutes=5), job("old", "export", {"main": "export:1"}, age_minutes=50)]
    verdict = judge_namespace([cron], jobs, params(min_job_age_minutes=30), NOW)[0]
    assert [j.name for j in verdict.stale] == ["old"] and verdict.too_young == ["young"]
    assert [j.name for j in judge_namespace([cron], jobs, params(), NOW)[0].stale] == ["old", "young"]


def test_suspended_cronjobs_are_reported_and_left_alone() -> None:
    verdict = judge_namespace([cronjob("paused", {"main": "p:2"}, suspend=True)], [job("paused-1", "paused", {"main": "p:1"})], params(), NOW)[0]
    assert verdict.suspended and [j.name for j in verdict.stale] == ["paused-1"]
    assert verdict.jobs_to_delete == []


def test_opted_out_cronjobs_are_reported_and_left_alone_and_unclear_values_opt_nothing_out() -> None:
    skipped = cronjob("ledger", {"main": "l:2"})
    skipped["metadata"]["annotations"] = {"kube-maintenance.io/skip": "true", "kube-maintenance.io/skip-reason": "month-end close"}
    typo = cronjob("typo", {"main": "t:2"})
    typo["metadata"]["annotations"] = {"kube-maintenance.io/skip": "yes"}
    verdicts = by_name(judge_namespace([skipped, typo], [job("ledger-1", "ledger", {"main": "l:1"}), job("typo-1", "typo", {"main": "t:1"})], params(), NOW))
    assert verdicts["ledger"].opted_out and "month-end close" in verdicts["ledger"].opted_out
    assert [j.name for j in verdicts["ledger"].stale] == ["ledger-1"] and verdicts["ledger"].jobs_to_delete == []
    assert verdicts["typo"].opted_out is None and "'yes'" in (verdicts["typo"].unclear_opt_out or "")
    assert [j.name for j in verdicts["typo"].jobs_to_delete] == ["typo-1"]


def test_opted_out_namespaces_are_left_out_even_when_named() -> None:
    namespaces = [*NAMESPACES, {"metadata": {"name": "ledger", "labels": {"managed-by": "Helm"}, "annotations": {"kube-maintenance.io/skip": "True", "kube-maintenance.io/skip-reason": "audit"}}}]
    for p in (params(), params(namespaces=["ledger", "shop"])):
        selection = select_namespaces(namespaces, p, PROTECTED)
        assert "ledger" not in selection.chosen and "shop" in selection.chosen
        assert "audit" in selection.opted_out["ledger"] and selection.skipped["ledger"] == selection.opted_out["ledger"]


def test_jobs_with_completed_work_or_suspended_are_left_alone_unless_asked() -> None:
    cron = cronjob("shards", {"main": "s:2"})
    indexed = job("indexed", "shards", {"main": "s:1"})
    indexed["status"] = {"active": 2, "completedIndexes": "0-2,5"}
    parallel = job("parallel", "shards", {"main": "s:1"})
    parallel["status"] = {"active": 3, "succeeded": 2}
    queued = job("queued", "shards", {"main": "s:1"})
    queued["spec"]["suspend"] = True
    queued["status"] = {}
    plain = job("plain", "shards", {"main": "s:1"})
    jobs = [indexed, parallel, queued, plain]
    verdict = judge_namespace([cron], jobs, params(), NOW)[0]
    assert [j.name for j in verdict.jobs_to_delete] == ["plain"]
    assert set(verdict.left_alone) == {"indexed", "parallel", "queued"}
    assert "indexes 0-2,5 completed" in verdict.left_alone["indexed"] and "2 pod(s) succeeded" in verdict.left_alone["parallel"]
    assert "suspended" in verdict.left_alone["queued"]
    with_progress = judge_namespace([cron], jobs, params(refresh_jobs_with_progress=True), NOW)[0]
    assert [j.name for j in with_progress.jobs_to_delete] == ["indexed", "parallel", "plain"] and set(with_progress.left_alone) == {"queued"}
    everything = judge_namespace([cron], jobs, params(refresh_jobs_with_progress=True, refresh_suspended_jobs=True), NOW)[0]
    assert len(everything.jobs_to_delete) == 4 and everything.left_alone == {}


def test_fresh_jobs_only_for_allow_and_only_without_a_current_job() -> None:
    def verdict_for(policy: str, current: bool) -> CronJobVerdict:
        cron = cronjob("c", {"main": "c:2"})
        cron["spec"]["concurrencyPolicy"] = policy
        jobs = [job("c-old", "c", {"main": "c:1"})] + ([job("c-new", "c", {"main": "c:2"})] if current else [])
        return judge_namespace([cron], jobs, params(), NOW)[0]

    assert verdict_for("Allow", current=False).why_no_fresh_job is None
    assert "already runs: c-new" in (verdict_for("Allow", current=True).why_no_fresh_job or "")
    for policy in ("Forbid", "Replace"):
        why = verdict_for(policy, current=False).why_no_fresh_job or ""
        assert f"concurrencyPolicy {policy}" in why and "2026-11-21T13:00:00+00:00" in why, why


def test_next_scheduled_job_follows_schedule_time_zone_and_runs_missed_while_a_job_ran() -> None:
    cron = cronjob("c", {"main": "c:2"})
    cron["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    cron["spec"].update(schedule="30 2 * * *", timeZone="Europe/Berlin")
    cron["status"] = {"lastScheduleTime": "2026-11-21T01:30:00Z"}  # today's 02:30 Berlin run started
    assert next_scheduled_job(cron, NOW).startswith("2026-11-22T02:30:00+01:00")
    cron["spec"]["timeZone"] = None
    cron["spec"]["schedule"] = "CRON_TZ=America/New_York 0 9 * * 1-5"
    cron["status"] = {"lastScheduleTime": "2026-11-20T14:00:00Z"}  # Friday's run; NOW is a Saturday
    assert next_scheduled_job(cron, NOW).startswith("2026-11-23T09:00:00-05:00")
    # Forbid skipped the 11:00 and 12:00 runs while a Job ran: the controller starts the most recent
    # one once no Job of it is active.
    later = NOW + dt.timedelta(minutes=30)
    cron["spec"].update(schedule="0 * * * *", concurrencyPolicy="Forbid")
    cron["status"] = {"lastScheduleTime": "2026-11-21T10:00:00Z"}
    assert next_scheduled_job(cron, later) == "as soon as no Job of it is active: the run due at 2026-11-21T12:00:00+00:00 has not started yet"
    cron["spec"]["startingDeadlineSeconds"] = 600  # too late for that one: the next hour
    assert next_scheduled_job(cron, later).startswith("2026-11-21T13:00:00+00:00")
    cron["spec"]["suspend"] = True
    assert next_scheduled_job(cron, NOW) == "none while the CronJob is suspended"
    cron["spec"].update(suspend=False, timeZone="Mars/Olympus")
    assert next_scheduled_job(cron, NOW).startswith("unknown")


def test_the_cronjob_selector_and_cronjobs_being_deleted() -> None:
    keep = cronjob("keep", {"main": "k:2"}, labels={"tier": "batch"})
    other = cronjob("other", {"main": "o:2"}, labels={"tier": "web"})
    going = cronjob("going", {"main": "g:2"}, labels={"tier": "batch"})
    going["metadata"]["deletionTimestamp"] = stamp(1)
    assert [v.name for v in judge_namespace([keep, other, going], [], params(cronjob_selector="tier=batch"), NOW)] == ["keep"]


def test_jobs_being_deleted_are_not_active() -> None:
    deleting = job("export-1", "export", {"main": "export:1"})
    deleting["metadata"]["deletionTimestamp"] = stamp(0)
    assert judge_namespace([cronjob("export", {"main": "export:2"})], [deleting], params(), NOW)[0].stale == []


def test_verdicts_survive_xcom() -> None:
    verdict = judge_namespace([cronjob("export", {"main": "export:2"})], [job("export-1", "export", {"main": "export:1"})], params(), NOW)[0]
    assert CronJobVerdict.from_xcom(verdict.to_xcom()) == verdict


# ------------------------------------------------------------------------------------------ fresh Job
def test_fresh_job_names_are_deterministic_per_template_generation_and_fit_a_label() -> None:
    name = fresh_job_name("settlement-export", "uid-1", 4)
    assert name == fresh_job_name("settlement-export", "uid-1", 4)
    assert name.startswith("settlement-export-r") and len(name) == len("settlement-export") + 11
    assert fresh_job_name("settlement-export", "uid-1", 5) != name and fresh_job_name("settlement-export", "uid-2", 4) != name
    assert len(fresh_job_name("x" * 52, "uid", 1)) == 63
    assert not name.rsplit("-", 1)[1].isdigit(), "never a name the CronJob controller would use"


def test_fresh_job_is_built_as_kubectl_create_job_from_cronjob_builds_it() -> None:
    cron = cronjob("export", {"main": "export:2"})
    cron["spec"]["jobTemplate"]["metadata"]["annotations"][INSTANTIATE_ANNOTATION] = "from-template"
    body = fresh_job_manifest(cron, "export-rabc", ["ns/export-1"], "uid-export/3")
    assert body["apiVersion"] == "batch/v1" and body["kind"] == "Job"
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"], meta["labels"]) == ("export-rabc", "ns", {"app": "export"})
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "export", "uid": "uid-export", "controller": True}]
    assert meta["annotations"] == {INSTANTIATE_ANNOTATION: "from-template", "team": "batch", REFRESH_OF_ANNOTATION: "uid-export/3", REPLACES_ANNOTATION: "ns/export-1"}
    assert body["spec"] == cron["spec"]["jobTemplate"]["spec"] and body["spec"] is not cron["spec"]["jobTemplate"]["spec"]
    del cron["spec"]["jobTemplate"]["metadata"]["annotations"][INSTANTIATE_ANNOTATION]
    assert fresh_job_manifest(cron, "n", [], "k")["metadata"]["annotations"][INSTANTIATE_ANNOTATION] == "manual"


def test_an_existing_job_is_recognised_as_this_refreshs_fresh_job() -> None:
    cron = cronjob("export", {"main": "export:2"})
    ours = fresh_job_manifest(cron, "export-rabc", ["ns/export-1"], "uid-export/3")
    assert is_fresh_job_of(ours, "uid-export", "uid-export/3")
    assert not is_fresh_job_of(ours, "uid-export", "uid-export/4")
    assert not is_fresh_job_of(job("export-rabc", "export", {"main": "export:2"}), "uid-export", "uid-export/3")
