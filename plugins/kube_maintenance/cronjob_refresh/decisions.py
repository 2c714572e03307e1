"""CronJob image refresh: the parameters and the decisions. Pure (plain dicts in, plain data out).

- which namespaces a run covers (a label selector or explicit names, protected ones never), and how
  they are sharded into a bounded number of groups for dynamic task mapping;
- which active Jobs of a CronJob are stale: a container or init container, matched by name, runs an
  image other than the one in the CronJob's current job template (references compared as the
  runtime resolves them, see images.py), or the template gained or lost a container;
- which stale Jobs are still left alone: CronJobs and namespaces opted out, Jobs whose completed
  work a deletion would throw away, suspended Jobs (queued by Kueue or paused on purpose);
- whether a fresh Job may be started beside the schedule at all: the CronJob controller counts only
  the Jobs it started itself (``status.active``), so for ``Forbid`` and ``Replace`` a Job of ours is
  invisible to its concurrency rule and the next scheduled Job would run beside it;
- the fresh Job started in their place, built as ``kubectl create job --from=cronjob/<name>`` builds
  it, under a name derived from the CronJob's UID and template generation so a retry or a re-run
  never starts a second one for the same refresh.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


from kube_maintenance.cronjob_refresh.images import pinned_digest, running_digest, same_image
from kube_maintenance.core.optout import opted_out, unclear_opt_out
from kube_maintenance.core.params import FieldReader, ParamError
from kube_maintenance.core.registry import RegistryError
from kube_maintenance.core.selectors import parse_label_selector

Obj = dict[str, Any]

# What kubectl puts on a Job it creates from a CronJob (``kubectl create job --from=cronjob/...``).
INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"
# Ours, on each fresh Job: which CronJob template (UID/generation) it refreshes and which Jobs it replaces.
REFRESH_OF_ANNOTATION = "kube-maintenance.io/refresh-of"
REPLACES_ANNOTATION = "kube-maintenance.io/replaces"
# On a CronJob, from just before its stale Jobs are deleted until its fresh Job exists: the fresh
# Job is owed, so a run killed in between and run again still starts it (and only once).
FRESH_JOB_OWED_ANNOTATION = "kube-maintenance.io/fresh-job-owed"
# The job controller labels every pod of a Job with the Job's UID (Kubernetes >= 1.27).
JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"

DEFAULT_NAMESPACE_GROUPS = 16
# Far below Airflow's core.max_map_length (1024): each group is one mapped instance of every task
# of the refresh task group.
MAX_NAMESPACE_GROUPS = 256
# A Job's name becomes a label value on its pods: 63 characters at most. CronJob names are limited
# to 52 so the controller's "-<minutes>" suffix fits; our "-r<9 hex>" suffix is 11 characters too.
_CRONJOB_NAME_MAX = 52


@dataclass(frozen=True)
class CronJobRefreshParams:
    namespace_selector: str = ""
    namespaces: tuple[str, ...] = ()
    cronjob_selector: str = ""
    create_fresh_job: bool = False
    min_job_age_minutes: float = 0.0
    pods_gone_timeout_seconds: int = 600
    refresh_jobs_with_progress: bool = False
    refresh_suspended_jobs: bool = False
    compare_running_digests: bool = False
    ignore_window: bool = False
    dry_run: bool = True

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "CronJobRefreshParams":
        """Validate a trigger form / conf; every problem is reported at once, naming the field."""
        read = FieldReader(raw, cls)
        names = read.namespace_names("namespaces")
        params = cls(
            namespace_selector=read.selector("namespace_selector", example="app.kubernetes.io/managed-by=Helm").strip(),
            namespaces=names,
            cronjob_selector=read.selector("cronjob_selector", example="tier=batch").strip(),
            create_fresh_job=read.boolean("create_fresh_job"),
            min_job_age_minutes=read.number("min_job_age_minutes", 0),
            pods_gone_timeout_seconds=read.integer("pods_gone_timeout_seconds", 1, 24 * 3600),
            refresh_jobs_with_progress=read.boolean("refresh_jobs_with_progress"),
            refresh_suspended_jobs=read.boolean("refresh_suspended_jobs"),
            compare_running_digests=read.boolean("compare_running_digests"),
            ignore_window=read.boolean("ignore_window"),
            dry_run=read.boolean("dry_run"),
        )
        read.check(
            not (params.namespaces and params.namespace_selector),
            "namespaces / namespace_selector: give namespace names or a namespace selector, not both",
        )
        read.raise_if_problems()
        return params


def namespace_groups_setting(settings: Mapping[str, Any], cluster: str) -> int:
    """``operations.cronjob_refresh.max_namespace_groups`` of the registry, checked when DAGs are parsed."""
    value = settings.get("max_namespace_groups", DEFAULT_NAMESPACE_GROUPS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NAMESPACE_GROUPS:
        raise RegistryError(
            f"clusters ({cluster}).operations.cronjob_refresh.max_namespace_groups: expected a whole number "
            f"from 1 to {MAX_NAMESPACE_GROUPS}, got {value!r}"
        )
    return value


# ------------------------------------------------------------------------------------------ namespaces
@dataclass
class NamespaceSelection:
    chosen: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # namespace -> why it is left out
    opted_out: dict[str, str] = field(default_factory=dict)  # namespace -> its skip annotation (also in skipped)
    unclear: dict[str, str] = field(default_factory=dict)  # namespace -> a skip annotation we did not understand


def select_namespaces(
    namespaces: Iterable[Mapping[str, Any]], params: CronJobRefreshParams, protected: Iterable[str], strict: bool = True
) -> NamespaceSelection:
    """The namespaces a run covers, sorted. Explicit names that do not exist or are protected are a
    ParamError (a typo must not silently shrink the run); a selector simply never matches protected ones.
    Not ``strict`` (a group's judge selecting again after the plan checked the names): a named
    namespace deleted since is simply left out."""
    protected = set(protected)
    by_name = {ns["metadata"]["name"]: ns for ns in namespaces}
    if params.namespaces:
        unknown = [n for n in params.namespaces if n not in by_name]
        if unknown and strict:
            raise ParamError(f"namespaces: no such namespace(s) in the cluster: {', '.join(unknown)}")
        refused = [n for n in params.namespaces if n in protected]
        if refused:
            raise ParamError(f"namespaces: {', '.join(refused)} protected (never touched by any operation); remove them")
        candidates = [by_name[n] for n in params.namespaces if n in by_name]
    else:
        candidates = list(by_name.values())
    matches = parse_label_selector(params.namespace_selector)
    selection = NamespaceSelection([])
    for ns in candidates:
        name = ns["metadata"]["name"]
        opt_out = opted_out({"kind": "Namespace", **ns})
        if name in protected:
            selection.skipped[name] = "protected"
        elif not matches(ns["metadata"].get("labels") or {}):
            selection.skipped[name] = f"labels do not match {params.namespace_selector!r}"
        elif ns["metadata"].get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            selection.skipped[name] = "being deleted"
        elif opt_out:
            # Named or selected alike: a team's "never touch" outranks a form filled in elsewhere.
            selection.skipped[name] = selection.opted_out[name] = opt_out
        else:
            selection.chosen.append(name)
            unclear = unclear_opt_out(ns)
            if unclear:
                selection.unclear[name] = unclear
    selection.chosen.sort()
    return selection


def shard(names: list[str], max_groups: int) -> list[list[str]]:
    """At most ``max_groups`` contiguous groups of sizes differing by at most one, order kept."""
    if max_groups < 1:
        raise ValueError("max_groups must be at least 1")
    count = min(max_groups, len(names))
    if count == 0:
        return []
    size, extra = divmod(len(names), count)
    groups, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        groups.append(names[start:end])
        start = end
    return groups


def namespace_groups(names: list[str], max_groups: int) -> list[dict[str, Any]]:
    """The mapping input of the refresh task group: the sorted ``names`` sharded (``shard``) into at
    most ``max_groups`` groups, each given as a range of names, not as its list, so that neither the
    plan's XCom nor a mapped instance's input grows with the namespaces a group holds. Group ``i``
    covers the names from ``from`` (none for the first group) up to, not including, ``to`` (none
    for the last group; the next group's ``from``): the ranges cover every name, so each group's
    judge, selecting again, finds the plan's namespaces (and any created since) in exactly one
    group. A bound is the shortest prefix of a group's first name that sorts after the previous
    group's last (``team-0125`` between ``team-0124-x`` and ``team-0125-x``)."""
    groups = shard(sorted(names), max_groups)
    bounds = [None, *(_boundary(before[-1], after[0]) for before, after in zip(groups, groups[1:])), None]
    return [{"index": i, "from": bounds[i], "to": bounds[i + 1]} for i in range(len(groups))]


def _boundary(before: str, after: str) -> str:
    """The shortest prefix of ``after`` that sorts after ``before`` (``before < after``)."""
    for end in range(1, len(after)):
        if after[:end] > before:
            return after[:end]
    return after


def in_group(name: str, group: Mapping[str, Any]) -> bool:
    """Whether namespace ``name`` falls in a group of ``namespace_groups``."""
    low, high = group.get("from"), group.get("to")
    return (low is None or name >= low) and (high is None or name < high)


def group_label(names: list[str]) -> str:
    """A group's namespaces in a few words (the grid's label of its mapped instances): at most three
    by name, else the first and last and how many."""
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} ... {names[-1]} ({len(names)} namespaces)"


# ------------------------------------------------------------------------------------------ reports
# What a run hands on and summarises must not grow with the cluster (every XCom well under 64 KB):
# lists of references are cut at a cap, with how many more, and the task log has them all.
REPORT_CAP = 20  # references in one list (or in all the reasons of one field)
REPORT_REASONS = 10  # distinct reasons in one field
REASON_CHARS = 240  # a reason longer than this (an opt-out annotation is free text) is cut


def bounded(refs: Iterable[str], cap: int = REPORT_CAP, where: str = "the task log") -> list[str]:
    """``refs`` sorted, at most ``cap`` of them, then how many more and where they all are."""
    refs = sorted(refs)
    return refs[:cap] + ([f"... and {len(refs) - cap} more (all in {where})"] if len(refs) > cap else [])


def _cut(reason: str) -> str:
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


def by_reason(
    pairs: Iterable[tuple[str, str]], cap: int = REPORT_CAP, reasons: int = REPORT_REASONS, where: str = "the task log"
) -> dict[str, list[str]]:
    """(reference, reason) pairs grouped: each reason once (cut at ``REASON_CHARS``), with its
    references, sorted. The most common reasons first; at most ``reasons`` of them (the rest
    counted under one key) and ``cap`` references in all (each list says how many more)."""
    groups: dict[str, list[str]] = {}
    for ref, why in pairs:
        groups.setdefault(_cut(str(why)), []).append(ref)
    order = sorted(groups, key=lambda why: (-len(groups[why]), why))
    out: dict[str, list[str]] = {}
    budget = cap
    for why in order[:reasons]:
        refs = sorted(groups[why])
        shown = refs[:budget]
        budget -= len(shown)
        out[why] = shown + ([f"... and {len(refs) - len(shown)} more (all in {where})"] if len(refs) > len(shown) else [])
    rest = order[reasons:]
    if rest:
        out[f"... {len(rest)} other reason(s) (all in {where})"] = [f"... and {sum(len(groups[w]) for w in rest)} more"]
    return out


# ----------------------------------------------------------------------------------------------- jobs
def is_job_finished(job: Mapping[str, Any]) -> bool:
    """A Job is finished once it has a Complete or Failed condition with status True."""
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or ()
    )


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


def pod_template_images(pod_spec: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> image, init containers included (names are unique across both in a pod)."""
    images: dict[str, str] = {}
    for kind in ("initContainers", "containers"):
        for container in pod_spec.get(kind) or ():
            images[container.get("name", "")] = container.get("image", "")
    return images


def job_images(job: Mapping[str, Any]) -> dict[str, str]:
    return pod_template_images(((job.get("spec") or {}).get("template") or {}).get("spec") or {})


def cronjob_images(cronjob: Mapping[str, Any]) -> dict[str, str]:
    job_template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    return pod_template_images(((job_template.get("spec") or {}).get("template") or {}).get("spec") or {})


RunningDigests = Mapping[str, set[str]]  # container name -> the image digests the Job's pods report running


def running_digests(pods: Iterable[Mapping[str, Any]]) -> RunningDigests:
    """What the pods of one Job actually run, by container name (init containers included), from
    ``status.containerStatuses[].imageID``: a tag resolves to whatever the registry served at pull."""
    digests: dict[str, set[str]] = {}
    for pod in pods:
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]:
            digest = running_digest(container.get("imageID"))
            if digest:
                digests.setdefault(container.get("name", ""), set()).add(digest)
    return digests


def runs_template_digest(template_image: str, digests: set[str] | None) -> bool:
    """Whether the template pins a digest and every pod reporting one runs exactly it (no report:
    nothing proves it, so no)."""
    wanted = pinned_digest(template_image)
    return bool(wanted and digests and digests == {wanted})


def image_differences(
    job: Mapping[str, Any], template_images: Mapping[str, str], running: RunningDigests | None = None
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(old, new): each container, by name, whose image differs from the template's, with the image
    the Job runs and the template's. None on the Job's side: a container the template gained; on
    the template's side: one it lost. With ``running`` (the option to trust what pods report), a
    container on another reference still counts as current when its pods run the digest the
    template pins."""
    old: dict[str, str | None] = {}
    new: dict[str, str | None] = {}
    have = job_images(job)
    for name in sorted(set(have) | set(template_images)):
        image, wanted = have.get(name), template_images.get(name)
        if image is not None and wanted is not None:
            if same_image(image, wanted) or (running is not None and runs_template_digest(wanted, running.get(name))):
                continue
        old[name] = image
        new[name] = wanted
    return old, new


def is_job_suspended(job: Mapping[str, Any]) -> bool:
    """``spec.suspend``: queued (Kueue creates Jobs suspended and admits them) or paused on purpose."""
    return bool((job.get("spec") or {}).get("suspend"))


def completed_work(job: Mapping[str, Any]) -> str | None:
    """The work a deletion would throw away: indexes an Indexed Job completed, or pods of a parallel
    Job that succeeded (a fresh Job starts from zero). None when there is none."""
    status = job.get("status") or {}
    if status.get("completedIndexes"):
        return f"indexes {status['completedIndexes']} completed"
    succeeded = int(status.get("succeeded") or 0)
    if succeeded > 0:
        return f"{succeeded} pod(s) succeeded"
    return None


def why_left_alone(job: Mapping[str, Any], params: "CronJobRefreshParams") -> str | None:
    """Why a stale Job is kept anyway (and reported), unless the run is told to refresh such Jobs."""
    if is_job_suspended(job) and not params.refresh_suspended_jobs:
        return "the Job is suspended (spec.suspend: queued or paused on purpose); refresh_suspended_jobs refreshes it"
    work = completed_work(job)
    if work and not params.refresh_jobs_with_progress:
        return f"the Job has completed work a deletion would lose ({work}); refresh_jobs_with_progress refreshes it"
    return None


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class StaleJob:
    namespace: str
    name: str
    uid: str
    old_images: dict[str, str | None]
    new_images: dict[str, str | None]  # always the template's image of each container in old_images

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_xcom(self, acted_on: bool) -> dict[str, Any]:
        """A reference: the name, and for a Job to delete its UID (the deletion's precondition) and
        the images it runs (the audit lines'); the namespace and the new images are the CronJob's."""
        return {"name": self.name, "uid": self.uid, "old_images": self.old_images} if acted_on else {"name": self.name}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any], namespace: str, template_images: Mapping[str, str]) -> "StaleJob":
        old = dict(data.get("old_images") or {})
        return cls(namespace, data["name"], data.get("uid", ""), old, {c: template_images.get(c) for c in old})


@dataclass
class CronJobVerdict:
    """One CronJob and its active Jobs, judged."""

    namespace: str
    name: str
    uid: str
    generation: int
    suspended: bool
    images: dict[str, str]  # the current job template's, by container name
    concurrency_policy: str = "Allow"
    next_run: str = ""  # when the controller starts its next Job, in words for the plan
    opted_out: str | None = None  # the CronJob's skip annotation: left alone, reported
    unclear_opt_out: str | None = None
    stale: list[StaleJob] = field(default_factory=list)
    current: list[str] = field(default_factory=list)  # active Jobs on the template's images
    fresh: list[str] = field(default_factory=list)  # this refresh's fresh Job, started by an earlier try (not in current)
    too_young: list[str] = field(default_factory=list)  # on an old image, but younger than min_job_age_minutes
    left_alone: dict[str, str] = field(default_factory=dict)  # stale Jobs kept anyway (completed work, suspended) -> why
    owed_for: list[str] = field(default_factory=list)  # Jobs deleted for this template whose fresh Job is still owed

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def jobs_to_delete(self) -> list[StaleJob]:
        """A suspended CronJob is reported and left alone: someone paused it on purpose; so is one opted out."""
        return [] if self.suspended or self.opted_out else list(self.stale)

    @property
    def why_no_fresh_job(self) -> str | None:
        """Why no Job is started beside the schedule for this CronJob, or None when one may be."""
        return why_no_fresh_job(self.concurrency_policy, self.current, self.next_run)

    @property
    def acted_on(self) -> bool:
        """Whether the later steps do something for this CronJob: delete its stale Jobs, or start
        the fresh Job an earlier run still owes it."""
        return bool(self.jobs_to_delete or (self.owed_for and not self.suspended and not self.opted_out))

    @property
    def reported(self) -> bool:
        """Whether the judge hands this CronJob on: acted on, or with stale Jobs left alone (the
        summary and the approval report them). The others only in the judge's log and audit lines."""
        return bool(self.acted_on or self.stale or self.left_alone)

    def to_xcom(self) -> dict[str, Any]:
        """A compact record: references and what the later steps need, nothing else (empty and
        default fields left out; too_young, fresh and unclear_opt_out stay in the judge's log)."""
        acted_on = self.acted_on
        data: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if acted_on:
            data.update(uid=self.uid, generation=self.generation, images=self.images, concurrency_policy=self.concurrency_policy, next_run=self.next_run)
        if self.suspended:
            data["suspended"] = True
        if self.opted_out:
            data["opted_out"] = self.opted_out
        if self.stale:
            data["stale"] = [j.to_xcom(acted_on) for j in self.stale]
        for key in ("current", "left_alone", "owed_for") if acted_on else ("left_alone",):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> "CronJobVerdict":
        fields = {k: v for k, v in data.items() if k != "stale"}
        fields.setdefault("uid", "")
        fields.setdefault("generation", 0)
        fields.setdefault("suspended", False)
        fields.setdefault("images", {})
        verdict = cls(**fields)
        verdict.stale = [StaleJob.from_xcom(j, verdict.namespace, verdict.images) for j in data.get("stale") or ()]
        return verdict


def judgement(index: int, label: str, verdicts: Iterable[CronJobVerdict]) -> dict[str, Any]:
    """The judge's XCom for one group: how many CronJobs it judged, and the compact records of those
    it hands on (``CronJobVerdict.reported``). Its size grows with the group's stale Jobs, never with
    the CronJobs that have none."""
    verdicts = list(verdicts)
    return {"index": index, "label": label, "cronjobs": len(verdicts), "verdicts": [v.to_xcom() for v in verdicts if v.reported]}


def why_no_fresh_job(concurrency_policy: str, current_jobs: Iterable[str], next_run: str) -> str | None:
    """The CronJob controller applies ``concurrencyPolicy`` to the Jobs in its ``status.active``
    only, which never lists a Job it did not start: beside a Job of ours, ``Forbid`` would start
    the next scheduled Job anyway and ``Replace`` would not replace ours. So for those two the
    schedule alone starts the next Job (on the new image); ``Allow`` gets a fresh Job unless one on
    the current image already runs."""
    if concurrency_policy in ("Forbid", "Replace"):
        return (
            f"concurrencyPolicy {concurrency_policy}: the CronJob controller would not count a Job it did not start, "
            f"so none is started beside the schedule; its next scheduled Job runs the new image ({next_run})"
        )
    current = sorted(current_jobs)
    if current:
        return f"a Job on the current image already runs: {', '.join(current)}"
    return None


def judge_job(job: Mapping[str, Any], template_images: Mapping[str, str], params: CronJobRefreshParams, now: dt.datetime, running: RunningDigests | None = None) -> tuple[str, str | None]:
    """One active Job of a CronJob against its template: ("current" | "too_young" | "left_alone" |
    "stale", why it is left alone). Used when judging and again right before deleting."""
    old, _ = image_differences(job, template_images, running)
    if not old:
        return "current", None
    created = _time(job["metadata"].get("creationTimestamp"))
    # No minimum age: no comparison either, so a clock skew between us and the api-server never holds a Job back.
    if params.min_job_age_minutes > 0 and created is not None and created > now - dt.timedelta(minutes=params.min_job_age_minutes):
        return "too_young", None
    why = why_left_alone(job, params)
    if why:
        return "left_alone", why
    return "stale", None


def is_job_active(job: Mapping[str, Any]) -> bool:
    """Neither finished nor being deleted."""
    return not is_job_finished(job) and not job["metadata"].get("deletionTimestamp")


def judge_namespace(
    cronjobs: Iterable[Mapping[str, Any]],
    jobs: Iterable[Mapping[str, Any]],
    params: CronJobRefreshParams,
    now: dt.datetime,
    pods: Iterable[Mapping[str, Any]] | None = None,
) -> list[CronJobVerdict]:
    """Each CronJob of one namespace (matching the selector, not being deleted) with its active Jobs.

    A CronJob's Jobs are those whose controller ownerReference carries its UID: the CronJob
    controller's own and those made by ``kubectl create job --from`` alike (which ``status.active``
    does not list). Finished Jobs and Jobs being deleted are not active. ``pods`` (the namespace's,
    read only with ``compare_running_digests``) tell what digests each Job's pods run.
    """
    matches = parse_label_selector(params.cronjob_selector)
    by_owner: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        owner = controller_uid(job)
        if owner and is_job_active(job):
            by_owner.setdefault(owner, []).append(job)
    pods_by_job: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods or ():
        job_uid = (pod["metadata"].get("labels") or {}).get(JOB_CONTROLLER_UID_LABEL)
        if job_uid:
            pods_by_job.setdefault(job_uid, []).append(pod)
    verdicts = []
    for cronjob in sorted(cronjobs, key=lambda c: c["metadata"]["name"]):
        meta = cronjob["metadata"]
        if meta.get("deletionTimestamp") or not matches(meta.get("labels") or {}):
            continue
        spec = cronjob.get("spec") or {}
        verdict = CronJobVerdict(
            namespace=meta.get("namespace", ""),
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            suspended=bool(spec.get("suspend")),
            images=cronjob_images(cronjob),
            concurrency_policy=spec.get("concurrencyPolicy") or "Allow",
            next_run=next_scheduled_job(cronjob, now),
            opted_out=opted_out({"kind": "CronJob", **cronjob}),
            unclear_opt_out=unclear_opt_out(cronjob),
            owed_for=fresh_job_owed(cronjob, refresh_key(meta["uid"], int(meta.get("generation") or 0))),
        )
        for job in sorted(by_owner.get(meta["uid"], ()), key=lambda j: j["metadata"]["name"]):
            jm = job["metadata"]
            running = running_digests(pods_by_job.get(jm["uid"], ())) if params.compare_running_digests else None
            kind, why = judge_job(job, verdict.images, params, now, running)
            if kind == "current" and is_fresh_job_of(job, verdict.uid, refresh_key(verdict.uid, verdict.generation)):
                verdict.fresh.append(jm["name"])
            elif kind == "current":
                verdict.current.append(jm["name"])
            elif kind == "too_young":
                verdict.too_young.append(jm["name"])
            else:
                old, new = image_differences(job, verdict.images, running)
                stale = StaleJob(jm.get("namespace", ""), jm["name"], jm["uid"], old, new)
                if kind == "left_alone":
                    verdict.left_alone[jm["name"]] = str(why)
                else:
                    verdict.stale.append(stale)
        verdicts.append(verdict)
    return verdicts


def fresh_job_owed(cronjob: Mapping[str, Any], key: str) -> list[str]:
    """The Jobs deleted for the CronJob's current template whose fresh Job was not started yet (a
    mark left by a refresh that died in between); a mark for an older template is no debt."""
    raw = ((cronjob.get("metadata") or {}).get("annotations") or {}).get(FRESH_JOB_OWED_ANNOTATION)
    try:
        mark = json.loads(raw) if raw else {}
    except ValueError:
        return []
    return sorted(mark.get("replaces") or ()) if isinstance(mark, dict) and mark.get("key") == key else []


def fresh_job_owed_patch(key: str | None, replaces: list[str] | None = None) -> dict[str, Any]:
    """The merge patch that marks (or, with no key, clears) a fresh Job owed (metadata only: no new generation)."""
    value = json.dumps({"key": key, "replaces": sorted(replaces or ())}) if key else None
    return {"metadata": {"annotations": {FRESH_JOB_OWED_ANNOTATION: value}}}


# ----------------------------------------------------------------------------------------- schedule
def _schedule_and_zone(cronjob: Mapping[str, Any]) -> tuple[str, dt.tzinfo]:
    """The cron expression and its time zone: ``spec.timeZone``, or a ``CRON_TZ=``/``TZ=`` prefix of
    the schedule (which the controller still honours), else UTC (the controller's own zone, UTC on
    managed control planes). Raises ValueError for a zone or schedule the controller would refuse."""
    from croniter import croniter  # in the task: the DAG file, which imports this module, never needs it

    spec = cronjob.get("spec") or {}
    schedule = (spec.get("schedule") or "").strip()
    zone_name = spec.get("timeZone")
    if schedule.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, schedule = schedule.partition(" ")
        zone_name = prefix.split("=", 1)[1]
        schedule = schedule.strip()
    try:
        zone: dt.tzinfo = ZoneInfo(zone_name) if zone_name else dt.timezone.utc
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone_name!r}") from exc
    if not croniter.is_valid(schedule):
        raise ValueError(f"unparseable schedule {schedule!r}")
    return schedule, zone


def next_scheduled_job(cronjob: Mapping[str, Any], now: dt.datetime) -> str:
    """When the CronJob controller starts the CronJob's next Job, in words for the plan.

    As its syncCronJob: the most recent schedule time after ``status.lastScheduleTime`` (or the
    creation) that is not past ``startingDeadlineSeconds`` is still due, and a Forbid CronJob whose
    Job was running when it came starts it as soon as its active Jobs are gone; otherwise the next
    schedule time, in the CronJob's time zone.
    """
    from croniter import croniter

    spec = cronjob.get("spec") or {}
    if spec.get("suspend"):
        return "none while the CronJob is suspended"
    try:
        schedule, zone = _schedule_and_zone(cronjob)
    except ValueError as exc:
        return f"unknown: {exc}"
    local_now = now.astimezone(zone)
    last = _time((cronjob.get("status") or {}).get("lastScheduleTime")) or _time(cronjob["metadata"].get("creationTimestamp"))
    due = croniter(schedule, local_now + dt.timedelta(microseconds=1)).get_prev(dt.datetime)
    deadline = spec.get("startingDeadlineSeconds")
    if last is not None and due > last and (deadline is None or due + dt.timedelta(seconds=int(deadline)) >= now):
        return f"as soon as no Job of it is active: the run due at {due.isoformat()} has not started yet"
    upcoming = croniter(schedule, local_now).get_next(dt.datetime)
    return f"{upcoming.isoformat()} (schedule {spec.get('schedule')!r}, {zone})"


# ------------------------------------------------------------------------------------------ fresh Jobs
def refresh_key(cronjob_uid: str, generation: int) -> str:
    return f"{cronjob_uid}/{generation}"


def fresh_job_name(cronjob_name: str, cronjob_uid: str, generation: int) -> str:
    """The same for every try and re-run refreshing one CronJob template generation, and never one
    the CronJob controller uses (``<name>-<minutes since the epoch>``, digits only)."""
    digest = hashlib.sha256(refresh_key(cronjob_uid, generation).encode()).hexdigest()[:9]
    return f"{cronjob_name[:_CRONJOB_NAME_MAX]}-r{digest}"


def fresh_job_manifest(cronjob: Mapping[str, Any], name: str, replaces: Iterable[str], refresh_of: str) -> Obj:
    """The Job ``kubectl create job <name> --from=cronjob/<cronjob>`` creates, plus our two annotations.

    As kubectl: labels and annotations of the jobTemplate, ``cronjob.kubernetes.io/instantiate:
    manual`` (a template annotation of that name wins), a controller ownerReference to the CronJob
    (no blockOwnerDeletion, which would need the cronjobs/finalizers permission), the template's spec.
    """
    meta = cronjob["metadata"]
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    annotations = {INSTANTIATE_ANNOTATION: "manual"}
    annotations.update(template_meta.get("annotations") or {})
    annotations[REFRESH_OF_ANNOTATION] = refresh_of
    annotations[REPLACES_ANNOTATION] = ",".join(replaces)
    metadata: Obj = {
        "name": name,
        "namespace": meta["namespace"],
        "annotations": annotations,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"], "uid": meta["uid"], "controller": True}],
    }
    if template_meta.get("labels"):
        metadata["labels"] = dict(template_meta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": copy.deepcopy(template.get("spec") or {})}


def is_fresh_job_of(job: Mapping[str, Any], cronjob_uid: str, refresh_of: str) -> bool:
    """Whether an existing Job is the fresh Job an earlier try made for this refresh."""
    annotations = job.get("metadata", {}).get("annotations") or {}
    return controller_uid(job) == cronjob_uid and annotations.get(REFRESH_OF_ANNOTATION) == refresh_of
