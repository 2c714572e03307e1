"""CronJob image refresh: the work each task of the DAG does.

plan (parameters, window, namespaces, shards) -> preflight (lock) -> per group of namespaces, as
mapped instances of one task group: judge (one list of CronJobs and one of Jobs per namespace) ->
delete the stale Jobs (Background propagation, UID precondition, each read and judged again right
before) -> wait until their pods are gone (one list per namespace per look; between looks the task
is deferred to the triggerer, which watches those pods and wakes it as one goes) ->
create the fresh Jobs (Allow CronJobs only) -> release the lock and summarise at the end. Every
change also writes a Kubernetes Event on the object it touched. Every step is safe to retry or re-run:
- a Job already deleted, or replaced by a same-named one, is not an error; a Job whose status moved
  on since it was judged (a busy parallel Job, a crash loop) is judged again on a fresh read and
  deleted if still stale; one that finished, got suspended or gained completed work meanwhile, or
  whose CronJob got suspended, is left and reported;
- a fresh Job's name is derived from its CronJob's UID and template generation, so a second try
  finds the first one's Job instead of starting another.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from kube_maintenance.cronjob_refresh.decisions import (
    JOB_CONTROLLER_UID_LABEL,
    CronJobRefreshParams,
    CronJobVerdict,
    StaleJob,
    FRESH_JOB_OWED_ANNOTATION,
    bounded,
    by_reason,
    cronjob_images,
    fresh_job_manifest,
    fresh_job_owed_patch,
    fresh_job_name,
    group_label,
    image_differences,
    in_group,
    is_fresh_job_of,
    is_job_active,
    judge_job,
    judge_namespace,
    judgement,
    namespace_groups,
    refresh_key,
    running_digests,
    select_namespaces,
    shard,
    why_no_fresh_job,
)
from kube_maintenance.core.k8s import CRONJOBS, JOBS, NAMESPACES, PODS, KubeApiError
from kube_maintenance.core.params import ParamError
from kube_maintenance.core.forms import run_conf
from kube_maintenance.core.registry import load_registry
from kube_maintenance.core.runtime import TaskRuntime, begin_run, label_map_index, drop_lock, fail, fail_if_steps_failed, renew_lock, runtime_for, skip, take_lock

log = logging.getLogger("kube_maintenance.cronjob_refresh")

PLAN_TASK = "plan"
OPTED_OUT_XCOM = "opted_out_namespaces"
JUDGE_TASK = "refresh.judge"
DELETE_TASK = "refresh.delete_stale_jobs"
CREATE_TASK = "refresh.create_fresh_jobs"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _raw_params(cluster_name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    return run_conf(context, load_registry().cluster(cluster_name).operation("cronjob_refresh").get("defaults"))


def _params(cluster_name: str, context: Mapping[str, Any]) -> tuple[CronJobRefreshParams, TaskRuntime]:
    try:
        params = CronJobRefreshParams.from_mapping(_raw_params(cluster_name, context))
    except ParamError as exc:
        fail(str(exc))
    return params, runtime_for(cluster_name, context, params.dry_run)


def _all_mapped(context: Mapping[str, Any], task_id: str) -> list[dict[str, Any]]:
    """Every map index's XCom of a mapped task (xcom_pull gives a bare value when there is one)."""
    values = context["ti"].xcom_pull(task_ids=task_id)
    if values is None:
        return []
    if isinstance(values, dict):
        return [values]
    return [v for v in values if isinstance(v, dict)]


# ----------------------------------------------------------------------------------------------- plan
def plan(cluster_name: str, max_groups: int = 16, **context: Any) -> list[dict[str, Any]]:
    """Check the parameters and the window, pick the namespaces, shard them into at most ``max_groups``
    (each group a range of names: ``namespace_groups``; its judge lists the namespaces again)."""
    params, rt = _params(cluster_name, context)
    begin_run(rt, params)
    namespaces, _ = rt.kube.list(NAMESPACES)
    try:
        selection = select_namespaces(namespaces, params, rt.cluster.protected_namespaces)
    except ParamError as exc:
        fail(str(exc))
    for name, why in sorted(selection.skipped.items()):
        log.info("not refreshing CronJobs in namespace %s: %s", name, why)
    for name, why in sorted(selection.opted_out.items()):
        rt.audit.record("plan-skip", f"namespace/{name}", after="left alone", outcome="skipped", why=why)
    for name, what in sorted(selection.unclear.items()):
        log.warning("namespace %s: %s", name, what)
    # For the summary: opted-out namespaces by reason, bounded (the audit lines above name every one).
    context["ti"].xcom_push(key=OPTED_OUT_XCOM, value=by_reason(selection.opted_out.items(), where="the plan task's log"))
    if not selection.chosen:
        skip(f"no namespace to refresh (selector {params.namespace_selector!r}, names {list(params.namespaces)}); nothing done")
    groups = namespace_groups(selection.chosen, max_groups)
    for group, names in zip(groups, shard(selection.chosen, max_groups)):
        log.info("group %d (names from %s to before %s): %d namespace(s): %s", group["index"], group["from"], group["to"], len(names), ", ".join(names))
    log.info("%d namespace(s) in %d group(s)", len(selection.chosen), len(groups))
    return groups


# ------------------------------------------------------------------------------------------ preflight
def preflight(cluster_name: str, **context: Any) -> str:
    params, rt = _params(cluster_name, context)
    return take_lock(rt, params.dry_run)


# ---------------------------------------------------------------------------------------------- judge
def judge(cluster_name: str, group: Mapping[str, Any], **context: Any) -> dict[str, Any]:
    """Judge every CronJob of the group's namespaces (selected again, as the plan did, within the
    group's range of names): one list of namespaces, then one list of CronJobs and one of Jobs per
    namespace (and one of Job pods with ``compare_running_digests``). Hands on only the CronJobs
    with stale Jobs (``judgement``); the log and audit lines report every one."""
    params, rt = _params(cluster_name, context)
    listed, _ = rt.kube.list(NAMESPACES)
    try:
        selection = select_namespaces(listed, params, rt.cluster.protected_namespaces, strict=False)
    except ParamError as exc:
        fail(str(exc))
    namespaces = [n for n in selection.chosen if in_group(n, group)]
    label = group_label(namespaces)
    label_map_index([label])
    now = _now()
    verdicts: list[CronJobVerdict] = []
    for namespace in namespaces:
        cronjobs, _ = rt.kube.list(CRONJOBS, namespace, label_selector=params.cronjob_selector or None)
        if not cronjobs:
            continue  # no CronJob here: no need to read its Jobs
        jobs, _ = rt.kube.list(JOBS, namespace)
        pods = rt.kube.list(PODS, namespace, label_selector=JOB_CONTROLLER_UID_LABEL)[0] if params.compare_running_digests else None
        verdicts += judge_namespace(cronjobs, jobs, params, now, pods)
    for verdict in verdicts:
        _report(rt, params, verdict)
    stale = sum(len(v.jobs_to_delete) for v in verdicts)
    log.info("group %d (%s): %d CronJob(s), %d stale active Job(s) to delete", group["index"], ", ".join(namespaces), len(verdicts), stale)
    return judgement(group["index"], label, verdicts)


def _report(rt: TaskRuntime, params: CronJobRefreshParams, verdict: CronJobVerdict) -> None:
    """The plan for one CronJob: what is left alone and why, what would be deleted and started."""
    if verdict.unclear_opt_out:
        log.warning("CronJob %s: %s", verdict.ref, verdict.unclear_opt_out)
    if verdict.opted_out:
        stale = [j.name for j in verdict.stale]
        log.info("CronJob %s is %s: left alone%s", verdict.ref, verdict.opted_out, f" with stale Job(s) {', '.join(stale)}" if stale else "")
        rt.audit.record("plan-skip", f"cronjob/{verdict.ref}", after="left alone", outcome="skipped", why=verdict.opted_out, stale_jobs=stale)
        return
    if verdict.suspended:
        log.info(
            "CronJob %s is suspended: left alone%s",
            verdict.ref,
            f" with {len(verdict.stale)} stale active Job(s): {', '.join(j.name for j in verdict.stale)}" if verdict.stale else "",
        )
    for name in verdict.too_young:
        log.info("Job %s/%s of %s runs an old image but is younger than %g min: left for now", verdict.namespace, name, verdict.ref, params.min_job_age_minutes)
    for name, why in sorted(verdict.left_alone.items()):
        log.info("Job %s/%s of %s runs an old image but is left alone: %s", verdict.namespace, name, verdict.ref, why)
        rt.audit.record("plan-skip", f"job/{verdict.namespace}/{name}", after="left alone", outcome="skipped", cronjob=verdict.ref, why=why)
    for job in verdict.jobs_to_delete:
        rt.audit.record(
            "plan-delete-job",
            f"job/{job.ref}",
            before=job.old_images,
            after=job.new_images,
            outcome="planned",
            cronjob=verdict.ref,
            job=job.ref,
            old_images=job.old_images,
            new_images=job.new_images,
        )
    if not verdict.jobs_to_delete:
        return
    why_not = verdict.why_no_fresh_job
    if params.create_fresh_job and not why_not:
        fresh = fresh_job_name(verdict.name, verdict.uid, verdict.generation)
        rt.audit.record(
            "plan-create-job",
            f"job/{verdict.namespace}/{fresh}",
            before=None,
            after=verdict.images,
            outcome="planned",
            cronjob=verdict.ref,
            job=f"{verdict.namespace}/{fresh}",
            replaces=[j.ref for j in verdict.jobs_to_delete],
            old_images=_merged_old_images(verdict),
            new_images=verdict.images,
        )
        return
    log.info("CronJob %s: its next scheduled Job (%s) runs the new image%s", verdict.ref, verdict.next_run, f"; no fresh Job: {why_not}" if params.create_fresh_job else "")
    if params.create_fresh_job:
        rt.audit.record("plan-skip", f"cronjob/{verdict.ref}", after="no fresh Job", outcome="skipped", why=why_not, next_run=verdict.next_run)


def _merged_old_images(verdict: CronJobVerdict) -> dict[str, str]:
    merged: dict[str, str] = {}
    for job in verdict.jobs_to_delete:
        merged.update(job.old_images)
    return merged


# --------------------------------------------------------------------------------------------- delete
def delete_stale_jobs(cluster_name: str, judged: Mapping[str, Any], **context: Any) -> dict[str, Any]:
    """Delete the group's stale Jobs, each judged again on a fresh read right before its deletion."""
    label_map_index([judged.get("label") or ""])
    params, rt = _params(cluster_name, context)
    if params.dry_run:
        skip("dry run: nothing deleted")
    verdicts = [CronJobVerdict.from_xcom(v) for v in judged.get("verdicts") or ()]
    todo = [v for v in verdicts if v.jobs_to_delete]
    owed = [v.ref for v in verdicts if v.owed_for]
    if not todo and not (owed and params.create_fresh_job):
        skip(f"no stale active Job in {judged.get('label') or 'the group'}")
    if owed:
        # Nothing (more) to delete for them, but their fresh Jobs are still to start: go on.
        log.info("fresh Job(s) owed since an earlier run deleted their stale Jobs: %s", ", ".join(owed))
    renew_lock(rt)
    result: dict[str, Any] = {
        "index": judged.get("index"),
        "label": judged.get("label") or "",
        "deleted": [],
        "already_gone": [],
        "changed": [],  # judged again and left, still running
        "finished": [],  # finished on their own since they were judged: left
        "at": _now().isoformat(),
    }
    for verdict in todo:
        # Read afresh once per CronJob: suspended or changed since it was judged?
        cronjob = rt.kube.get_or_none(CRONJOBS, verdict.name, verdict.namespace)
        if cronjob is not None and params.create_fresh_job and not verdict.why_no_fresh_job:
            # Say on the CronJob that a fresh Job is owed before its Jobs go: a run killed between
            # the deletion and the creation, run again, finds it so and starts it.
            key = refresh_key(verdict.uid, verdict.generation)
            rt.kube.patch(CRONJOBS, verdict.name, fresh_job_owed_patch(key, [j.ref for j in verdict.jobs_to_delete]), verdict.namespace)
        for job in verdict.jobs_to_delete:
            outcome, entry = _delete_if_still_stale(rt, params, verdict, cronjob, job)
            result[outcome].append(entry)
    return result


def _why_not_delete_now(params: CronJobRefreshParams, verdict: CronJobVerdict, cronjob: Mapping[str, Any] | None, job: Mapping[str, Any], pods: list[Any] | None) -> str | None:
    """The judgement again, on what the cluster says now (the Job's pod template cannot change, its
    status and its CronJob can): None when the Job is still to delete."""
    if cronjob is None or cronjob["metadata"]["uid"] != verdict.uid:
        return "its CronJob was deleted (or replaced) since it was judged"
    if (cronjob.get("spec") or {}).get("suspend"):
        return "its CronJob was suspended since it was judged"
    if not is_job_active(job):
        return "the Job finished since it was judged"
    running = running_digests(pods or ()) if params.compare_running_digests else None
    kind, why = judge_job(job, cronjob_images(cronjob), params, _now(), running)
    if kind == "current":
        return "the Job runs the CronJob's current images (the template changed since it was judged)"
    if kind == "left_alone":
        return f"{why} (since it was judged)"
    return None


def _delete_if_still_stale(rt: TaskRuntime, params: CronJobRefreshParams, verdict: CronJobVerdict, cronjob: Mapping[str, Any] | None, job: StaleJob) -> tuple[str, dict[str, Any]]:
    entry = {"namespace": job.namespace, "name": job.name, "uid": job.uid, "cronjob": verdict.name, "cronjob_uid": verdict.uid}
    detail = {"cronjob": verdict.ref, "job": job.ref, "old_images": job.old_images, "new_images": job.new_images}
    target = f"job/{job.ref}"
    now = rt.kube.get_or_none(JOBS, job.name, job.namespace)
    if now is None or now["metadata"]["uid"] != job.uid:
        why = "already deleted" if now is None else "replaced by another Job of the same name"
        rt.audit.record("delete-job", target, before=job.old_images, after=None, outcome="skipped", why=why, **detail)
        return "already_gone", entry
    pods = None
    if params.compare_running_digests:
        pods, _ = rt.kube.list(PODS, job.namespace, label_selector=f"{JOB_CONTROLLER_UID_LABEL}={job.uid}")
    why_not = _why_not_delete_now(params, verdict, cronjob, now, pods)
    if why_not:
        log.warning("Job %s of CronJob %s not deleted: %s", job.ref, verdict.ref, why_not)
        rt.audit.record("delete-job", target, before=job.old_images, after=job.old_images, outcome="skipped", why=why_not, **detail)
        entry["why"] = why_not
        # A Job that finished on its own is neither waited for (its pods stay, as any finished
        # Job's do) nor replaced (it did its work); one still running keeps its place.
        return ("changed" if is_job_active(now) else "finished"), entry
    if cronjob is not None:
        old, new = image_differences(now, cronjob_images(cronjob))
        detail.update(old_images=old, new_images=new)
    try:
        # Background: the Job goes now and the garbage collector deletes its pods (no propagation
        # policy would orphan them, as batch/v1 Jobs default to Orphan). The UID precondition only:
        # a Job's pod template never changes after creation, so a status that moved on since the
        # read above (a pod started, an index completed) changes nothing about its staleness.
        rt.kube.delete(JOBS, job.name, job.namespace, propagation="Background", preconditions={"uid": job.uid})
    except KubeApiError as err:
        if err.status == 404 or (err.status == 409 and "UID in precondition" in err.message):
            why = "already deleted" if err.status == 404 else "replaced by another Job of the same name"
            rt.audit.record("delete-job", target, before=job.old_images, after=None, outcome="skipped", why=why, **detail)
            return "already_gone", entry
        raise
    rt.audit.record("delete-job", target, before=detail["old_images"], after="deleted (propagation Background)", **detail)
    message = f"Deleted: it runs {_images_text(detail['old_images'])}, CronJob {verdict.name} now runs {_images_text(detail['new_images'])}"
    rt.event(now, "StaleJobDeleted", message)
    if cronjob is not None:
        rt.event(cronjob, "StaleJobDeleted", f"Deleted Job {job.name} on an image the CronJob no longer uses: {_images_text(detail['old_images'])}")
    return "deleted", entry


def _images_text(images: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={image or '(no such container)'}" for name, image in sorted(images.items()))


# ----------------------------------------------------------------------------------------------- wait
@dataclass
class PodsWait:
    """The pods of deleted Jobs are not all gone yet: defer with this (see ``WaitForPodsGoneOperator``).
    ``waits``: per namespace, the pods' label selector, the resourceVersion of the look's list and the
    pods it saw left, for ``JobPodsGoneTrigger``."""

    waits: list[dict[str, Any]]
    moment: dt.datetime
    state: dict[str, Any]


def wait_for_pods_gone(cluster_name: str, deletion: Mapping[str, Any], state: dict[str, Any] | None = None, poke_interval: float = 15.0, **context: Any) -> dict[str, Any] | PodsWait:
    """One look: done once no pod of the group's deleted Jobs is left (one list per namespace);
    else what to wait on (``PodsWait``: the task defers, holding no worker slot, until one of those
    pods goes, or the next time it must look anyway: the pods-gone timeout, ``poke_interval`` at the
    latest). Fails once the pods outlast ``pods_gone_timeout_seconds`` after the deletion."""
    label_map_index([deletion.get("label") or ""])
    params, rt = _params(cluster_name, context)
    renew_lock(rt)
    state = dict(state or {})
    uids_by_namespace: dict[str, set[str]] = {}
    for entry in [*(deletion.get("deleted") or ()), *(deletion.get("already_gone") or ())]:
        uids_by_namespace.setdefault(entry["namespace"], set()).add(entry["uid"])
    left: dict[str, list[str]] = {}
    waits: list[dict[str, Any]] = []
    for namespace, uids in sorted(uids_by_namespace.items()):
        selector = f"{JOB_CONTROLLER_UID_LABEL} in ({','.join(sorted(uids))})"
        pods, resource_version = rt.kube.list(PODS, namespace, label_selector=selector)
        mine = {p["metadata"]["name"]: p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_CONTROLLER_UID_LABEL) in uids}
        if mine:
            left[namespace] = sorted(f"{namespace}/{name}" for name in mine)
            seen = {name: p["metadata"].get("resourceVersion") or "" for name, p in mine.items()}
            waits.append({"namespace": namespace, "label_selector": selector, "resource_version": resource_version, "seen": seen})
    if not left:
        gone = sum(len(u) for u in uids_by_namespace.values())
        log.info("every pod of the %d deleted Job(s) is gone", gone)
        return {"index": deletion.get("index"), "jobs": gone}
    pods_left = [p for names in left.values() for p in names]
    now = _now()
    deadline = dt.datetime.fromisoformat(deletion["at"]) + dt.timedelta(seconds=params.pods_gone_timeout_seconds)
    if now >= deadline:
        fail(
            f"{len(pods_left)} pod(s) of deleted Jobs still there {params.pods_gone_timeout_seconds}s after the deletion: "
            f"{', '.join(pods_left[:20])}; no fresh Job is started for their CronJobs"
        )
    moment = min(deadline, now + dt.timedelta(seconds=poke_interval))
    log.info("waiting for %d pod(s) of deleted Jobs to go, until %s at the latest: %s", len(pods_left), moment.isoformat(), ", ".join(pods_left[:20]))
    return PodsWait(waits, moment, state)


# --------------------------------------------------------------------------------------------- create
def create_fresh_jobs(cluster_name: str, judged: Mapping[str, Any], deletion: Mapping[str, Any], **context: Any) -> dict[str, Any]:
    """For each CronJob whose stale Jobs are gone, start one fresh Job, as kubectl create job --from
    does, where its concurrencyPolicy allows one beside the schedule (see ``why_no_fresh_job``)."""
    label_map_index([judged.get("label") or ""])
    params, rt = _params(cluster_name, context)
    if params.dry_run:
        skip("dry run: nothing created")
    if not params.create_fresh_job:
        skip("create_fresh_job is off: the CronJobs start their next Jobs on schedule")
    # The CronJobs acted on (the others are handed on only to be reported, without their UIDs).
    verdicts = {v.uid: v for v in (CronJobVerdict.from_xcom(data) for data in judged.get("verdicts") or ()) if v.acted_on}
    replaced: dict[str, list[str]] = {}
    for entry in [*(deletion.get("deleted") or ()), *(deletion.get("already_gone") or ())]:
        replaced.setdefault(entry["cronjob_uid"], []).append(f"{entry['namespace']}/{entry['name']}")
    for verdict in verdicts.values():
        if verdict.owed_for and not verdict.opted_out and not verdict.suspended:
            # Deleted by an earlier try or run that died before starting the fresh Job.
            replaced[verdict.uid] = sorted(set(replaced.get(verdict.uid, [])) | set(verdict.owed_for))
    # A stale Job judged again and left (still running) keeps its place: no fresh Job beside it.
    still_running = {entry["cronjob_uid"]: f"{entry['namespace']}/{entry['name']}" for entry in deletion.get("changed") or ()}
    if not replaced:
        skip("no stale Job was deleted: no fresh Job to start")
    renew_lock(rt)
    # not_created: CronJob references by reason (a reason such as Forbid's is said once, not per CronJob).
    result: dict[str, Any] = {"index": judged.get("index"), "created": [], "existing": [], "not_created": {}}
    jobs_by_namespace: dict[str, list[dict[str, Any]]] = {}
    for cronjob_uid, jobs in sorted(replaced.items()):
        verdict = verdicts[cronjob_uid]
        name = fresh_job_name(verdict.name, verdict.uid, verdict.generation)
        target = f"job/{verdict.namespace}/{name}"
        key = refresh_key(verdict.uid, verdict.generation)
        detail = {"cronjob": verdict.ref, "job": f"{verdict.namespace}/{name}", "replaces": sorted(jobs), "old_images": _merged_old_images(verdict)}
        why_not = verdict.why_no_fresh_job
        cronjob = None
        if cronjob_uid in still_running:
            why_not = f"its stale Job {still_running[cronjob_uid]} was left (judged again) and still runs"
        elif not why_not:
            # Read afresh: the Job is made from the template as it is now, as kubectl would, and
            # only if the CronJob's rules still allow one beside the schedule.
            cronjob = rt.kube.get_or_none(CRONJOBS, verdict.name, verdict.namespace)
            if cronjob is None or cronjob["metadata"]["uid"] != verdict.uid:
                why_not = "the CronJob was deleted (or replaced) since it was judged"
            elif (cronjob.get("spec") or {}).get("suspend"):
                why_not = "the CronJob was suspended since it was judged"
            else:
                if verdict.namespace not in jobs_by_namespace:
                    jobs_by_namespace[verdict.namespace] = rt.kube.list(JOBS, verdict.namespace)[0]
                namespace_jobs = jobs_by_namespace[verdict.namespace]
                if any(is_fresh_job_of(j, verdict.uid, key) for j in namespace_jobs):
                    rt.audit.record("create-job", target, before=None, after="exists", outcome="skipped", why="already created by an earlier try", new_images=cronjob_images(cronjob), **detail)
                    result["existing"].append(target)
                    _settle_debt(rt, verdict, cronjob)
                    continue
                now = judge_namespace([cronjob], namespace_jobs, params, _now())[0]
                why_not = why_no_fresh_job(now.concurrency_policy, now.current, now.next_run)
        if why_not or cronjob is None:
            log.info("no fresh Job for CronJob %s: %s", verdict.ref, why_not)
            rt.audit.record("create-job", target, before=None, after=None, outcome="skipped", why=why_not, next_run=verdict.next_run, new_images=verdict.images, **detail)
            result["not_created"].setdefault(why_not, []).append(verdict.ref)
            _settle_debt(rt, verdict, cronjob)
            continue
        body = fresh_job_manifest(cronjob, name, sorted(jobs), key)
        new_images = cronjob_images(cronjob)
        try:
            rt.kube.create(JOBS, body, verdict.namespace)
        except KubeApiError as err:
            if err.status != 409:
                raise
            existing = rt.kube.get_or_none(JOBS, name, verdict.namespace)
            if existing is not None and is_fresh_job_of(existing, verdict.uid, key):
                rt.audit.record("create-job", target, before=None, after="exists", outcome="skipped", why="already created by an earlier try", new_images=new_images, **detail)
                result["existing"].append(target)
            else:
                why = "a Job of that name exists and is not this refresh's fresh Job"
                log.warning("not creating %s: %s", target, why)
                rt.audit.record("create-job", target, before=None, after=None, outcome="skipped", why=why, new_images=new_images, **detail)
                result["not_created"].setdefault(why, []).append(verdict.ref)
            _settle_debt(rt, verdict, cronjob)
            continue
        rt.audit.record("create-job", target, before=None, after="created", new_images=new_images, **detail)
        rt.event(cronjob, "FreshJobCreated", f"Created Job {name} from the current template ({_images_text(new_images)}) in place of {', '.join(sorted(jobs))}")
        result["created"].append(target)
        _settle_debt(rt, verdict, cronjob)
    return result


def _settle_debt(rt: TaskRuntime, verdict: CronJobVerdict, cronjob: Mapping[str, Any] | None) -> None:
    """The fresh Job is created now or will not be (the rules say no): the CronJob owes none."""
    if not verdict.owed_for and verdict.why_no_fresh_job:
        return  # never marked: the deletion marks only CronJobs whose rules allow a fresh Job
    marked = cronjob if cronjob is not None else rt.kube.get_or_none(CRONJOBS, verdict.name, verdict.namespace)
    if marked is not None and FRESH_JOB_OWED_ANNOTATION in ((marked.get("metadata") or {}).get("annotations") or {}):
        try:
            rt.kube.patch(CRONJOBS, verdict.name, fresh_job_owed_patch(None), verdict.namespace)
        except KubeApiError as err:
            if err.status != 404:
                raise


# ----------------------------------------------------------------------------------------------- finish
def _opted_out_namespaces(context: Mapping[str, Any]) -> dict[str, list[str]]:
    """The plan's opted-out namespaces, by reason (bounded: ``by_reason``)."""
    value = context["ti"].xcom_pull(task_ids=PLAN_TASK, key=OPTED_OUT_XCOM)
    return dict(value) if isinstance(value, dict) else {}


SUMMARY_LOG = "the cleanup task's log"


def cleanup(cluster_name: str, **context: Any) -> dict[str, Any]:
    """The run's teardown, whatever ended it (bad parameters, a failure, a run marked failed or
    successful): release the lock if this run holds it, summarise, and fail the run if a step
    failed. Deleted Jobs are not brought back: their CronJob starts the next one on schedule.

    The summary (an audit line and this task's XCom) stays small however big the cluster: each
    list of references is cut at ``REPORT_CAP`` with how many more, reasons are said once with the
    references they apply to (``by_reason``); this task's log has every reference."""
    dry_run = _raw_params(cluster_name, context).get("dry_run") is not False
    rt = runtime_for(cluster_name, context, dry_run)
    released = drop_lock(rt, dry_run)
    judged, deletions, creations = (_all_mapped(context, task_id) for task_id in (JUDGE_TASK, DELETE_TASK, CREATE_TASK))
    summary = summarise(judged, deletions, creations, _opted_out_namespaces(context), dry_run, released)
    rt.audit.record("summary", f"cluster/{rt.cluster.name}", after=summary, outcome="done")
    fail_if_steps_failed(context, f"lock released: {released}")
    return summary


def summarise(
    judged: list[dict[str, Any]],
    deletions: list[dict[str, Any]],
    creations: list[dict[str, Any]],
    opted_out_namespaces: Mapping[str, Any],
    dry_run: bool,
    released: Any,
) -> dict[str, Any]:
    """The run's summary from the groups' XComs (bounded; every reference goes to the log)."""
    verdicts = [CronJobVerdict.from_xcom(v) for group in judged for v in group.get("verdicts") or ()]

    def refs(results: list[dict[str, Any]], key: str) -> list[str]:
        return sorted(f"{e['namespace']}/{e['name']}" if isinstance(e, dict) else str(e) for r in results for e in r.get(key) or ())

    def reasons(results: list[dict[str, Any]], key: str) -> list[tuple[str, str]]:
        return [(f"{e['namespace']}/{e['name']}", e["why"]) for r in results for e in r.get(key) or () if isinstance(e, dict) and e.get("why")]

    if dry_run:
        refreshed = {v.ref for v in verdicts if v.jobs_to_delete}
    else:
        refreshed = {f"{e['namespace']}/{e['cronjob']}" for r in deletions for e in [*(r.get("deleted") or ()), *(r.get("already_gone") or ())]}
    fresh_jobs = set(refs(creations, "created")) | set(refs(creations, "existing"))
    with_fresh_job = {v.ref for v in verdicts if f"job/{v.namespace}/{fresh_job_name(v.name, v.uid, v.generation)}" in fresh_jobs}
    lists = {
        "stale_planned": sorted(j.ref for v in verdicts for j in v.jobs_to_delete),
        "deleted": refs(deletions, "deleted"),
        "already_gone": refs(deletions, "already_gone"),
        "changed_since_judged": refs(deletions, "changed"),
        "suspended_left_alone": sorted(v.ref for v in verdicts if v.suspended and v.stale),
        "fresh_jobs_created": refs(creations, "created"),
        "fresh_jobs_existing": refs(creations, "existing"),
    }
    pairs = {
        "left_since_judged": reasons(deletions, "changed") + reasons(deletions, "finished"),
        "opted_out_cronjobs_with_stale_jobs": [(v.ref, v.opted_out) for v in verdicts if v.opted_out and v.stale],
        "jobs_left_alone": [(f"{v.namespace}/{name}", why) for v in verdicts for name, why in v.left_alone.items()],
        "fresh_jobs_not_created": [(ref, why) for r in creations for why, cronjobs in (r.get("not_created") or {}).items() for ref in cronjobs],
        # Refreshed CronJobs without a fresh Job, by when the schedule starts their next one (on the new image).
        "next_scheduled_jobs": [(v.ref, v.next_run) for v in verdicts if v.ref in refreshed and v.ref not in with_fresh_job],
    }
    for key, values in lists.items():
        if values:
            log.info("%s (%d): %s", key, len(values), ", ".join(values))
    for key, values in pairs.items():
        grouped: dict[str, list[str]] = {}
        for ref, why in values:
            grouped.setdefault(str(why), []).append(ref)
        for why, group in sorted(grouped.items()):
            log.info("%s, %s (%d): %s", key, why, len(group), ", ".join(sorted(group)))
    summary = {
        "cronjobs": sum(int(g.get("cronjobs") or 0) for g in judged),
        **{key: bounded(values, where=SUMMARY_LOG) for key, values in lists.items()},
        "left_since_judged": by_reason(pairs["left_since_judged"], where=SUMMARY_LOG),
        "opted_out": {
            "namespaces": dict(opted_out_namespaces),
            "cronjobs_with_stale_jobs": by_reason(pairs["opted_out_cronjobs_with_stale_jobs"], where=SUMMARY_LOG),
        },
        "jobs_left_alone": by_reason(pairs["jobs_left_alone"], where=SUMMARY_LOG),
        "fresh_jobs_not_created": by_reason(pairs["fresh_jobs_not_created"], where=SUMMARY_LOG),
        "next_scheduled_jobs": by_reason(pairs["next_scheduled_jobs"], where=SUMMARY_LOG),
        "lock_released": released,
    }
    return summary
