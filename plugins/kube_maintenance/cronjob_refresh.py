"""CronJob image refresh: the parameters and the decisions. Pure (plain dicts in, plain data out).

- which namespaces a run covers (a label selector or explicit names, protected ones never), and how
  they are sharded into a bounded number of groups for dynamic task mapping;
- which active Jobs of a CronJob are stale: a container or init container, matched by name, runs an
  image other than the one in the CronJob's current job template;
- the fresh Job started in their place, built as ``kubectl create job --from=cronjob/<name>`` builds
  it, under a name derived from the CronJob's UID and template generation so a retry or a re-run
  never starts a second one for the same refresh.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from .params import FieldReader, ParamError
from .registry import RegistryError
from .selectors import parse_label_selector

Obj = dict[str, Any]

# What kubectl puts on a Job it creates from a CronJob (``kubectl create job --from=cronjob/...``).
INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"
# Ours, on each fresh Job: which CronJob template (UID/generation) it refreshes and which Jobs it replaces.
REFRESH_OF_ANNOTATION = "kube-maintenance.io/refresh-of"
REPLACES_ANNOTATION = "kube-maintenance.io/replaces"
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


def select_namespaces(namespaces: Iterable[Mapping[str, Any]], params: CronJobRefreshParams, protected: Iterable[str]) -> NamespaceSelection:
    """The namespaces a run covers, sorted. Explicit names that do not exist or are protected are a
    ParamError (a typo must not silently shrink the run); a selector simply never matches protected ones."""
    protected = set(protected)
    by_name = {ns["metadata"]["name"]: ns for ns in namespaces}
    if params.namespaces:
        unknown = [n for n in params.namespaces if n not in by_name]
        if unknown:
            raise ParamError(f"namespaces: no such namespace(s) in the cluster: {', '.join(unknown)}")
        refused = [n for n in params.namespaces if n in protected]
        if refused:
            raise ParamError(f"namespaces: {', '.join(refused)} protected (never touched by any operation); remove them")
        candidates = [by_name[n] for n in params.namespaces]
    else:
        candidates = list(by_name.values())
    matches = parse_label_selector(params.namespace_selector)
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for ns in candidates:
        name = ns["metadata"]["name"]
        if name in protected:
            skipped[name] = "protected"
        elif not matches(ns["metadata"].get("labels") or {}):
            skipped[name] = f"labels do not match {params.namespace_selector!r}"
        elif ns["metadata"].get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            skipped[name] = "being deleted"
        else:
            chosen.append(name)
    return NamespaceSelection(sorted(chosen), skipped)


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


def image_differences(job: Mapping[str, Any], template_images: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str | None]]:
    """(old, new): for each container of the Job whose image differs from the same-named container
    of the template, the image the Job runs and the template's (None: no such container any more)."""
    old: dict[str, str] = {}
    new: dict[str, str | None] = {}
    for name, image in job_images(job).items():
        wanted = template_images.get(name)
        if wanted != image:
            old[name] = image
            new[name] = wanted
    return old, new


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class StaleJob:
    namespace: str
    name: str
    uid: str
    resource_version: str  # as judged: the deletion's precondition
    created: str
    old_images: dict[str, str]
    new_images: dict[str, str | None]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class CronJobVerdict:
    """One CronJob and its active Jobs, judged."""

    namespace: str
    name: str
    uid: str
    generation: int
    suspended: bool
    images: dict[str, str]  # the current job template's, by container name
    stale: list[StaleJob] = field(default_factory=list)
    current: list[str] = field(default_factory=list)  # active Jobs on the template's images
    too_young: list[str] = field(default_factory=list)  # on an old image, but younger than min_job_age_minutes

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def jobs_to_delete(self) -> list[StaleJob]:
        """A suspended CronJob is reported and left alone: someone paused it on purpose."""
        return [] if self.suspended else list(self.stale)

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> "CronJobVerdict":
        fields = dict(data)
        fields["stale"] = [StaleJob(**j) for j in data.get("stale") or ()]
        return cls(**fields)


def judge_namespace(
    cronjobs: Iterable[Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]], params: CronJobRefreshParams, now: dt.datetime
) -> list[CronJobVerdict]:
    """Each CronJob of one namespace (matching the selector, not being deleted) with its active Jobs.

    A CronJob's Jobs are those whose controller ownerReference carries its UID: the CronJob
    controller's own and those made by ``kubectl create job --from`` alike (which ``status.active``
    does not list). Finished Jobs and Jobs being deleted are not active.
    """
    matches = parse_label_selector(params.cronjob_selector)
    by_owner: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs:
        owner = controller_uid(job)
        if owner and not is_job_finished(job) and not job["metadata"].get("deletionTimestamp"):
            by_owner.setdefault(owner, []).append(job)
    oldest_stale = now - dt.timedelta(minutes=params.min_job_age_minutes)
    verdicts = []
    for cronjob in sorted(cronjobs, key=lambda c: c["metadata"]["name"]):
        meta = cronjob["metadata"]
        if meta.get("deletionTimestamp") or not matches(meta.get("labels") or {}):
            continue
        verdict = CronJobVerdict(
            namespace=meta.get("namespace", ""),
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            suspended=bool((cronjob.get("spec") or {}).get("suspend")),
            images=cronjob_images(cronjob),
        )
        for job in sorted(by_owner.get(meta["uid"], ()), key=lambda j: j["metadata"]["name"]):
            jm = job["metadata"]
            old, new = image_differences(job, verdict.images)
            if not old:
                verdict.current.append(jm["name"])
                continue
            created = _time(jm.get("creationTimestamp"))
            if created is not None and created > oldest_stale:
                verdict.too_young.append(jm["name"])
                continue
            verdict.stale.append(
                StaleJob(jm.get("namespace", ""), jm["name"], jm["uid"], str(jm.get("resourceVersion", "")), jm.get("creationTimestamp", ""), old, new)
            )
        verdicts.append(verdict)
    return verdicts


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
