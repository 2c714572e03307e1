"""Jobs and CronJobs: the apiserver's job and cronjob strategies plus the job, cronjob and
ttl-after-finished controllers of kube-controller-manager (Kubernetes 1.31 behaviour).

- Admission (``DEFAULTERS`` / ``VALIDATORS``): a Job without ``manualSelector`` gets the generated
  ``batch.kubernetes.io/controller-uid`` selector and the controller-uid / job-name template labels,
  so ``kubectl create job --from=cronjob/x`` (which posts no selector) works; the usual defaults;
  restartPolicy must be Never or OnFailure; selector and template are immutable.
- ``JobController`` creates pods (generateName ``<job>-``, controller-owned, carrying the
  ``batch.kubernetes.io/job-tracking`` finalizer), counts finished pods exactly once by removing that
  finalizer (as the real controller tracks them), replaces pods that fail or are deleted, backs off
  after failures, and marks the Job SuccessCriteriaMet/Complete or FailureTarget/Failed.
- ``CronJobController`` polls every ``config.cronjob_poll_seconds`` (so tests may move the cluster
  clock) and starts at most one Job per poll, for the most recent missed schedule, as the real one.
- ``TTLAfterFinishedController`` deletes finished Jobs after ``ttlSecondsAfterFinished``.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Hashable, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import errors, podutil
from ..clock import parse_time
from ..events import record_event
from ..resources import CRONJOBS, JOBS, PODS
from ..selectors import LabelSelector, labels_match, selector_from_object
from .base import Controller

Obj = dict[str, Any]

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"

JOB_CONTROLLER = "job-controller"
CRONJOB_CONTROLLER = "cronjob-controller"
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")
MAX_POD_CREATE_DELETE_PER_SYNC = 500
# The real controller waits 10 s after the first failure, doubling up to 6 minutes; the sandbox
# compresses that like its other delays (override with config.extra["job_backoff_base_seconds"]).
JOB_BACKOFF_BASE_SECONDS = 0.05
JOB_BACKOFF_MAX_SECONDS = 1.8
DEADLINE_POLL_SECONDS = 1.0
CRONJOB_MAX_NAME_LENGTH = 52  # 63 minus the 11 characters of "-<minutes since epoch>"


# =========================================================================================== cron
class CronError(ValueError):
    """A schedule robfig/cron (what the controller and the apiserver use) would not parse."""


@dataclass(frozen=True)
class _Field:
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTE = _Field(0, 59)
_HOUR = _Field(0, 23)
_DAY_OF_MONTH = _Field(1, 31)
_MONTH = _Field(1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())})
_DAY_OF_WEEK = _Field(0, 6, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_int(text: str, spec: _Field) -> int:
    if spec.names and text.lower() in spec.names:
        return spec.names[text.lower()]
    try:
        number = int(text)
    except ValueError:
        raise CronError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax') from None
    if number < 0:
        raise CronError(f"negative number ({number}) not allowed: {text}")
    return number


def _parse_field(text: str, spec: _Field) -> tuple[frozenset[int], bool]:
    """The values a cron field allows, and whether it was a bare ``*`` / ``?`` (robfig's star bit)."""
    values: set[int] = set()
    star = False
    for expr in text.split(","):
        range_and_step = expr.split("/")
        if len(range_and_step) > 2:
            raise CronError(f"too many slashes: {expr}")
        low_and_high = range_and_step[0].split("-")
        if len(low_and_high) > 2:
            raise CronError(f"too many hyphens: {expr}")
        expr_star = False
        if low_and_high[0] in ("*", "?"):
            start, end, expr_star = spec.low, spec.high, True
        else:
            start = _parse_int(low_and_high[0], spec)
            end = _parse_int(low_and_high[1], spec) if len(low_and_high) == 2 else start
        step = 1
        if len(range_and_step) == 2:
            step = _parse_int(range_and_step[1], _Field(0, 0))
            if len(low_and_high) == 1:
                end = spec.high  # "N/step" means "N-max/step"
            if step > 1:
                expr_star = False
        if start < spec.low:
            raise CronError(f"beginning of range ({start}) below minimum ({spec.low}): {expr}")
        if end > spec.high:
            raise CronError(f"end of range ({end}) above maximum ({spec.high}): {expr}")
        if start > end:
            raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
        if step == 0:
            raise CronError(f"step of range should be a positive number: {expr}")
        values.update(range(start, end + 1, step))
        star = star or expr_star
    return frozenset(values), star


def _parse_go_duration(text: str) -> float:
    pos, total = 0, 0.0
    while pos < len(text):
        match = _GO_DURATION.match(text, pos)
        if not match:
            raise CronError(f'failed to parse duration {text}: time: invalid duration "{text}"')
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not text:
        raise CronError(f'failed to parse duration {text}: time: invalid duration ""')
    return total


@dataclass(frozen=True)
class CronSchedule:
    """A parsed standard cron schedule (5 fields, descriptors, ``@every``) in one time zone."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool
    zone: dt.tzinfo
    every_seconds: float | None = None

    @classmethod
    def parse(cls, schedule: str, time_zone: str | None = None) -> "CronSchedule":
        text = schedule.strip()
        zone: dt.tzinfo = dt.timezone.utc
        if time_zone:
            zone = load_zone(time_zone)
        if text.startswith("TZ=") or text.startswith("CRON_TZ="):
            head, _, text = text.partition(" ")
            zone = load_zone(head.split("=", 1)[1])
            text = text.strip()
        if not text:
            raise CronError("empty spec string")
        if text.startswith("@every "):
            delay = _parse_go_duration(text[len("@every "):].strip())
            # robfig rounds the delay to whole seconds, at least one.
            delay = max(1.0, float(math.floor(delay)))
            empty: frozenset[int] = frozenset()
            return cls(empty, empty, empty, empty, empty, False, False, zone, every_seconds=delay)
        if text.startswith("@"):
            if text not in _DESCRIPTORS:
                raise CronError(f"unrecognized descriptor: {text}")
            text = _DESCRIPTORS[text]
        fields = text.split()
        if len(fields) != 5:
            raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
        minutes, _ = _parse_field(fields[0], _MINUTE)
        hours, _ = _parse_field(fields[1], _HOUR)
        doms, dom_star = _parse_field(fields[2], _DAY_OF_MONTH)
        months, _ = _parse_field(fields[3], _MONTH)
        dows, dow_star = _parse_field(fields[4], _DAY_OF_WEEK)
        return cls(minutes, hours, doms, months, dows, dom_star, dow_star, zone)

    def _day_matches(self, day: dt.datetime) -> bool:
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        # As in cron: when both day fields are restricted, either one matching is enough.
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: float) -> float | None:
        """The first activation strictly after ``after`` (epoch seconds), None within five years."""
        if self.every_seconds is not None:
            return math.floor(after) + self.every_seconds
        start = dt.datetime.fromtimestamp(math.floor(after) + 1, tz=self.zone).replace(tzinfo=None)
        if start.second:
            start = start.replace(second=0) + dt.timedelta(minutes=1)
        candidate = start
        for _ in range(4):  # a local time a DST change skipped may map before ``after``: look again
            found = self._next_local(candidate)
            if found is None:
                return None
            at = found.replace(tzinfo=self.zone).timestamp()
            if at > after:
                return at
            candidate = found + dt.timedelta(minutes=1)
        return None

    def _next_local(self, t: dt.datetime) -> dt.datetime | None:
        last_year = t.year + 5
        while t.year <= last_year:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t + dt.timedelta(minutes=1)
            else:
                return t
        return None

    def most_recent(self, earliest: float, now: float) -> float | None:
        """The latest activation in (earliest, now], or None; cheap even after long outages."""
        first = self.next_after(earliest)
        if first is None or first > now:
            return None
        if self.every_seconds is not None:
            return first + math.floor((now - first) / self.every_seconds) * self.every_seconds
        # Walk forward from a recent point rather than from ``earliest``: a minutely schedule missed
        # for a month would otherwise take 40,000 steps.
        for window in (3_600.0, 2 * 86_400.0, 40 * 86_400.0, 400 * 86_400.0, 6 * 366 * 86_400.0):
            start = max(earliest, now - window)
            at = self.next_after(start)
            if at is None or at > now:
                continue
            while True:
                following = self.next_after(at)
                if following is None or following > now:
                    return at
                at = following
        return first


def load_zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name}") from None


def rfc3339(at: float, zone: dt.tzinfo = dt.timezone.utc) -> str:
    """Go's time.RFC3339 formatting: ``Z`` for a zero offset, ``+02:00`` otherwise."""
    local = dt.datetime.fromtimestamp(at, tz=zone)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    offset = local.utcoffset() or dt.timedelta(0)
    if offset == dt.timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# ================================================================================ shared helpers
def _name(obj: Obj) -> str:
    return obj["metadata"]["name"]


def _namespace(obj: Obj) -> str:
    return obj["metadata"].get("namespace", "")


def job_condition(job: Obj, cond_type: str) -> dict[str, Any] | None:
    cond = podutil.condition(job, cond_type)
    return cond if cond is not None and cond.get("status") == "True" else None


def job_finished_type(job: Obj) -> str | None:
    """"Complete" or "Failed" once the Job has its terminal condition, else None."""
    for cond in job.get("status", {}).get("conditions") or ():
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None


def is_job_finished(job: Obj) -> bool:
    return job_finished_type(job) is not None


def has_tracking_finalizer(pod: Obj) -> bool:
    return JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or ())


def _is_job_ref(ref: dict[str, Any] | None) -> bool:
    return ref is not None and ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1"


def completion_index(pod: Obj) -> int | None:
    raw = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    if raw is None:
        return None
    try:
        index = int(raw)
    except ValueError:
        return None
    return index if index >= 0 else None


def parse_indexes(text: str | None, limit: int) -> set[int]:
    """``completedIndexes`` ("1,3-5") as a set, ignoring indexes at or beyond ``limit``."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            continue
        out.update(i for i in range(first, last + 1) if i < limit)
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _get_int(spec: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = spec.get(key)
    return default if value is None else int(value)


def _invalid(kind: str, obj: Obj, causes: list[tuple[str, str]], group: str = "batch") -> errors.ApiError:
    return errors.invalid(kind, obj.get("metadata", {}).get("name", ""), causes, group)


def _go_value(value: Any) -> str:
    """How field errors print a value: strings quoted, the rest as JSON."""
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ===================================================================================== admission
def default_job(job: Obj, store: Any) -> None:
    """The job strategy's PrepareForCreate plus SetDefaults_Job."""
    meta = job["metadata"]
    spec = job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {}) or {}
    template["metadata"] = template_meta
    # SetDefaults_Job runs when the request is decoded: job labels default to the template's.
    if template_meta.get("labels") and not meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    if not spec.get("manualSelector"):
        _generate_selector(job)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    if spec.get("completionMode") is None:
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
    # ... and again when the stored object is read back, now with the generated template labels.
    if not meta.get("labels") and template_meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    job["status"] = {}


def _generate_selector(job: Obj) -> None:
    uid = job["metadata"]["uid"]
    name = job["metadata"]["name"]
    spec = job["spec"]
    labels = spec["template"]["metadata"].setdefault("labels", {}) or {}
    spec["template"]["metadata"]["labels"] = labels
    # A label the user set is kept: a conflicting one is then rejected by validation.
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, name)
    for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
        labels.setdefault(key, uid)
    selector = spec.get("selector") or {}
    match_labels = selector.get("matchLabels") or {}
    match_labels.setdefault(CONTROLLER_UID_LABEL, uid)
    selector["matchLabels"] = match_labels
    spec["selector"] = selector


def _validate_pod_template_restart_policy(template: dict[str, Any], path: str) -> list[tuple[str, str]]:
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy is None or policy == "":
        return [(f"{path}.spec.restartPolicy", 'Required value: valid values: "OnFailure", "Never"')]
    if policy not in ("OnFailure", "Never"):
        return [(f"{path}.spec.restartPolicy", f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"')]
    return []


def _validate_job_spec(spec: dict[str, Any], path: str) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            causes.append((f"{path}.{key}", f"Invalid value: {_go_value(value)}: must be greater than or equal to 0"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        causes.append((f"{path}.completionMode", f'Unsupported value: "{mode}": supported values: "NonIndexed", "Indexed"'))
    if mode == "Indexed" and spec.get("completions") is None:
        causes.append((f"{path}.completions", "Required value: when completion mode is Indexed"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement not in ("TerminatingOrFailed", "Failed"):
        causes.append(
            (f"{path}.podReplacementPolicy", f'Unsupported value: "{replacement}": supported values: "Failed", "TerminatingOrFailed"')
        )
    template = spec.get("template") or {}
    causes.extend(_validate_pod_template_restart_policy(template, f"{path}.template"))
    return causes


def validate_job(new: Obj, old: Obj | None) -> None:
    spec = new.get("spec") or {}
    causes = _validate_job_spec(spec, "spec")
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if selector is None:
        causes.append(("spec.selector", "Required value"))
    else:
        try:
            parsed = selector_from_object(selector)
        except (KeyError, TypeError, AttributeError):
            parsed = None
            causes.append(("spec.selector", f"Invalid value: {_go_value(selector)}: invalid label selector"))
        if parsed is not None and not labels_match(parsed, template_labels):
            causes.append(
                ("spec.template.metadata.labels", f"Invalid value: {_go_value(template_labels)}: `selector` does not match template `labels`")
            )
        if not spec.get("manualSelector"):
            causes.extend(_generated_selector_causes(new, parsed, template_labels))
    if old is not None:
        causes.extend(_job_update_causes(new, old))
    if causes:
        raise _invalid("Job", new, causes)


def _generated_selector_causes(job: Obj, selector: LabelSelector | None, template_labels: dict[str, str]) -> list[tuple[str, str]]:
    """ValidateGeneratedSelector: the template carries the generated labels and the selector
    selects exactly by them (a selector the user wrote needs ``manualSelector: true``)."""
    uid, name = job["metadata"].get("uid", ""), job["metadata"].get("name", "")
    expected = {CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name, LEGACY_CONTROLLER_UID_LABEL: uid, LEGACY_JOB_NAME_LABEL: name}
    causes: list[tuple[str, str]] = []
    for key, value in expected.items():
        path = f"spec.template.metadata.labels[{key}]"
        if key not in template_labels:
            causes.append((path, f"Required value: must be '{value}'"))
        elif template_labels[key] != value:
            causes.append((path, f"Invalid value: {_go_value(template_labels)}: must be '{value}'"))
    if selector is not None and not labels_match(selector, expected):
        selector_obj = (job.get("spec") or {}).get("selector")
        causes.append(("spec.selector", f"Invalid value: {_go_value(selector_obj)}: `selector` not auto-generated"))
    return causes


# Scheduling directives a suspended Job that never started may still change (MutableSchedulingDirectives).
_MUTABLE_WHILE_SUSPENDED = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _job_update_causes(new: Obj, old: Obj) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if new_spec.get("selector") != old_spec.get("selector"):
        causes.append(("spec.selector", f"Invalid value: {_go_value(new_spec.get('selector'))}: field is immutable"))
    if (new_spec.get("completionMode") or "NonIndexed") != (old_spec.get("completionMode") or "NonIndexed"):
        causes.append(("spec.completionMode", f"Invalid value: {_go_value(new_spec.get('completionMode'))}: field is immutable"))
    if new_spec.get("completions") != old_spec.get("completions"):
        # Only elastic Indexed Jobs may change completions, together with parallelism.
        elastic = new_spec.get("completionMode") == "Indexed" and new_spec.get("completions") == new_spec.get("parallelism")
        if not elastic:
            causes.append(("spec.completions", f"Invalid value: {_go_value(new_spec.get('completions'))}: field is immutable"))
    new_template, old_template = new_spec.get("template"), old_spec.get("template")
    if new_template != old_template and not _template_change_allowed(old, new_template or {}, old_template or {}):
        causes.append(("spec.template", f"Invalid value: {_go_value(new_template)}: field is immutable"))
    return causes


def _template_change_allowed(old_job: Obj, new_template: dict[str, Any], old_template: dict[str, Any]) -> bool:
    never_started = bool((old_job.get("spec") or {}).get("suspend")) and not (old_job.get("status") or {}).get("startTime")
    if not never_started:
        return False
    strip_new, strip_old = copy.deepcopy(new_template), copy.deepcopy(old_template)
    for tmpl in (strip_new, strip_old):
        md = tmpl.get("metadata") or {}
        md.pop("labels", None)
        md.pop("annotations", None)
        tmpl["metadata"] = md
        for key in _MUTABLE_WHILE_SUSPENDED:
            (tmpl.get("spec") or {}).pop(key, None)
    return strip_new == strip_old


def default_cronjob(cronjob: Obj, store: Any) -> None:
    spec = cronjob.setdefault("spec", {})
    if spec.get("concurrencyPolicy") is None:
        spec["concurrencyPolicy"] = "Allow"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    cronjob["status"] = {}


def validate_cronjob(new: Obj, old: Obj | None) -> None:
    causes: list[tuple[str, str]] = []
    name = new["metadata"].get("name", "")
    if old is None and len(name) > CRONJOB_MAX_NAME_LENGTH:
        causes.append(("metadata.name", f'Invalid value: "{name}": must be no more than {CRONJOB_MAX_NAME_LENGTH} characters'))
    spec = new.get("spec") or {}
    schedule = spec.get("schedule")
    time_zone = spec.get("timeZone")
    if not schedule:
        causes.append(("spec.schedule", "Required value"))
    else:
        try:
            CronSchedule.parse(schedule)
        except CronError as exc:
            causes.append(("spec.schedule", f'Invalid value: "{schedule}": {exc}'))
        if "TZ" in schedule:
            if time_zone is not None:
                causes.append(("spec.schedule", f'Invalid value: "{schedule}": cannot use both timeZone field and TZ or CRON_TZ in schedule'))
            elif old is None or "TZ" not in ((old.get("spec") or {}).get("schedule") or ""):
                causes.append(("spec.schedule", f'Invalid value: "{schedule}": cannot use TZ or CRON_TZ in schedule, use timeZone field instead'))
    if time_zone is not None:
        if time_zone == "":
            causes.append(("spec.timeZone", 'Invalid value: "": timeZone must be nil or non-empty string'))
        elif time_zone.lower() == "local":
            causes.append(
                ("spec.timeZone", f'Invalid value: "{time_zone}": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones')
            )
        else:
            try:
                load_zone(time_zone)
            except CronError as exc:
                causes.append(("spec.timeZone", f'Invalid value: "{time_zone}": {exc}'))
    policy = spec.get("concurrencyPolicy")
    if policy is not None and policy not in ("Allow", "Forbid", "Replace"):  # None: defaulted on decode
        causes.append(("spec.concurrencyPolicy", f'Unsupported value: "{policy}": supported values: "Allow", "Forbid", "Replace"'))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            causes.append((f"spec.{key}", f"Invalid value: {_go_value(value)}: must be greater than or equal to 0"))
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    causes.extend(_validate_job_spec(job_spec, "spec.jobTemplate.spec"))
    if causes:
        raise _invalid("CronJob", new, causes)


# ================================================================================ job controller
@dataclass
class _Backoff:
    failures_after_success: int = 0
    last_failure: float = 0.0  # time.monotonic() when the last failure was counted


@dataclass
class _Counted:
    """Finished pods the controller saw vanish before it counted them (the kubelet removed them)."""

    succeeded: set[str]
    failed: set[str]
    succeeded_indexes: set[int]


class JobController(Controller):
    name = "job"
    watches = (JOBS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._backoff: dict[str, _Backoff] = {}  # job uid
        self._vanished: dict[str, _Counted] = {}  # job uid
        self._wakeups: dict[Hashable, float] = {}  # key -> time.monotonic() its timer fires
        self.backoff_base = float(self.config.extra.get("job_backoff_base_seconds", JOB_BACKOFF_BASE_SECONDS))  # type: ignore[arg-type]
        self.backoff_max = float(self.config.extra.get("job_backoff_max_seconds", JOB_BACKOFF_MAX_SECONDS))  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == JOBS:
            obj = new if new is not None else old
            assert obj is not None
            key = ("job", _namespace(obj), _name(obj))
            if event != "DELETED":
                return [key]
            uid = obj["metadata"]["uid"]
            self._backoff.pop(uid, None)
            self._vanished.pop(uid, None)
            self._wakeups.pop(key, None)
            # Pods still pointing at the deleted Job lose their tracking finalizer.
            return [key] + [
                ("pod", _namespace(pod), _name(pod))
                for dep_key, pod in self.store.dependents(uid)
                if dep_key == PODS and has_tracking_finalizer(pod)
            ]
        return self._pod_keys(event, old, new)

    def _pod_keys(self, event: str, old: Obj | None, new: Obj | None) -> list[Hashable]:
        keys: list[Hashable] = []
        for pod in (old, new):
            if pod is None:
                continue
            ref = podutil.controller_ref(pod)
            if _is_job_ref(ref):
                keys.append(("job", _namespace(pod), ref["name"]))  # type: ignore[index]
        if event == "DELETED":
            if old is not None and has_tracking_finalizer(old):
                self._remember_vanished(old)
        elif new is not None and has_tracking_finalizer(new):
            ref = podutil.controller_ref(new)
            job = self._resolve(_namespace(new), ref) if _is_job_ref(ref) else None
            if job is None or is_job_finished(job):
                keys.append(("pod", _namespace(new), _name(new)))
        return keys

    def _remember_vanished(self, pod: Obj) -> None:
        """A pod removed while still holding the tracking finalizer was never counted: count it now."""
        ref = podutil.controller_ref(pod)
        if not _is_job_ref(ref):
            return
        job = self._resolve(_namespace(pod), ref)
        if job is None or is_job_finished(job):
            return
        counted = self._vanished.setdefault(job["metadata"]["uid"], _Counted(set(), set(), set()))
        uid = pod["metadata"]["uid"]
        if pod.get("status", {}).get("phase") == "Succeeded":
            counted.succeeded.add(uid)
            index = completion_index(pod)
            if index is not None:
                counted.succeeded_indexes.add(index)
        else:
            counted.failed.add(uid)

    def _resolve(self, namespace: str, ref: dict[str, Any] | None) -> Obj | None:
        if ref is None:
            return None
        job = self.store.try_get(JOBS, namespace, ref.get("name", ""))
        if job is None or job["metadata"]["uid"] != ref.get("uid"):
            return None
        return job

    def initial_keys(self) -> Iterable[Hashable]:
        return [("job", _namespace(j), _name(j)) for j in self.store.iter(JOBS)]

    def sync(self, key: Any) -> None:
        kind, namespace, name = key
        if kind == "pod":
            self._sync_orphan_pod(namespace, name)
        else:
            self._sync_job(namespace, name)

    # ------------------------------------------------------------------------------ orphan pods
    def _sync_orphan_pod(self, namespace: str, name: str) -> None:
        pod = self.store.try_get(PODS, namespace, name)
        if pod is None or not has_tracking_finalizer(pod):
            return
        ref = podutil.controller_ref(pod)
        if ref is not None:
            if not _is_job_ref(ref):
                return  # controlled by something else: not ours to touch
            job = self._resolve(namespace, ref)
            if job is not None and not is_job_finished(job):
                return  # its Job is alive and will count it
        self.remove_finalizer(pod)

    def remove_finalizer(self, pod: Obj) -> None:
        current = self.store.try_get(PODS, _namespace(pod), _name(pod))
        if current is None or not has_tracking_finalizer(current):
            return

        def drop(obj: Obj) -> None:
            remaining = [f for f in obj["metadata"].get("finalizers") or () if f != JOB_TRACKING_FINALIZER]
            if remaining:
                obj["metadata"]["finalizers"] = remaining
            else:
                obj["metadata"].pop("finalizers", None)

        try:
            self.store.mutate(PODS, _namespace(pod), _name(pod), drop)
        except errors.ApiError as exc:
            if exc.code != 404:
                raise

    # ---------------------------------------------------------------------------------- jobs
    def pods_of(self, job: Obj) -> list[Obj]:
        uid = job["metadata"]["uid"]
        return [
            obj
            for key, obj in self.store.dependents(uid)
            if key == PODS and (podutil.controller_ref(obj) or {}).get("uid") == uid
        ]

    def _sync_job(self, namespace: str, name: str) -> None:
        job = self.store.try_get(JOBS, namespace, name)
        if job is None:
            return
        uid = job["metadata"]["uid"]
        if is_job_finished(job):
            self._backoff.pop(uid, None)
            self._vanished.pop(uid, None)
            for pod in self.pods_of(job):
                if has_tracking_finalizer(pod):
                    self.remove_finalizer(pod)
            return
        spec = job.get("spec") or {}
        if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
            return  # the real controller skips unknown completion modes
        JobSync(self, job).run()

    # ------------------------------------------------------------------------------- backoff
    def note_pod_outcomes(self, job_uid: str, succeeded: int, failed: int) -> None:
        if not succeeded and not failed:
            return
        record = self._backoff.setdefault(job_uid, _Backoff())
        if succeeded:
            record.failures_after_success = 0
        if failed:
            record.failures_after_success += failed
            record.last_failure = time.monotonic()

    def backoff_remaining(self, job_uid: str) -> float:
        record = self._backoff.get(job_uid)
        if record is None or record.failures_after_success == 0:
            return 0.0
        delay = min(self.backoff_max, self.backoff_base * (2 ** (record.failures_after_success - 1)))
        return max(0.0, record.last_failure + delay - time.monotonic())

    def wake_at(self, key: Hashable, delay: float) -> None:
        """A timer for ``key`` unless one already fires no later (syncs run on every pod change)."""
        now = time.monotonic()
        due = now + max(0.0, delay)
        pending = self._wakeups.get(key)
        if pending is not None and now < pending <= due + 0.001:
            return
        self._wakeups[key] = due
        self.enqueue_after(key, delay)

    def take_vanished(self, job_uid: str) -> _Counted:
        return self._vanished.pop(job_uid, None) or _Counted(set(), set(), set())


class JobSync:
    """One syncJob pass over a Job that has not finished yet."""

    def __init__(self, controller: JobController, job: Obj) -> None:
        self.ctl = controller
        self.store = controller.store
        self.cluster = controller.cluster
        self.job = job
        self.spec: dict[str, Any] = job.get("spec") or {}
        self.namespace = _namespace(job)
        self.name = _name(job)
        self.uid = job["metadata"]["uid"]
        self.now = controller.clock.time()
        self.now_iso = controller.clock.iso()
        self.indexed = self.spec.get("completionMode") == "Indexed"
        self.completions: int | None = _get_int(self.spec, "completions")
        self.parallelism: int = _get_int(self.spec, "parallelism", 1) or 0
        self.suspended = bool(self.spec.get("suspend"))
        self.deleting = bool(job["metadata"].get("deletionTimestamp"))

    # ----------------------------------------------------------------------------- helpers
    def _only_replace_failed(self) -> bool:
        return self.spec.get("podReplacementPolicy") == "Failed" or self.spec.get("podFailurePolicy") is not None

    def _considered_failed(self, pod: Obj) -> bool:
        phase = pod.get("status", {}).get("phase")
        if phase == "Failed":
            return True
        if self._only_replace_failed():
            return False
        # Deleted pods count as failures: they never get a chance to reach the Failed phase.
        return podutil.is_terminating(pod) and phase != "Succeeded"

    def _valid_index(self, pod: Obj) -> int | None:
        index = completion_index(pod)
        if index is None or self.completions is None or index >= self.completions:
            return None
        return index

    def _event(self, event_type: str, reason: str, message: str) -> None:
        record_event(self.cluster, self.job, event_type, reason, message, JOB_CONTROLLER)

    # --------------------------------------------------------------------------------- run
    def run(self) -> None:
        job = self.job
        status: dict[str, Any] = copy.deepcopy(job.get("status") or {})
        old_status = copy.deepcopy(status)
        pods = self.ctl.pods_of(job)
        tracked = [p for p in pods if has_tracking_finalizer(p)]
        active_pods = [p for p in pods if podutil.is_active(p)]
        terminating = sum(1 for p in pods if podutil.is_terminating(p) and not podutil.is_terminal(p))
        ready = sum(1 for p in active_pods if podutil.is_ready(p))
        vanished = self.ctl.take_vanished(self.uid)

        new_succeeded = [p for p in tracked if p.get("status", {}).get("phase") == "Succeeded"]
        new_failed = [p for p in tracked if p.get("status", {}).get("phase") != "Succeeded" and self._considered_failed(p)]
        if self.indexed:
            new_succeeded = [p for p in new_succeeded if self._valid_index(p) is not None]
            new_failed = [p for p in new_failed if self._valid_index(p) is not None]
        succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + len(vanished.succeeded)
        failed = int(status.get("failed") or 0) + len(new_failed) + len(vanished.failed)
        succeeded_indexes: set[int] = set()
        if self.indexed and self.completions is not None:
            succeeded_indexes = parse_indexes(status.get("completedIndexes"), self.completions)
            succeeded_indexes.update(i for i in (self._valid_index(p) for p in new_succeeded) if i is not None)
            succeeded_indexes.update(i for i in vanished.succeeded_indexes if i < self.completions)
            succeeded = len(succeeded_indexes)
        self.ctl.note_pod_outcomes(self.uid, len(new_succeeded) + len(vanished.succeeded), len(new_failed) + len(vanished.failed))

        if not status.get("startTime") and not self.suspended:
            status["startTime"] = self.now_iso

        conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
        finished = self._finished_condition(status, failed, pods)
        if finished is not None:
            deleted, deleted_ready = self._delete_pods(active_pods, keep_finalizer=True)
            active = len(active_pods) - deleted
            terminating += deleted
            ready -= deleted_ready
        else:
            active = len(active_pods)
            managed = False
            if not self.deleting:
                active, removed, removed_ready = self._manage(active_pods, terminating, succeeded, succeeded_indexes)
                terminating += removed
                ready -= removed_ready
                managed = True
            if self.completions is None:
                complete = succeeded > 0 and active == 0
            else:
                complete = succeeded >= self.completions and active == 0
            if complete:
                finished = ("SuccessCriteriaMet", "Complete") + COMPLETIONS_REACHED
            elif managed:
                self._update_suspended_condition(status)

        # Count finished pods once, by taking their tracking finalizer off.
        failure = finished is not None and finished[1] == "Failed"
        for pod in tracked:
            is_success = pod.get("status", {}).get("phase") == "Succeeded"
            considered_failed = self._considered_failed(pod)
            if not (self.deleting or finished is not None or is_success or considered_failed):
                continue
            if failure and not is_success and not considered_failed and (not self.indexed or self._valid_index(pod) is not None):
                failed += 1  # every pod still running when the Job fails is a failure
            self.ctl.remove_finalizer(pod)

        if finished is not None and not any(c.get("type") == finished[0] for c in conditions):
            conditions.append(self._condition(finished[0], finished[2], finished[3]))

        status["active"] = active
        status["ready"] = ready
        status["terminating"] = terminating
        status["succeeded"] = succeeded
        status["failed"] = failed
        if self.indexed:
            status["completedIndexes"] = format_indexes(succeeded_indexes)
        status["uncountedTerminatedPods"] = {}

        job_finished = False
        if finished is not None and terminating == 0:
            # The terminal condition waits for every pod to be gone (delayed terminal condition, 1.31).
            final_type = finished[1]
            self._ensure_condition(conditions, final_type, "True", finished[2], finished[3])
            if final_type == "Complete":
                status["completionTime"] = self.now_iso
            job_finished = True
        self._write_status(status, old_status)
        if job_finished:
            if finished[1] == "Complete":  # type: ignore[index]
                if self.completions is not None and succeeded > self.completions:
                    self._event("Warning", "TooManySucceededPods", "Too many succeeded pods running after completion count reached")
                self._event("Normal", "Completed", "Job completed")
            else:
                self._event("Warning", finished[2], finished[3])  # type: ignore[index]

    def _finished_condition(self, status: dict[str, Any], failed: int, pods: list[Obj]) -> tuple[str, str, str, str] | None:
        """(interim type, terminal type, reason, message) once the Job's outcome is decided."""
        job = self.job
        met = job_condition(job, "SuccessCriteriaMet")
        if met is not None:
            return ("SuccessCriteriaMet", "Complete", met.get("reason", ""), met.get("message", ""))
        target = job_condition(job, "FailureTarget")
        if target is not None:
            return ("FailureTarget", "Failed", target.get("reason", ""), target.get("message", ""))
        backoff_limit = _get_int(self.spec, "backoffLimit", 6)
        if failed > (backoff_limit if backoff_limit is not None else 6) or self._past_backoff_limit_on_failure(pods):
            return ("FailureTarget", "Failed") + BACKOFF_LIMIT_EXCEEDED
        deadline = _get_int(self.spec, "activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if deadline is not None and start is not None and not self.suspended:
            remaining = start + deadline - self.now
            if remaining <= 0:
                return ("FailureTarget", "Failed") + DEADLINE_EXCEEDED
            # Polled too, so a test moving the cluster clock past the deadline is noticed.
            self.ctl.wake_at(("job", self.namespace, self.name), min(remaining, DEADLINE_POLL_SECONDS))
        return None

    def _past_backoff_limit_on_failure(self, pods: list[Obj]) -> bool:
        if ((self.spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
            return False
        restarts = 0
        for pod in pods:
            if pod.get("status", {}).get("phase") in ("Running", "Pending"):
                for section in ("initContainerStatuses", "containerStatuses"):
                    restarts += sum(int(cs.get("restartCount") or 0) for cs in pod.get("status", {}).get(section) or ())
        limit = _get_int(self.spec, "backoffLimit", 6) or 0
        return restarts > 0 if limit == 0 else restarts >= limit

    def _update_suspended_condition(self, status: dict[str, Any]) -> bool:
        conditions = status["conditions"]
        if self.suspended:
            changed = self._ensure_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended")
            if changed:
                self._event("Normal", "Suspended", "Job suspended")
            return changed
        changed = self._ensure_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed")
        if changed:
            self._event("Normal", "Resumed", "Job resumed")
            # ActiveDeadlineSeconds counts from the resumption.
            status["startTime"] = self.now_iso
        return changed

    def _condition(self, cond_type: str, reason: str, message: str, cond_status: str = "True") -> dict[str, Any]:
        cond: dict[str, Any] = {
            "type": cond_type,
            "status": cond_status,
            "lastProbeTime": self.now_iso,
            "lastTransitionTime": self.now_iso,
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def _ensure_condition(self, conditions: list[dict[str, Any]], cond_type: str, cond_status: str, reason: str, message: str) -> bool:
        """ensureJobConditionStatus: update or append (a False condition is never appended)."""
        for i, cond in enumerate(conditions):
            if cond.get("type") == cond_type:
                if cond.get("status") != cond_status or cond.get("reason", "") != reason or cond.get("message", "") != message:
                    conditions[i] = self._condition(cond_type, reason, message, cond_status)
                    return True
                return False
        if cond_status != "False":
            conditions.append(self._condition(cond_type, reason, message, cond_status))
            return True
        return False

    def _write_status(self, status: dict[str, Any], old_status: dict[str, Any]) -> None:
        for key in ("active", "succeeded", "failed"):  # omitempty integers
            if not status.get(key):
                status.pop(key, None)
        if not status.get("conditions"):
            status.pop("conditions", None)
        if not status.get("completedIndexes"):
            status.pop("completedIndexes", None)
        if status == old_status:
            return

        def apply(obj: Obj) -> None:
            obj["status"] = status

        try:
            self.store.mutate(JOBS, self.namespace, self.name, apply, subresource="status")
        except errors.ApiError as exc:
            if exc.code != 404:
                raise

    # -------------------------------------------------------------------------------- manage
    def _manage(self, active_pods: list[Obj], terminating: int, succeeded: int, succeeded_indexes: set[int]) -> tuple[int, int, int]:
        """manageJob: returns (active, pods removed now, ready pods among them)."""
        active = len(active_pods)
        if self.suspended:
            removed, removed_ready = self._delete_pods(active_pods, keep_finalizer=False)
            return active - removed, removed, removed_ready
        if self.completions is None:
            want = active if succeeded > 0 else self.parallelism
        else:
            want = max(0, min(self.completions - succeeded, self.parallelism))
        to_remove = self._pods_for_removal(active_pods, max(0, active - want), succeeded_indexes)
        if to_remove:
            removed, removed_ready = self._delete_pods(to_remove[:MAX_POD_CREATE_DELETE_PER_SYNC], keep_finalizer=False)
            return active - removed, removed, removed_ready
        replacing = terminating if self._only_replace_failed() else 0
        diff = want - replacing - active
        if diff <= 0:
            return active, 0, 0
        wait = self.ctl.backoff_remaining(self.uid)
        if wait > 0:
            self.ctl.wake_at(("job", self.namespace, self.name), wait)
            return active, 0, 0
        diff = min(diff, MAX_POD_CREATE_DELETE_PER_SYNC)
        indexes: list[int | None] = [None] * diff
        if self.indexed and self.completions is not None:
            busy = {completion_index(p) for p in active_pods}
            if self._only_replace_failed():
                busy.update(completion_index(p) for p in self.ctl.pods_of(self.job) if podutil.is_terminating(p) and not podutil.is_terminal(p))
            pending = [i for i in range(self.completions) if i not in succeeded_indexes and i not in busy]
            indexes = list(pending[:diff])
        created = 0
        for index in indexes:
            if not self._create_pod(index):
                break
            created += 1
        return active + created, 0, 0

    def _pods_for_removal(self, active_pods: list[Obj], at_least: int, succeeded_indexes: set[int]) -> list[Obj]:
        remove: list[Obj] = []
        keep = list(active_pods)
        if self.indexed:
            keep = []
            by_index: dict[int, list[Obj]] = {}
            for pod in active_pods:
                index = self._valid_index(pod)
                if index is None:
                    remove.append(pod)  # no index, or beyond completions
                else:
                    by_index.setdefault(index, []).append(pod)
            for group in by_index.values():
                group.sort(key=_active_pod_order)
                remove.extend(group[:-1])  # duplicates: keep the one furthest along
                keep.append(group[-1])
        if len(remove) < at_least:
            keep.sort(key=_active_pod_order)
            remove.extend(keep[: at_least - len(remove)])
        return remove

    def _delete_pods(self, pods: list[Obj], keep_finalizer: bool) -> tuple[int, int]:
        """Delete pods; without ``keep_finalizer`` they are uncounted (suspension, scale down)."""
        deleted = deleted_ready = 0
        for pod in pods:
            if not keep_finalizer and has_tracking_finalizer(pod):
                self.ctl.remove_finalizer(pod)
            try:
                self.store.delete(PODS, self.namespace, _name(pod))
            except errors.ApiError as exc:
                if exc.code != 404:
                    self._event("Warning", "FailedDelete", f"Error deleting: {exc.message}")
                    continue
            deleted += 1
            if podutil.is_ready(pod):
                deleted_ready += 1
            self._event("Normal", "SuccessfulDelete", f"Deleted pod: {_name(pod)}")
        return deleted, deleted_ready

    def _create_pod(self, index: int | None) -> bool:
        template = copy.deepcopy(self.spec.get("template") or {})
        template_meta = template.setdefault("metadata", {}) or {}
        template["metadata"] = template_meta
        generate_name = f"{self.name}-"
        extra_labels: dict[str, str] = {}
        if index is not None:
            annotations = dict(template_meta.get("annotations") or {})
            annotations[COMPLETION_INDEX_ANNOTATION] = str(index)
            template_meta["annotations"] = annotations
            extra_labels[COMPLETION_INDEX_ANNOTATION] = str(index)
            pod_spec = template.setdefault("spec", {})
            pod_spec["hostname"] = f"{self.name}-{index}"
            _add_completion_index_env(pod_spec)
            generate_name = f"{self.name}-{index}-"
        pod = podutil.pod_from_template(template, self.job, generate_name=generate_name, extra_labels=extra_labels)
        finalizers = list(template_meta.get("finalizers") or [])
        if JOB_TRACKING_FINALIZER not in finalizers:
            finalizers.append(JOB_TRACKING_FINALIZER)
        pod["metadata"]["finalizers"] = finalizers
        try:
            created = self.store.create(PODS, pod, namespace=self.namespace)
        except errors.ApiError as exc:
            if exc.code == 403 and "being terminated" in exc.message:
                return False  # the namespace is going away: nothing more to create
            self._event("Warning", "FailedCreate", f"Error creating: {exc.message}")
            return False
        self._event("Normal", "SuccessfulCreate", f"Created pod: {_name(created)}")
        return True


def _add_completion_index_env(pod_spec: dict[str, Any]) -> None:
    env_var = {
        "name": COMPLETION_INDEX_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
    }
    for section in ("initContainers", "containers"):
        for container in pod_spec.get(section) or ():
            env = container.setdefault("env", []) or []
            container["env"] = env
            if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                env.append(copy.deepcopy(env_var))


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _active_pod_order(pod: Obj) -> tuple[Any, ...]:
    """controller.ActivePods: the pods to delete first sort first."""
    status = pod.get("status", {})
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or ())
    since = podutil.ready_since(pod)
    created = parse_time(pod["metadata"].get("creationTimestamp")) or 0.0
    return (
        bool(pod.get("spec", {}).get("nodeName")),  # unscheduled first
        _PHASE_RANK.get(status.get("phase", "Pending"), 0),  # pending < unknown < running
        podutil.is_ready(pod),  # not ready first
        -(since or 0.0),  # ready for less time first
        -restarts,  # more restarts first
        -created,  # newer first
    )


# ====================================================================== ttl-after-finished controller
def _finish_time(job: Obj) -> float | None:
    status = job.get("status", {})
    if status.get("completionTime"):
        return parse_time(status["completionTime"])
    for cond in status.get("conditions") or ():
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


class TTLAfterFinishedController(Controller):
    """Deletes finished Jobs ``ttlSecondsAfterFinished`` after they finished (foreground, with a UID
    precondition, as the real ttl-after-finished controller does)."""

    name = "ttl-after-finished"
    watches = (JOBS,)

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if new is None or event == "DELETED" or not self._candidate(new):
            return ()
        return [(_namespace(new), _name(new))]

    @staticmethod
    def _candidate(job: Obj) -> bool:
        return (
            (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None
            and is_job_finished(job)
            and not job["metadata"].get("deletionTimestamp")
        )

    def initial_keys(self) -> Iterable[Hashable]:
        return [(_namespace(j), _name(j)) for j in self.store.iter(JOBS) if self._candidate(j)]

    def sync(self, key: Any) -> None:
        namespace, name = key
        job = self.store.try_get(JOBS, namespace, name)
        if job is None or not self._candidate(job):
            return
        finished_at = _finish_time(job)
        if finished_at is None:
            return
        expires = finished_at + int(job["spec"]["ttlSecondsAfterFinished"])
        now = self.clock.time()
        if now < expires:
            # Poll as well, so a test moving the cluster clock forward is noticed.
            self.enqueue_after(key, min(expires - now, self.config.cronjob_poll_seconds))
            return
        try:
            self.store.delete(JOBS, namespace, name, propagation="Foreground", preconditions={"uid": job["metadata"]["uid"]})
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise


# ============================================================================ cronjob controller
def _object_reference(job: Obj) -> dict[str, Any]:
    m = job["metadata"]
    return {
        "kind": "Job",
        "namespace": m.get("namespace", ""),
        "name": m["name"],
        "uid": m["uid"],
        "apiVersion": "batch/v1",
        "resourceVersion": m.get("resourceVersion", ""),
    }


def _job_start_order(job: Obj) -> tuple[Any, ...]:
    """byJobStartTime: oldest start first, Jobs not started last, names break ties."""
    start = parse_time((job.get("status") or {}).get("startTime"))
    return (start is None, start or 0.0, _name(job))


def job_from_cronjob(cronjob: Obj, scheduled: float, zone: dt.tzinfo) -> Obj:
    """getJobFromTemplate2: the Job a CronJob starts for one scheduled time."""
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    annotations[CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION] = rfc3339(scheduled, zone)
    metadata: dict[str, Any] = {
        "name": f"{_name(cronjob)}-{int(scheduled // 60)}",
        "namespace": _namespace(cronjob),
        "annotations": annotations,
        "ownerReferences": [podutil.owner_reference(cronjob, controller=True, block=True)],
    }
    if template_meta.get("labels"):
        metadata["labels"] = dict(template_meta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": copy.deepcopy(template.get("spec") or {})}


class CronJobController(Controller):
    name = "cronjob"
    watches = (CRONJOBS, JOBS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        # Warnings the real controller repeats on every sync are recorded once here (its event
        # recorder folds them into one Event with a count).
        self._reported: set[tuple[str, ...]] = set()

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == CRONJOBS:
            obj = new if new is not None else old
            assert obj is not None
            if event == "DELETED":
                uid = obj["metadata"]["uid"]
                self._reported = {r for r in self._reported if r[0] != uid}
                return ()
            return [(_namespace(obj), _name(obj))]
        keys = []
        for job in (old, new):
            if job is None:
                continue
            ref = podutil.controller_ref(job)
            if ref is not None and ref.get("kind") == "CronJob":
                keys.append((_namespace(job), ref.get("name", "")))
        return keys

    def initial_keys(self) -> Iterable[Hashable]:
        return [(_namespace(c), _name(c)) for c in self.store.iter(CRONJOBS)]

    def _report_once(self, cronjob: Obj, token: str, event_type: str, reason: str, message: str) -> None:
        marker = (cronjob["metadata"]["uid"], reason, token)
        if marker in self._reported:
            return
        self._reported.add(marker)
        record_event(self.cluster, cronjob, event_type, reason, message, CRONJOB_CONTROLLER)

    def _event(self, cronjob: Obj, event_type: str, reason: str, message: str) -> None:
        record_event(self.cluster, cronjob, event_type, reason, message, CRONJOB_CONTROLLER)

    def _jobs_of(self, cronjob: Obj) -> list[Obj]:
        uid = cronjob["metadata"]["uid"]
        return [
            obj
            for key, obj in self.store.dependents(uid)
            if key == JOBS and (podutil.controller_ref(obj) or {}).get("uid") == uid
        ]

    def sync(self, key: Any) -> None:
        namespace, name = key
        cronjob = self.store.try_get(CRONJOBS, namespace, name)
        if cronjob is None:
            return
        jobs = self._jobs_of(cronjob)
        status: dict[str, Any] = copy.deepcopy(cronjob.get("status") or {})
        old_status = copy.deepcopy(status)
        self._cleanup_finished_jobs(cronjob, status, jobs)
        requeue = self._sync_schedule(cronjob, status, [j for j in jobs if self.store.try_get(JOBS, namespace, _name(j)) is not None])
        if not status.get("active"):
            status.pop("active", None)
        if status != old_status:

            def apply(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(CRONJOBS, namespace, name, apply, subresource="status")
        if requeue is not None:
            self.enqueue_after(key, max(0.01, requeue))

    # ------------------------------------------------------------------------------- history
    def _cleanup_finished_jobs(self, cronjob: Obj, status: dict[str, Any], jobs: list[Obj]) -> None:
        spec = cronjob.get("spec") or {}
        successful = [j for j in jobs if job_finished_type(j) == "Complete"]
        failed = [j for j in jobs if job_finished_type(j) == "Failed"]
        for finished, limit in ((successful, spec.get("successfulJobsHistoryLimit")), (failed, spec.get("failedJobsHistoryLimit"))):
            if limit is None or len(finished) <= int(limit):
                continue
            finished.sort(key=_job_start_order)
            for job in finished[: len(finished) - int(limit)]:
                self._delete_job(cronjob, status, job)

    def _delete_job(self, cronjob: Obj, status: dict[str, Any], job: Obj) -> bool:
        try:
            self.store.delete(JOBS, _namespace(job), _name(job), propagation="Background")
        except errors.ApiError as exc:
            if exc.code != 404:
                self._event(cronjob, "Warning", "FailedDelete", f"Deleted job: {exc.message}")
                return False
        status["active"] = [ref for ref in status.get("active") or () if ref.get("uid") != job["metadata"]["uid"]]
        self._event(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {_name(job)}")
        return True

    # ------------------------------------------------------------------------------ schedule
    def _sync_schedule(self, cronjob: Obj, status: dict[str, Any], jobs: list[Obj]) -> float | None:
        """syncCronJob: keep status in step with the Jobs, then maybe start one. Returns the requeue delay."""
        namespace = _namespace(cronjob)
        active_uids = {ref.get("uid") for ref in status.get("active") or ()}
        children = set()
        for job in jobs:
            uid = job["metadata"]["uid"]
            children.add(uid)
            finished = job_finished_type(job)
            if finished is None and uid not in active_uids:
                # Not ours to track (kubectl create job --from=cronjob/... makes these): the real
                # controller only warns about it.
                self._report_once(
                    cronjob, uid, "Warning", "UnexpectedJob", f"Saw a job that the controller did not create or forgot: {_name(job)}"
                )
            elif finished is not None:
                if uid in active_uids:
                    status["active"] = [r for r in status.get("active") or () if r.get("uid") != uid]
                    active_uids.discard(uid)
                    self._event(cronjob, "Normal", "SawCompletedJob", f"Saw completed job: {_name(job)}, condition: {finished}")
                if finished == "Complete":
                    completed = (job.get("status") or {}).get("completionTime")
                    last = status.get("lastSuccessfulTime")
                    if completed and (last is None or (parse_time(completed) or 0) > (parse_time(last) or 0)):
                        status["lastSuccessfulTime"] = completed
        for ref in list(status.get("active") or ()):
            if ref.get("uid") in children:
                continue
            if self.store.try_get(JOBS, namespace, ref.get("name", "")) is None:
                self._event(cronjob, "Normal", "MissingJob", f"Active job went missing: {ref.get('name')}")
                status["active"] = [r for r in status.get("active") or () if r.get("uid") != ref.get("uid")]

        spec = cronjob.get("spec") or {}
        if cronjob["metadata"].get("deletionTimestamp"):
            return None
        time_zone = spec.get("timeZone")
        zone: dt.tzinfo = dt.timezone.utc
        if time_zone is not None:
            try:
                zone = load_zone(time_zone)
            except CronError as exc:
                self._report_once(cronjob, f"tz:{time_zone}", "Warning", "UnknownTimeZone", f'invalid timeZone: "{time_zone}": {exc}')
                return None
        if spec.get("suspend"):
            return None
        schedule_text = spec.get("schedule") or ""
        try:
            schedule = CronSchedule.parse(schedule_text, time_zone)
        except CronError as exc:
            self._report_once(cronjob, f"sched:{schedule_text}", "Warning", "UnparseableSchedule", f'unparseable schedule: "{schedule_text}" : {exc}')
            return None
        if "TZ" in schedule_text:
            self._report_once(
                cronjob,
                f"tz-in-schedule:{schedule_text}",
                "Warning",
                "UnsupportedSchedule",
                f'CRON_TZ or TZ used in schedule "{schedule_text}" is not officially supported, see '
                "https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
            )
            zone = schedule.zone

        now = self.clock.time()
        poll = float(self.config.cronjob_poll_seconds)
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(cronjob["metadata"].get("creationTimestamp")) or now
        deadline_seconds = spec.get("startingDeadlineSeconds")
        if deadline_seconds is not None:
            earliest = max(earliest, now - int(deadline_seconds))
        scheduled = schedule.most_recent(earliest, now) if earliest <= now else None
        upcoming = schedule.next_after(now)
        requeue = poll if upcoming is None else min(poll, upcoming - now + 0.1)
        if scheduled is None:
            return requeue
        if deadline_seconds is not None and scheduled + int(deadline_seconds) < now:
            self._report_once(
                cronjob, f"miss:{scheduled}", "Warning", "MissSchedule", f"Missed scheduled time to start a job: {_rfc1123z(scheduled)}"
            )
            return requeue
        job_name = f"{_name(cronjob)}-{int(scheduled // 60)}"
        if any(ref.get("name") == job_name for ref in status.get("active") or ()) or parse_time(status.get("lastScheduleTime")) == scheduled:
            return requeue
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            self._report_once(
                cronjob,
                f"forbid:{scheduled}",
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            return requeue
        if policy == "Replace":
            for ref in list(status.get("active") or ()):
                job = self.store.try_get(JOBS, namespace, ref.get("name", ""))
                if job is None:
                    continue
                if not self._delete_job(cronjob, status, job):
                    return requeue
        job = job_from_cronjob(cronjob, scheduled, zone)
        try:
            created = self.store.create(JOBS, job, namespace=namespace)
        except errors.ApiError as exc:
            if exc.code == 409 and exc.reason == "AlreadyExists":
                existing = self.store.try_get(JOBS, namespace, job_name)
                if existing is None or (podutil.controller_ref(existing) or {}).get("uid") != cronjob["metadata"]["uid"]:
                    return requeue  # someone else's Job of that name
                if existing["metadata"]["uid"] in {r.get("uid") for r in status.get("active") or ()}:
                    return requeue
                created = existing
            elif exc.code == 403 and "being terminated" in exc.message:
                return None  # the namespace is going away: no creation can succeed
            else:
                self._event(cronjob, "Warning", "FailedCreate", f"Error creating job: {exc.message}")
                return requeue
        else:
            self._event(cronjob, "Normal", "SuccessfulCreate", f"Created job {_name(created)}")
        status.setdefault("active", []).append(_object_reference(created))
        status["lastScheduleTime"] = self.clock.iso(scheduled)
        return requeue


def _rfc1123z(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")


CONTROLLERS = [JobController, CronJobController, TTLAfterFinishedController]
DEFAULTERS = {JOBS: default_job, CRONJOBS: default_cronjob}
VALIDATORS = {JOBS: validate_job, CRONJOBS: validate_cronjob}
