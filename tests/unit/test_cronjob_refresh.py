"""CronJob image refresh decisions: parameters, namespaces and shards, stale Jobs, the fresh Job."""
from __future__ import annotations

import datetime as dt

import pytest

from kube_maintenance.cronjob_refresh import (
    INSTANTIATE_ANNOTATION,
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
    select_namespaces,
    shard,
)
from kube_maintenance.node_plan import ParamError
from kube_maintenance.registry import RegistryError

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
    assert (stale.uid, stale.resource_version, stale.old_images, stale.new_images) == ("uid-export-1", "41", {"main": "export:1"}, {"main": "export:2"})
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
    assert stale["renamed"].new_images == {"worker": None}


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
