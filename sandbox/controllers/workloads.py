"""The apps/v1 workload controllers: ReplicaSet, Deployment, StatefulSet and DaemonSet.

Each follows kube-controller-manager's controller of the same name closely enough that kubectl
(``rollout status``, ``rollout restart``, ``rollout history`` / ``undo``) and client-go see what they
see on a real cluster: the same object names, labels, annotations, ownerReferences, status fields
and conditions.

Work per event stays proportional to the objects concerned: a controller finds its pods and
ReplicaSets through ownerReferences (``store.dependents``), adoption candidates through a small
per-namespace index of orphans, and a DaemonSet reacting to one node or one of its pods looks at
that node only (it keeps per-node contributions to its status and rolling update).

Writes made inside a sync are visible at once (the store is the informer cache here), so the real
controllers' "expectations" are unnecessary; where the real controller waits for them before a
second step (DaemonSet rolling update after creating pods), the next sync does that step.

Also here: apps/v1 defaulting and validation. The store runs defaulters on create only; the
validators default again (as the apiserver does on every write) before validating, so a PUT that
omits defaulted fields neither changes the pod template (and its hash) nor bumps the generation.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from .. import errors, podutil
from ..clock import parse_time
from ..errors import ApiError
from ..events import record_event
from ..resources import CONTROLLERREVISIONS, DAEMONSETS, DEPLOYMENTS, NODES, PODS, REPLICASETS, STATEFULSETS
from ..selectors import LabelSelector, labels_match, selector_from_object
from .base import Controller
from .nodes import pod_matches_node_selection, toleration_matches

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

# Labels and annotations the real controllers read and write.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
STATEFULSET_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
DAEMONSET_TEMPLATE_GENERATION_LABEL = "pod-template-generation"
DAEMONSET_TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"

# Deployment annotations never copied onto its ReplicaSets (deployment/util annotationsToSkip).
_ANNOTATIONS_NOT_COPIED = frozenset(
    {
        LAST_APPLIED_ANNOTATION,
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        ROLLBACK_TO_ANNOTATION,
    }
)
MAX_REVISION_HISTORY_CHARS = 2000

# Deployment condition reasons (deployment/util).
REASON_NEW_RS_CREATED = "NewReplicaSetCreated"
REASON_FOUND_NEW_RS = "FoundNewReplicaSet"
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_FAILED_RS_CREATE = "ReplicaSetCreateError"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

# How many pods one sync creates or deletes at most (the controllers' burstReplicas).
RS_BURST_REPLICAS = 500
DAEMONSET_BURST_REPLICAS = 250
# Failed daemon pods are replaced with a per-node backoff, as the DaemonSet controller does.
DAEMON_FAILED_BACKOFF_START = 1.0
DAEMON_FAILED_BACKOFF_MAX = 15 * 60.0
# A pod create that failed is tried again after this long (the real work queues rate-limit retries).
FAILED_WRITE_RETRY_SECONDS = 1.0

_ORDINAL_NAME = re.compile(r"^(.*)-([0-9]+)$")


# ----------------------------------------------------------------------------------- small helpers
def _nsname(obj: Obj) -> Key:
    m = obj["metadata"]
    return m.get("namespace", ""), m["name"]


def _uid(obj: Obj) -> str:
    return obj["metadata"]["uid"]


def _labels(obj: Obj | None) -> dict[str, str]:
    if obj is None:
        return {}
    return obj.get("metadata", {}).get("labels") or {}


def _annotations(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def _is_deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def _spec_replicas(obj: Obj) -> int:
    value = obj.get("spec", {}).get("replicas")
    return 1 if value is None else int(value)


def _status_int(obj: Obj | None, name: str) -> int:
    if obj is None:
        return 0
    return int((obj.get("status") or {}).get(name) or 0)


def _generation(obj: Obj) -> int:
    return int(obj["metadata"].get("generation") or 0)


def _creation_key(obj: Obj) -> tuple[str, str]:
    """Oldest first, then by name (controller.ReplicaSetsByCreationTimestamp and friends).

    RFC 3339 timestamps in one format sort as strings.
    """
    m = obj["metadata"]
    return m.get("creationTimestamp") or "", m["name"]


def _ref_of_kind(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    """The object's controller reference when it points at an apps/* object of ``kind``."""
    if obj is None:
        return None
    ref = podutil.controller_ref(obj)
    if ref is None or ref.get("kind") != kind or str(ref.get("apiVersion", "")).split("/")[0] != "apps":
        return None
    return ref


def _only_status_changed(old: Obj | None, new: Obj | None) -> bool:
    """True for a write that changed nothing but status (the controller's own status updates)."""
    if old is None or new is None or old.get("spec") != new.get("spec"):
        return False
    old_meta = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
    new_meta = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
    return old_meta == new_meta


def _without_zeros(status: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Drop zero and empty fields, as the API's ``omitempty`` serialisation does."""
    kept = set(keep)
    return {k: v for k, v in status.items() if k in kept or v not in (0, None, "", [], {})}


def _selector(obj: Obj) -> LabelSelector | None:
    return selector_from_object(obj.get("spec", {}).get("selector"))


def _selects_everything(obj: Obj) -> bool:
    """A missing or empty selector: the real controllers refuse to act on either."""
    sel = obj.get("spec", {}).get("selector")
    return not sel or (not sel.get("matchLabels") and not sel.get("matchExpressions"))


def _is_running_and_ready(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and podutil.is_ready(pod)


def _seconds_until_available(pod: Obj, min_ready_seconds: int, now: float) -> float | None:
    """For a Ready pod not yet available: seconds until minReadySeconds have passed."""
    since = podutil.ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    remaining = since + min_ready_seconds - now
    return remaining if remaining > 0 else None


def _round_half_away(value: float) -> int:
    """integer.RoundToInt32: math.Round, halves away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _strip_empty(value: Any) -> Any:
    """Semantic equality treats nil and empty maps/slices alike; JSON dicts need this spelled out."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            stripped = _strip_empty(v)
            if stripped not in (None, {}, []):
                out[k] = stripped
        return out
    if isinstance(value, list):
        return [_strip_empty(v) for v in value]
    return value


def _record(cluster: Any, obj: Obj, event_type: str, reason: str, message: str, component: str) -> None:
    record_event(cluster, obj, event_type, reason, message, component)


# ------------------------------------------------------------------------------ owned and orphans
def _owned(store: Any, type_key: str, owner: Obj) -> list[Obj]:
    """Objects of ``type_key`` that ``owner`` controls (found through the ownerReference index)."""
    owner_uid = _uid(owner)
    return [
        obj
        for key, obj in store.dependents(owner_uid)
        if key == type_key and (podutil.controller_ref(obj) or {}).get("uid") == owner_uid
    ]


class _Orphans:
    """Objects of one type that no controller owns, per namespace: the only adoption candidates.

    Orphans are rare (bare pods, dependents left behind by ``--cascade=orphan``), so scanning a
    namespace's orphans is cheap where scanning all its pods would not be. An owner scans them all
    once (when first synced); afterwards only orphans offered by events are considered.
    """

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, Obj]] = {}
        self._scanned: set[str] = set()  # owner uids that already looked at every orphan
        self._offered: dict[Key, set[str]] = {}  # owner key -> orphan names to consider

    @staticmethod
    def _is_orphan(obj: Obj | None) -> bool:
        return obj is not None and podutil.controller_ref(obj) is None and not _is_deleting(obj)

    def observe(self, event: str, old: Obj | None, new: Obj | None) -> Obj | None:
        """Track one change; returns the object when owners should be offered it now."""
        obj = new if new is not None else old
        assert obj is not None
        namespace, name = _nsname(obj)
        current = None if event == "DELETED" else new
        if not self._is_orphan(current):
            bucket = self._by_namespace.get(namespace)
            if bucket is not None:
                bucket.pop(name, None)
                if not bucket:
                    del self._by_namespace[namespace]
            return None
        assert current is not None
        self._by_namespace.setdefault(namespace, {})[name] = current
        # As the real informers do: offer on creation, when released, or when labels changed.
        if old is None or not self._is_orphan(old) or _labels(old) != _labels(current):
            return current
        return None

    def offer(self, owner_key: Key, name: str) -> None:
        self._offered.setdefault(owner_key, set()).add(name)

    def forget_owner(self, owner: Obj) -> None:
        self._scanned.discard(owner["metadata"].get("uid", ""))
        self._offered.pop(_nsname(owner), None)

    def candidates(self, owner: Obj) -> list[Obj]:
        namespace = owner["metadata"].get("namespace", "")
        offered = self._offered.pop(_nsname(owner), set())
        bucket = self._by_namespace.get(namespace, {})
        if _uid(owner) not in self._scanned:
            self._scanned.add(_uid(owner))
            return list(bucket.values())
        return [bucket[name] for name in offered if name in bucket]


def _adopt(store: Any, type_key: str, obj: Obj, owner: Obj) -> Obj | None:
    """Make ``owner`` the controller of an orphan, as ClaimObject's adoption patch does."""
    namespace, name = _nsname(obj)
    current = store.try_get(type_key, namespace, name)
    if current is None or podutil.controller_ref(current) is not None or _is_deleting(current):
        return None
    owner_uid = _uid(owner)

    def add(o: Obj) -> None:
        refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
        refs.append(podutil.owner_reference(owner))
        o["metadata"]["ownerReferences"] = refs

    return store.mutate(type_key, namespace, name, add)


def _release(store: Any, type_key: str, obj: Obj, owner: Obj) -> None:
    """Drop ``owner``'s reference from an object that no longer matches its selector."""
    owner_uid = _uid(owner)
    namespace, name = _nsname(obj)

    def drop(o: Obj) -> None:
        refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
        if refs:
            o["metadata"]["ownerReferences"] = refs
        else:
            o["metadata"].pop("ownerReferences", None)

    if store.try_get(type_key, namespace, name) is not None:
        store.mutate(type_key, namespace, name, drop)


def _claim(
    store: Any,
    type_key: str,
    owner: Obj,
    owned: list[Obj],
    orphans: Iterable[Obj],
    member: Callable[[Obj], bool] | None = None,
) -> list[Obj]:
    """ClaimObjects: keep owned objects that still match, release the others, adopt matching orphans."""
    selector = _selector(owner)
    owner_deleting = _is_deleting(owner)

    def matches(obj: Obj) -> bool:
        return labels_match(selector, _labels(obj)) and (member is None or member(obj))

    claimed = []
    for obj in owned:
        if matches(obj):
            claimed.append(obj)
        elif not owner_deleting and not _is_deleting(obj):
            _release(store, type_key, obj, owner)
    if not owner_deleting:
        for obj in orphans:
            if matches(obj):
                adopted = _adopt(store, type_key, obj, owner)
                if adopted is not None:
                    claimed.append(adopted)
    return claimed


def _offer_orphan(store: Any, orphans: _Orphans, owner_type: str, orphan: Obj, member: Callable[[Obj, Obj], bool] | None = None) -> list[Key]:
    """Owners in the orphan's namespace whose selector matches it (getPodReplicaSets and friends)."""
    namespace, name = _nsname(orphan)
    keys: list[Key] = []
    for owner in store.iter(owner_type, namespace):
        if _selects_everything(owner) or _is_deleting(owner):
            continue
        if labels_match(_selector(owner), _labels(orphan)) and (member is None or member(owner, orphan)):
            owner_key = _nsname(owner)
            orphans.offer(owner_key, name)
            keys.append(owner_key)
    return keys


# ====================================================================================== ReplicaSet
def _pod_deletion_rank(pods_per_node: dict[str, int]) -> Callable[[Obj], tuple[Any, ...]]:
    """Sort key putting the pods to delete first (controller.ActivePodsWithRanks)."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}

    def rank(pod: Obj) -> tuple[Any, ...]:
        node = pod.get("spec", {}).get("nodeName") or ""
        status = pod.get("status", {})
        ready_since = podutil.ready_since(pod)
        restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ())
        created = parse_time(pod["metadata"].get("creationTimestamp")) or 0.0
        return (
            1 if node else 0,  # unscheduled first
            phase_rank.get(status.get("phase") or "Pending", 0),  # pending < unknown < running
            1 if podutil.is_ready(pod) else 0,  # not ready first
            -pods_per_node.get(node, 0) if node else 0,  # doubled-up nodes first
            -(ready_since or 0.0),  # ready for less time first
            -restarts,  # more restarts first
            -created,  # newer first
            pod["metadata"]["name"],
        )

    return rank


class ReplicaSetController(Controller):
    """Keeps spec.replicas pods that match the selector, controlled by the ReplicaSet."""

    name = "replicaset"
    component = "replicaset-controller"
    watches = (REPLICASETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._orphans = _Orphans()

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == REPLICASETS:
            obj = new if new is not None else old
            assert obj is not None
            if event == "DELETED":
                self._orphans.forget_owner(obj)
                return ()
            if event == "MODIFIED" and _only_status_changed(old, new):
                return ()  # our own status write
            return [_nsname(obj)]
        keys: list[Hashable] = []
        for pod in (old, new):
            ref = _ref_of_kind(pod, "ReplicaSet")
            if ref is not None:
                keys.append((pod["metadata"]["namespace"], ref["name"]))  # type: ignore[index]
        orphan = self._orphans.observe(event, old, new)
        if orphan is not None:
            keys.extend(_offer_orphan(self.store, self._orphans, REPLICASETS, orphan))
        return keys

    def initial_keys(self) -> Iterable[Hashable]:
        return [_nsname(rs) for rs in self.store.iter(REPLICASETS)]

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        namespace, name = key
        rs = self.store.try_get(REPLICASETS, namespace, name)
        if rs is None or _selects_everything(rs):
            return
        pods = _claim(self.store, PODS, rs, _owned(self.store, PODS, rs), self._orphans.candidates(rs))
        failure: tuple[str, str] | None = None
        if not _is_deleting(rs):
            failure = self._manage_replicas(rs, [p for p in pods if podutil.is_active(p)])
            pods = _owned(self.store, PODS, rs)
            if failure is not None:
                self.enqueue_after(key, FAILED_WRITE_RETRY_SECONDS)  # the real one requeues rate-limited
        self._update_status(rs, pods, failure)

    def _manage_replicas(self, rs: Obj, active: list[Obj]) -> tuple[str, str] | None:
        """Create or delete pods toward spec.replicas; (reason, message) when a write failed."""
        namespace, name = _nsname(rs)
        diff = len(active) - _spec_replicas(rs)
        if diff < 0:
            wanted = min(-diff, RS_BURST_REPLICAS)
            for _ in range(wanted):
                pod = podutil.pod_from_template(rs["spec"].get("template") or {}, rs, generate_name=f"{name}-")
                try:
                    created = self.store.create(PODS, pod, namespace=namespace)
                except ApiError as exc:
                    _record(self.cluster, rs, "Warning", "FailedCreate", f"Error creating: {exc.message}", self.component)
                    return "FailedCreate", exc.message
                _record(self.cluster, rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", self.component)
            if -diff > wanted:
                self.enqueue((namespace, name))
        elif diff > 0:
            per_node: dict[str, int] = {}
            for pod in active:
                node = pod.get("spec", {}).get("nodeName")
                if node:
                    per_node[node] = per_node.get(node, 0) + 1
            victims = sorted(active, key=_pod_deletion_rank(per_node))[: min(diff, RS_BURST_REPLICAS)]
            for pod in victims:
                pod_name = pod["metadata"]["name"]
                try:
                    self.store.delete(PODS, namespace, pod_name)
                except ApiError as exc:
                    if exc.code == 404:
                        continue
                    _record(self.cluster, rs, "Warning", "FailedDelete", f"Error deleting: {exc.message}", self.component)
                    return "FailedDelete", exc.message
                _record(self.cluster, rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod_name}", self.component)
            if diff > len(victims):
                self.enqueue((namespace, name))
        return None

    def _update_status(self, rs: Obj, pods: list[Obj], failure: tuple[str, str] | None) -> None:
        now = self.clock.time()
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        active = [p for p in pods if podutil.is_active(p)]
        fully_labeled = sum(1 for p in active if all(_labels(p).get(k) == v for k, v in template_labels.items()))
        ready = [p for p in active if podutil.is_ready(p)]
        available = sum(1 for p in ready if podutil.is_available(p, min_ready, now))
        conditions = [dict(c) for c in (rs.get("status") or {}).get("conditions") or ()]
        has_failure = any(c.get("type") == "ReplicaFailure" for c in conditions)
        if failure is not None and not has_failure:
            conditions.append(
                {"type": "ReplicaFailure", "status": "True", "lastTransitionTime": self.clock.iso(), "reason": failure[0], "message": failure[1]}
            )
        elif failure is None and has_failure:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        status = _without_zeros(
            {
                "replicas": len(active),
                "fullyLabeledReplicas": fully_labeled,
                "readyReplicas": len(ready),
                "availableReplicas": available,
                "observedGeneration": _generation(rs),
                "conditions": conditions,
            },
            keep=("replicas",),
        )
        if status != rs.get("status"):
            namespace, name = _nsname(rs)

            def write(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(REPLICASETS, namespace, name, write, subresource="status")
        # Pods Ready but inside minReadySeconds become available later: look again then.
        waits = [w for p in ready if (w := _seconds_until_available(p, min_ready, now)) is not None]
        if waits:
            self.enqueue_after(_nsname(rs), min(waits) + 0.05)


# ====================================================================================== Deployment
def _max_surge(d: Obj) -> int:
    """MaxSurge: resolved against spec.replicas, rounding up; 0 unless RollingUpdate."""
    return _resolve_fenceposts(d)[0]


def _max_unavailable(d: Obj) -> int:
    """MaxUnavailable: resolved rounding down, never above spec.replicas; 0 unless RollingUpdate."""
    if not _is_rolling(d) or _spec_replicas(d) == 0:
        return 0
    return min(_resolve_fenceposts(d)[1], _spec_replicas(d))


def _is_rolling(d: Obj) -> bool:
    return ((d["spec"].get("strategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"


def _resolve_fenceposts(d: Obj) -> tuple[int, int]:
    """ResolveFenceposts: (surge, unavailable); both resolving to 0 gives unavailable 1."""
    if not _is_rolling(d):
        return 0, 0
    rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    desired = _spec_replicas(d)
    surge = podutil.int_or_percent(rolling.get("maxSurge", 0), desired, round_up=True)
    unavailable = podutil.int_or_percent(rolling.get("maxUnavailable", 0), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _has_progress_deadline(d: Obj) -> bool:
    deadline = d["spec"].get("progressDeadlineSeconds")
    return deadline is not None and int(deadline) != 2**31 - 1


def _revision(obj: Obj) -> int:
    try:
        return int(_annotations(obj).get(REVISION_ANNOTATION, "0") or 0)
    except ValueError:
        return 0


def _template_without_hash(template: dict[str, Any]) -> Any:
    tmpl = copy.deepcopy(template or {})
    labels = (tmpl.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return _strip_empty(tmpl)


def _equal_ignore_hash(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """controller.EqualIgnoreHash: pod templates equal but for the pod-template-hash label."""
    return bool(_template_without_hash(a) == _template_without_hash(b))


def _deployment_condition(cond_type: str, status: str, reason: str, message: str, now_iso: str) -> dict[str, Any]:
    return {
        "type": cond_type,
        "status": status,
        "lastUpdateTime": now_iso,
        "lastTransitionTime": now_iso,
        "reason": reason,
        "message": message,
    }


def _get_condition(status: dict[str, Any], cond_type: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == cond_type:
            return cond
    return None


def _set_deployment_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    """SetDeploymentCondition: no-op for the same status and reason; otherwise replace (moved last),
    keeping lastTransitionTime when the status is unchanged."""
    current = _get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] and current.get("reason") == cond["reason"]:
        return
    new = dict(cond)
    if current is not None and current.get("status") == cond["status"]:
        new["lastTransitionTime"] = current.get("lastTransitionTime", new["lastTransitionTime"])
    _remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(new)


def _remove_condition(status: dict[str, Any], cond_type: str) -> None:
    conds = [c for c in status.get("conditions") or () if c.get("type") != cond_type]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def _sum_spec(rss: Iterable[Obj | None]) -> int:
    return sum(_spec_replicas(rs) for rs in rss if rs is not None)


def _sum_status(rss: Iterable[Obj | None], name: str) -> int:
    return sum(_status_int(rs, name) for rs in rss if rs is not None)


def _believed_available(rs: Obj) -> int:
    """An RS's available pods for scaling decisions.

    Until its controller has seen a scale-down (observedGeneration behind), its status may still
    count pods about to go; never believe more than spec.replicas then.
    """
    available = _status_int(rs, "availableReplicas")
    if _status_int(rs, "observedGeneration") < _generation(rs):
        available = min(available, _spec_replicas(rs))
    return available


@dataclass
class _DeploymentSync:
    """One reconcile of a Deployment: a working copy whose status and annotations are edited in
    place and written at the end, and its ReplicaSets, refreshed after every write."""

    d: Obj
    replica_sets: dict[str, Obj]
    new_name: str | None = None
    rollout: bool = False  # a rollout path ran (progress estimation, stuck requeue)

    @property
    def new_rs(self) -> Obj | None:
        return self.replica_sets.get(self.new_name) if self.new_name else None

    @property
    def old_rss(self) -> list[Obj]:
        return sorted((rs for n, rs in self.replica_sets.items() if n != self.new_name), key=_creation_key)

    @property
    def all_rss(self) -> list[Obj]:
        new = self.new_rs
        return self.old_rss + ([new] if new is not None else [])

    @property
    def status(self) -> dict[str, Any]:
        return self.d.setdefault("status", {})


class DeploymentController(Controller):
    """Rolls a Deployment's pod template out through ReplicaSets named ``<name>-<pod-template-hash>``."""

    name = "deployment"
    component = "deployment-controller"
    watches = (DEPLOYMENTS, REPLICASETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._orphans = _Orphans()  # ReplicaSets no Deployment controls

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        obj = new if new is not None else old
        assert obj is not None
        if type_key == DEPLOYMENTS:
            if event == "DELETED":
                self._orphans.forget_owner(obj)
                return ()
            return [_nsname(obj)]
        if type_key == REPLICASETS:
            keys: list[Hashable] = []
            for rs in (old, new):
                ref = _ref_of_kind(rs, "Deployment")
                if ref is not None:
                    keys.append((obj["metadata"]["namespace"], ref["name"]))
            orphan = self._orphans.observe(event, old, new)
            if orphan is not None:
                keys.extend(_offer_orphan(self.store, self._orphans, DEPLOYMENTS, orphan))
            return keys
        # Pods: a Recreate rollout waits for the old pods to be gone (or terminal) before it
        # scales the new ReplicaSet up, so it must hear about them going.
        gone = event == "DELETED" or (new is not None and podutil.is_terminal(new) and not (old and podutil.is_terminal(old)))
        if not gone:
            return ()
        ref = _ref_of_kind(obj, "ReplicaSet")
        if ref is None:
            return ()
        namespace = obj["metadata"]["namespace"]
        rs = self.store.try_get(REPLICASETS, namespace, ref["name"])
        owner_ref = _ref_of_kind(rs, "Deployment")
        if owner_ref is None:
            return ()
        d = self.store.try_get(DEPLOYMENTS, namespace, owner_ref["name"])
        if d is not None and not _is_rolling(d):
            return [(namespace, owner_ref["name"])]
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        return [_nsname(d) for d in self.store.iter(DEPLOYMENTS)]

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        namespace, name = key
        stored = self.store.try_get(DEPLOYMENTS, namespace, name)
        if stored is None:
            return
        d = copy.deepcopy(stored)
        if _selects_everything(d):
            # Selecting every pod is refused (the real controller only records SelectingAll).
            if _status_int(d, "observedGeneration") < _generation(d):
                d.setdefault("status", {})["observedGeneration"] = _generation(d)
                self._write(stored, _DeploymentSync(d, {}))
            return
        owned = _owned(self.store, REPLICASETS, stored)
        replica_sets = _claim(self.store, REPLICASETS, stored, owned, self._orphans.candidates(stored))
        ctx = _DeploymentSync(d, {rs["metadata"]["name"]: rs for rs in replica_sets})
        if _is_deleting(d):
            self._sync_revision(ctx, create=False)
            self._sync_status(ctx)
        else:
            self._check_paused_conditions(ctx)
            if d["spec"].get("paused"):
                self._sync_scaling(ctx)
            elif self._is_scaling_event(ctx):
                self._sync_scaling(ctx)
            elif _is_rolling(d):
                self._rollout_rolling(ctx)
            else:
                self._rollout_recreate(ctx)
        self._write(stored, ctx)

    def _write(self, stored: Obj, ctx: _DeploymentSync) -> None:
        """Write annotations (main resource) and status (subresource) when they changed."""
        namespace, name = _nsname(stored)
        annotations = ctx.d["metadata"].get("annotations")
        if annotations != stored["metadata"].get("annotations"):

            def annotate(obj: Obj) -> None:
                if annotations:
                    obj["metadata"]["annotations"] = annotations
                else:
                    obj["metadata"].pop("annotations", None)

            self.store.mutate(DEPLOYMENTS, namespace, name, annotate)
        status = ctx.d.get("status") or {}
        if status != (stored.get("status") or {}):

            def write(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(DEPLOYMENTS, namespace, name, write, subresource="status")
        elif ctx.rollout:
            self._requeue_stuck(ctx)

    # ------------------------------------------------------------------------ new and old RSs
    def _sync_revision(self, ctx: _DeploymentSync, create: bool) -> None:
        """getAllReplicaSetsAndSyncRevision: find (or create) the new RS and sync revisions."""
        d = ctx.d
        template = d["spec"].get("template") or {}
        ordered = sorted(ctx.replica_sets.values(), key=_creation_key)
        new = next((rs for rs in ordered if _equal_ignore_hash(rs["spec"].get("template") or {}, template)), None)
        old = [rs for rs in ordered if rs is not new]
        new_revision = str(max((_revision(rs) for rs in old), default=0) + 1)
        if new is not None:
            ctx.new_name = new["metadata"]["name"]
            rs_copy = copy.deepcopy(new)
            changed = self._set_new_rs_annotations(d, rs_copy, new_revision, exists=True)
            min_ready = d["spec"].get("minReadySeconds") or 0
            if changed or (rs_copy["spec"].get("minReadySeconds") or 0) != min_ready:
                rs_copy["spec"]["minReadySeconds"] = min_ready
                ns, rs_name = _nsname(rs_copy)
                annotations, spec_min_ready = rs_copy["metadata"].get("annotations"), min_ready

                def update(obj: Obj) -> None:
                    obj["metadata"]["annotations"] = annotations
                    if spec_min_ready:
                        obj["spec"]["minReadySeconds"] = spec_min_ready
                    else:
                        obj["spec"].pop("minReadySeconds", None)

                new = ctx.replica_sets[rs_name] = self.store.mutate(REPLICASETS, ns, rs_name, update)
            self._set_deployment_revision(d, _annotations(new).get(REVISION_ANNOTATION, ""))
            if _has_progress_deadline(d) and _get_condition(ctx.status, "Progressing") is None:
                message = f'Found new replica set "{new["metadata"]["name"]}"'
                _set_deployment_condition(
                    ctx.status, _deployment_condition("Progressing", "True", REASON_FOUND_NEW_RS, message, self.clock.iso())
                )
            return
        ctx.new_name = None
        if create:
            self._create_new_rs(ctx, new_revision)

    def _create_new_rs(self, ctx: _DeploymentSync, new_revision: str) -> None:
        d = ctx.d
        namespace, name = _nsname(d)
        template = copy.deepcopy(d["spec"].get("template") or {})
        collision_count = int(ctx.status.get("collisionCount") or 0)
        pod_template_hash = podutil.template_hash(template, collision_count)
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels[POD_TEMPLATE_HASH_LABEL] = pod_template_hash
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(d["spec"].get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH_LABEL] = pod_template_hash
        rs_spec: dict[str, Any] = {"replicas": 0, "selector": selector, "template": template}
        if d["spec"].get("minReadySeconds"):
            rs_spec["minReadySeconds"] = d["spec"]["minReadySeconds"]
        new_rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                # Deterministic, so a repeated sync finds it instead of creating another.
                "name": f"{name}-{pod_template_hash}",
                "namespace": namespace,
                "labels": dict(labels),
                "ownerReferences": [podutil.owner_reference(d)],
            },
            "spec": rs_spec,
        }
        replicas = self._new_rs_new_replicas(d, ctx.all_rss + [new_rs], new_rs)
        new_rs["spec"]["replicas"] = replicas
        self._set_new_rs_annotations(d, new_rs, new_revision, exists=False)
        already_exists = False
        try:
            created = self.store.create(REPLICASETS, new_rs, namespace=namespace)
        except ApiError as exc:
            if exc.reason == "AlreadyExists":
                existing = self.store.get(REPLICASETS, namespace, new_rs["metadata"]["name"])
                if podutil.is_owned_by(existing, d) and _equal_ignore_hash(existing["spec"].get("template") or {}, d["spec"].get("template") or {}):
                    created, already_exists = existing, True
                else:
                    # A hash collision: another template owns that name. Bump collisionCount so
                    # the next sync hashes differently.
                    ctx.status["collisionCount"] = collision_count + 1
                    self.enqueue(_nsname(d))
                    return
            else:
                message = f'Failed to create new replica set "{new_rs["metadata"]["name"]}": {exc.message}'
                if _has_progress_deadline(d):
                    _set_deployment_condition(
                        ctx.status, _deployment_condition("Progressing", "False", REASON_FAILED_RS_CREATE, message, self.clock.iso())
                    )
                _record(self.cluster, d, "Warning", REASON_FAILED_RS_CREATE, message, self.component)
                return
        rs_name = created["metadata"]["name"]
        ctx.replica_sets[rs_name] = created
        ctx.new_name = rs_name
        if not already_exists and replicas > 0:
            _record(self.cluster, d, "Normal", "ScalingReplicaSet", f"Scaled up replica set {rs_name} from 0 to {replicas}", self.component)
        self._set_deployment_revision(d, new_revision)
        if not already_exists and _has_progress_deadline(d):
            _set_deployment_condition(
                ctx.status,
                _deployment_condition("Progressing", "True", REASON_NEW_RS_CREATED, f'Created new replica set "{rs_name}"', self.clock.iso()),
            )

    @staticmethod
    def _set_deployment_revision(d: Obj, revision: str) -> None:
        annotations = d["metadata"].setdefault("annotations", {})
        if annotations.get(REVISION_ANNOTATION) != revision:
            annotations[REVISION_ANNOTATION] = revision

    @staticmethod
    def _set_replicas_annotations(rs: Obj, desired: int, max_replicas: int) -> bool:
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for key, value in ((DESIRED_REPLICAS_ANNOTATION, str(desired)), (MAX_REPLICAS_ANNOTATION, str(max_replicas))):
            if annotations.get(key) != value:
                annotations[key] = value
                changed = True
        return changed

    def _set_new_rs_annotations(self, d: Obj, rs: Obj, new_revision: str, exists: bool) -> bool:
        """SetNewReplicaSetAnnotations: copy the Deployment's annotations, raise the revision
        (keeping the previous one in revision-history on a rollback), and on creation the
        desired/max replicas annotations."""
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for key, value in _annotations(d).items():
            if key in _ANNOTATIONS_NOT_COPIED or annotations.get(key) == value:
                continue
            annotations[key] = value
            changed = True
        old_revision = annotations.get(REVISION_ANNOTATION)
        try:
            old_revision_number = int(old_revision) if old_revision else 0
        except ValueError:
            return changed
        if old_revision_number < int(new_revision):
            annotations[REVISION_ANNOTATION] = new_revision
            changed = True
            if old_revision:
                history = annotations.get(REVISION_HISTORY_ANNOTATION, "")
                entries = [e for e in history.split(",") if e] + [old_revision]
                while entries and len(",".join(entries)) > MAX_REVISION_HISTORY_CHARS:
                    entries.pop(0)
                if entries:
                    annotations[REVISION_HISTORY_ANNOTATION] = ",".join(entries)
        if not exists:
            desired = _spec_replicas(d)
            if self._set_replicas_annotations(rs, desired, desired + _max_surge(d)):
                changed = True
        return changed

    @staticmethod
    def _new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
        """NewRSNewReplicas: how far the new RS may grow now."""
        desired = _spec_replicas(d)
        if not _is_rolling(d):
            return desired
        max_total = desired + _max_surge(d)
        current = _sum_spec(all_rss)
        if current >= max_total:
            return _spec_replicas(new_rs)
        scale_up = min(max_total - current, desired - _spec_replicas(new_rs))
        return _spec_replicas(new_rs) + scale_up

    # --------------------------------------------------------------------------------- scaling
    def _scale_rs(self, ctx: _DeploymentSync, rs: Obj, new_scale: int, operation: str | None = None) -> bool:
        """scaleReplicaSet: set replicas and the replicas annotations; True when the size changed."""
        d = ctx.d
        old_scale = _spec_replicas(rs)
        size_changed = old_scale != new_scale
        desired = _spec_replicas(d)
        max_replicas = desired + _max_surge(d)
        probe = copy.deepcopy(rs)
        annotations_changed = self._set_replicas_annotations(probe, desired, max_replicas)
        if not size_changed and not annotations_changed:
            return False
        namespace, name = _nsname(rs)

        def scale(obj: Obj) -> None:
            obj["spec"]["replicas"] = new_scale
            self._set_replicas_annotations(obj, desired, max_replicas)

        ctx.replica_sets[name] = self.store.mutate(REPLICASETS, namespace, name, scale)
        if size_changed:
            operation = operation or ("up" if new_scale > old_scale else "down")
            message = f"Scaled {operation} replica set {name} from {old_scale} to {new_scale}"
            _record(self.cluster, d, "Normal", "ScalingReplicaSet", message, self.component)
        return size_changed

    def _is_scaling_event(self, ctx: _DeploymentSync) -> bool:
        """True when an active RS was sized for a different spec.replicas (a plain scale)."""
        self._sync_revision(ctx, create=False)
        if ctx.new_rs is None:
            return False
        desired = _spec_replicas(ctx.d)
        for rs in ctx.all_rss:
            if _spec_replicas(rs) <= 0:
                continue
            annotated = _annotations(rs).get(DESIRED_REPLICAS_ANNOTATION)
            if annotated is None:
                continue
            try:
                if int(annotated) != desired:
                    return True
            except ValueError:
                continue
        return False

    def _sync_scaling(self, ctx: _DeploymentSync) -> None:
        """sync(): scale (proportionally while a rollout is in flight), clean up when paused, status."""
        self._sync_revision(ctx, create=False)
        self._scale(ctx)
        if ctx.d["spec"].get("paused"):
            self._cleanup(ctx)
        self._sync_status(ctx)

    def _scale(self, ctx: _DeploymentSync) -> None:
        d = ctx.d
        desired = _spec_replicas(d)
        new = ctx.new_rs
        old = ctx.old_rss
        active = [rs for rs in ctx.all_rss if _spec_replicas(rs) > 0]
        # One active RS (or none): it simply gets the full count.
        if new is not None or old:
            target: Obj | None = None
            if len(active) == 1:
                target = active[0]
            elif not active:
                target = new if new is not None else sorted(old, key=_creation_key)[-1]
            if target is not None:
                if _spec_replicas(target) != desired:
                    self._scale_rs(ctx, target, desired)
                return
        # The new RS saturated: old ones go to zero.
        if new is not None and self._is_saturated(d, new):
            for rs in old:
                if _spec_replicas(rs) > 0:
                    self._scale_rs(ctx, rs, 0)
            return
        if not _is_rolling(d):
            return
        # Proportional scaling: spread the difference over the active RSs by their size.
        allowed = desired + _max_surge(d) if desired > 0 else 0
        to_add = allowed - _sum_spec(active)
        # Largest first; among equals, newer first when adding and older first when removing
        # (ReplicaSetsBySizeNewer / ReplicaSetsBySizeOlder). Two stable sorts do that.
        if to_add > 0:
            active.sort(key=_creation_key, reverse=True)
            active.sort(key=lambda rs: -_spec_replicas(rs))
            operation = "up"
        elif to_add < 0:
            active.sort(key=_creation_key)
            active.sort(key=lambda rs: -_spec_replicas(rs))
            operation = "down"
        else:
            operation = ""
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            name = rs["metadata"]["name"]
            if to_add != 0:
                proportion = self._proportion(rs, d, to_add, added)
                sizes[name] = _spec_replicas(rs) + proportion
                added += proportion
            else:
                sizes[name] = _spec_replicas(rs)
        for index, rs in enumerate(active):
            name = rs["metadata"]["name"]
            if index == 0 and to_add != 0:
                sizes[name] = max(0, sizes[name] + to_add - added)  # leftovers to the largest
            self._scale_rs(ctx, ctx.replica_sets[name], sizes[name], operation or None)

    @staticmethod
    def _is_saturated(d: Obj, rs: Obj) -> bool:
        desired = _spec_replicas(d)
        annotated = _annotations(rs).get(DESIRED_REPLICAS_ANNOTATION)
        return _spec_replicas(rs) == desired and annotated == str(desired) and _status_int(rs, "availableReplicas") == desired

    @staticmethod
    def _proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
        """GetProportion: this RS's share of the replicas being added or removed."""
        size = _spec_replicas(rs)
        if size == 0 or to_add == 0 or to_add == added:
            return 0
        if _spec_replicas(d) == 0:
            fraction = -size
        else:
            max_now = _spec_replicas(d) + _max_surge(d)
            try:
                max_before = int(_annotations(rs).get(MAX_REPLICAS_ANNOTATION, "0"))
            except ValueError:
                max_before = 0
            if max_before == 0:
                max_before = _status_int(d, "replicas")
                if max_before == 0:
                    return 0
            fraction = _round_half_away(size * max_now / max_before) - size
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    # -------------------------------------------------------------------------------- rollouts
    def _rollout_rolling(self, ctx: _DeploymentSync) -> None:
        ctx.rollout = True
        self._sync_revision(ctx, create=True)
        if ctx.new_rs is None:
            self._sync_rollout_status(ctx)
            return
        if self._reconcile_new_rs(ctx) or self._reconcile_old_rss(ctx):
            self._sync_rollout_status(ctx)
            return
        if self._complete(ctx.d, ctx.status):
            self._cleanup(ctx)
        self._sync_rollout_status(ctx)

    def _reconcile_new_rs(self, ctx: _DeploymentSync) -> bool:
        d, new = ctx.d, ctx.new_rs
        assert new is not None
        desired = _spec_replicas(d)
        if _spec_replicas(new) == desired:
            return False
        if _spec_replicas(new) > desired:
            return self._scale_rs(ctx, new, desired)
        return self._scale_rs(ctx, new, self._new_rs_new_replicas(d, ctx.all_rss, new))

    def _reconcile_old_rss(self, ctx: _DeploymentSync) -> bool:
        d, new = ctx.d, ctx.new_rs
        assert new is not None
        old = ctx.old_rss
        if _sum_spec(old) == 0:
            return False
        min_available = _spec_replicas(d) - _max_unavailable(d)
        new_unavailable = _spec_replicas(new) - _believed_available(new)
        max_scaled_down = _sum_spec(ctx.all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        # Unhealthy old replicas go first, or they would block the rollout.
        cleaned = 0
        for rs in sorted(old, key=_creation_key):
            if cleaned >= max_scaled_down:
                break
            size = _spec_replicas(rs)
            unhealthy = size - _believed_available(rs)
            if size == 0 or unhealthy <= 0:
                continue
            step = min(max_scaled_down - cleaned, unhealthy)
            self._scale_rs(ctx, rs, size - step)
            cleaned += step
        # Then healthy ones, as far as maxUnavailable allows.
        scaled = 0
        available = sum(_believed_available(rs) for rs in ctx.all_rss)
        if available > min_available:
            budget = available - min_available
            for rs in ctx.old_rss:
                if scaled >= budget:
                    break
                size = _spec_replicas(rs)
                if size == 0:
                    continue
                step = min(size, budget - scaled)
                self._scale_rs(ctx, rs, size - step)
                scaled += step
        return cleaned + scaled > 0

    def _rollout_recreate(self, ctx: _DeploymentSync) -> None:
        """Recreate: old RSs to zero, wait until their pods are gone, then the new RS to full size."""
        ctx.rollout = True
        self._sync_revision(ctx, create=False)
        scaled_down = False
        for rs in ctx.old_rss:
            if _spec_replicas(rs) > 0 and self._scale_rs(ctx, rs, 0):
                scaled_down = True
        if scaled_down or self._old_pods_running(ctx):
            self._sync_rollout_status(ctx)
            return
        if ctx.new_rs is None:
            self._sync_revision(ctx, create=True)
        new = ctx.new_rs
        if new is not None and _spec_replicas(new) != _spec_replicas(ctx.d):
            self._scale_rs(ctx, new, _spec_replicas(ctx.d))
        if self._complete(ctx.d, ctx.status):
            self._cleanup(ctx)
        self._sync_rollout_status(ctx)

    def _old_pods_running(self, ctx: _DeploymentSync) -> bool:
        if _sum_status(ctx.old_rss, "replicas") > 0:
            return True
        for rs in ctx.old_rss:
            for pod in _owned(self.store, PODS, rs):
                if not podutil.is_terminal(pod):
                    return True  # running, pending, unknown or still terminating
        return False

    def _cleanup(self, ctx: _DeploymentSync) -> None:
        """cleanupDeployment: delete the oldest idle old RSs beyond revisionHistoryLimit."""
        limit = ctx.d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [rs for rs in ctx.old_rss if not _is_deleting(rs)]
        excess = len(cleanable) - int(limit)
        if excess <= 0:
            return
        cleanable.sort(key=lambda rs: (_revision(rs), _creation_key(rs)))
        for rs in cleanable[:excess]:
            if (
                _status_int(rs, "replicas") != 0
                or _spec_replicas(rs) != 0
                or _generation(rs) > _status_int(rs, "observedGeneration")
            ):
                continue
            namespace, name = _nsname(rs)
            try:
                self.store.delete(REPLICASETS, namespace, name)
            except ApiError as exc:
                if exc.code != 404:
                    raise
            ctx.replica_sets.pop(name, None)

    # ---------------------------------------------------------------------------------- status
    def _calculate_status(self, ctx: _DeploymentSync) -> dict[str, Any]:
        d = ctx.d
        all_rss = ctx.all_rss
        available = _sum_status(all_rss, "availableReplicas")
        total = _sum_spec(all_rss)
        status: dict[str, Any] = {
            "observedGeneration": _generation(d),
            "replicas": _sum_status(all_rss, "replicas"),
            "updatedReplicas": _status_int(ctx.new_rs, "replicas"),
            "readyReplicas": _sum_status(all_rss, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
        }
        if ctx.status.get("conditions"):
            status["conditions"] = [dict(c) for c in ctx.status["conditions"]]
        if ctx.status.get("collisionCount") is not None:
            status["collisionCount"] = ctx.status["collisionCount"]
        now_iso = self.clock.iso()
        if available >= _spec_replicas(d) - _max_unavailable(d):
            cond = _deployment_condition("Available", "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", now_iso)
        else:
            cond = _deployment_condition("Available", "False", REASON_MIN_UNAVAILABLE, "Deployment does not have minimum availability.", now_iso)
        _set_deployment_condition(status, cond)
        return status

    def _sync_status(self, ctx: _DeploymentSync) -> None:
        """syncDeploymentStatus: counts and Available; Progressing left as it is."""
        ctx.d["status"] = _without_zeros(self._calculate_status(ctx), keep=("collisionCount",))

    def _sync_rollout_status(self, ctx: _DeploymentSync) -> None:
        """syncRolloutStatus: counts, Available, and Progressing estimated against the deadline."""
        d = ctx.d
        previous = ctx.status
        status = self._calculate_status(ctx)
        if not _has_progress_deadline(d):
            _remove_condition(status, "Progressing")
        current = _get_condition(previous, "Progressing")
        complete_before = (
            status["replicas"] == status["updatedReplicas"] and current is not None and current.get("reason") == REASON_NEW_RS_AVAILABLE
        )
        new = ctx.new_rs
        now_iso = self.clock.iso()
        if _has_progress_deadline(d) and not complete_before:
            # Messages name the new ReplicaSet, or the Deployment when there is none.
            subject = f'ReplicaSet "{new["metadata"]["name"]}"' if new else f'Deployment "{d["metadata"]["name"]}"'
            if self._complete(d, status):
                message = f"{subject} has successfully progressed."
                _set_deployment_condition(status, _deployment_condition("Progressing", "True", REASON_NEW_RS_AVAILABLE, message, now_iso))
            elif self._progressing(previous, status):
                cond = _deployment_condition("Progressing", "True", REASON_RS_UPDATED, f"{subject} is progressing.", now_iso)
                # Progress moves lastUpdateTime even when the reason stays the same.
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime", now_iso)
                    _remove_condition(status, "Progressing")
                _set_deployment_condition(status, cond)
            elif self._timed_out(d, status):
                message = f"{subject} has timed out progressing."
                _set_deployment_condition(status, _deployment_condition("Progressing", "False", REASON_TIMED_OUT, message, now_iso))
        failures = self._replica_failures(ctx)
        if failures:
            _set_deployment_condition(status, failures[0])
        else:
            _remove_condition(status, "ReplicaFailure")
        ctx.d["status"] = _without_zeros(status, keep=("collisionCount",))

    @staticmethod
    def _complete(d: Obj, status: dict[str, Any]) -> bool:
        desired = _spec_replicas(d)
        return (
            int(status.get("updatedReplicas") or 0) == desired
            and int(status.get("replicas") or 0) == desired
            and int(status.get("availableReplicas") or 0) == desired
            and int(status.get("observedGeneration") or 0) >= _generation(d)
        )

    @staticmethod
    def _progressing(old: dict[str, Any], new: dict[str, Any]) -> bool:
        def get(status: dict[str, Any], name: str) -> int:
            return int(status.get(name) or 0)

        old_old = get(old, "replicas") - get(old, "updatedReplicas")
        new_old = get(new, "replicas") - get(new, "updatedReplicas")
        return (
            get(new, "updatedReplicas") > get(old, "updatedReplicas")
            or new_old < old_old
            or get(new, "readyReplicas") > get(old, "readyReplicas")
            or get(new, "availableReplicas") > get(old, "availableReplicas")
        )

    def _timed_out(self, d: Obj, status: dict[str, Any]) -> bool:
        cond = _get_condition(status, "Progressing")
        if cond is None or cond.get("reason") in (REASON_NEW_RS_AVAILABLE, REASON_TIMED_OUT):
            return False
        since = parse_time(cond.get("lastUpdateTime"))
        if since is None:
            return False
        return since + int(d["spec"]["progressDeadlineSeconds"]) < self.clock.time()

    def _requeue_stuck(self, ctx: _DeploymentSync) -> None:
        """Look again when the progress deadline would pass (requeueStuckDeployment)."""
        d = ctx.d
        cond = _get_condition(ctx.status, "Progressing")
        if not _has_progress_deadline(d) or cond is None:
            return
        if self._complete(d, ctx.status) or cond.get("reason") == REASON_TIMED_OUT:
            return
        since = parse_time(cond.get("lastUpdateTime"))
        if since is None:
            return
        after = since + int(d["spec"]["progressDeadlineSeconds"]) - self.clock.time()
        self.enqueue_after(_nsname(d), max(0.0, after) + 0.1)

    @staticmethod
    def _replica_failures(ctx: _DeploymentSync) -> list[dict[str, Any]]:
        """ReplicaFailure conditions of the new RS (else of any RS) as Deployment conditions."""
        sources = [ctx.new_rs] if ctx.new_rs is not None else []
        for group in (sources, ctx.all_rss):
            out = []
            for rs in group:
                for cond in (rs.get("status") or {}).get("conditions") or ():
                    if cond.get("type") == "ReplicaFailure":
                        out.append(
                            {
                                "type": "ReplicaFailure",
                                "status": cond.get("status"),
                                "lastUpdateTime": cond.get("lastTransitionTime"),
                                "lastTransitionTime": cond.get("lastTransitionTime"),
                                "reason": cond.get("reason"),
                                "message": cond.get("message"),
                            }
                        )
            if out:
                return out
        return []

    def _check_paused_conditions(self, ctx: _DeploymentSync) -> None:
        """Progressing Unknown DeploymentPaused / DeploymentResumed as the spec is (un)paused."""
        d = ctx.d
        if not _has_progress_deadline(d):
            return
        cond = _get_condition(ctx.status, "Progressing")
        if cond is not None and cond.get("reason") == REASON_TIMED_OUT:
            return  # a reported lack of progress is not overwritten by a pause
        paused_recorded = cond is not None and cond.get("reason") == REASON_PAUSED
        now_iso = self.clock.iso()
        if d["spec"].get("paused") and not paused_recorded:
            _set_deployment_condition(ctx.status, _deployment_condition("Progressing", "Unknown", REASON_PAUSED, "Deployment is paused", now_iso))
        elif not d["spec"].get("paused") and paused_recorded:
            _set_deployment_condition(ctx.status, _deployment_condition("Progressing", "Unknown", REASON_RESUMED, "Deployment is resumed", now_iso))


# =============================================================================== ControllerRevision
def _revision_data(template: dict[str, Any]) -> dict[str, Any]:
    """What StatefulSet and DaemonSet revisions hold: a strategic merge patch replacing the template
    (getPatch), which ``kubectl rollout undo`` applies as it is."""
    replaced = copy.deepcopy(template or {})
    replaced["$patch"] = "replace"
    return {"spec": {"template": replaced}}


def _template_of(revision: Obj) -> dict[str, Any]:
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def _revision_number(revision: Obj) -> int:
    return int(revision.get("revision") or 0)


def _sorted_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    """history.SortControllerRevisions: by revision number, then age, then name."""
    return sorted(revisions, key=lambda r: (_revision_number(r), _creation_key(r)))


def _create_revision(store: Any, owner: Obj, data: dict[str, Any], number: int, hash_source: Any, collision_count: int) -> tuple[Obj, int]:
    """Create ``<owner>-<hash>``; when that name holds other data, count a collision and rehash
    (history.CreateControllerRevision). Returns the revision and the collision count used."""
    namespace, owner_name = _nsname(owner)
    template_labels = ((owner["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    while True:
        digest = podutil.template_hash(hash_source, collision_count)
        metadata: dict[str, Any] = {
            "name": f"{owner_name}-{digest}",
            "namespace": namespace,
            "labels": {**template_labels, CONTROLLER_REVISION_HASH_LABEL: digest},
            "ownerReferences": [podutil.owner_reference(owner)],
        }
        if _annotations(owner):
            metadata["annotations"] = dict(_annotations(owner))
        revision = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": metadata, "data": data, "revision": number}
        try:
            return store.create(CONTROLLERREVISIONS, revision, namespace=namespace), collision_count
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
        existing = store.get(CONTROLLERREVISIONS, namespace, metadata["name"])
        if existing.get("data") == data:
            if podutil.controller_ref(existing) is None:
                existing = _adopt(store, CONTROLLERREVISIONS, existing, owner) or existing
            if podutil.is_owned_by(existing, owner):
                return existing, collision_count
        collision_count += 1


def _set_revision_number(store: Any, revision: Obj, number: int) -> Obj:
    namespace, name = _nsname(revision)

    def renumber(obj: Obj) -> None:
        obj["revision"] = number

    return store.mutate(CONTROLLERREVISIONS, namespace, name, renumber)


# ===================================================================================== StatefulSet
def _parent_and_ordinal(pod: Obj) -> tuple[str | None, int]:
    match = _ORDINAL_NAME.match(pod["metadata"]["name"])
    if match is None:
        return None, -1
    return match.group(1), int(match.group(2))


def _pod_revision(pod: Obj) -> str:
    return _labels(pod).get(CONTROLLER_REVISION_HASH_LABEL, "")


class StatefulSetController(Controller):
    """Pods ``<name>-<ordinal>`` with stable identity, created and updated in ordinal order."""

    name = "statefulset"
    component = "statefulset-controller"
    watches = (STATEFULSETS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._orphans = _Orphans()

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        obj = new if new is not None else old
        assert obj is not None
        if type_key == STATEFULSETS:
            if event == "DELETED":
                self._orphans.forget_owner(obj)
                return ()
            if event == "MODIFIED" and _only_status_changed(old, new):
                return ()
            return [_nsname(obj)]
        keys: list[Hashable] = []
        for pod in (old, new):
            ref = _ref_of_kind(pod, "StatefulSet")
            if ref is not None:
                keys.append((obj["metadata"]["namespace"], ref["name"]))
        orphan = self._orphans.observe(event, old, new)
        if orphan is not None:
            keys.extend(_offer_orphan(self.store, self._orphans, STATEFULSETS, orphan, self._is_member))
        return keys

    @staticmethod
    def _is_member(sts: Obj, pod: Obj) -> bool:
        return _parent_and_ordinal(pod)[0] == sts["metadata"]["name"]

    def initial_keys(self) -> Iterable[Hashable]:
        return [_nsname(s) for s in self.store.iter(STATEFULSETS)]

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        namespace, name = key
        sts = self.store.try_get(STATEFULSETS, namespace, name)
        if sts is None or _selects_everything(sts):
            return
        pods = self._claim_pods(sts)
        revisions = _sorted_revisions(_owned(self.store, CONTROLLERREVISIONS, sts))
        current, update, collision_count = self._revisions(sts, revisions)
        if not _is_deleting(sts):
            self._update_pods(sts, pods, current, update)
            pods = self._members(sts, _owned(self.store, PODS, sts))
        self._update_status(sts, pods, current, update, collision_count)
        self._truncate_history(sts, pods, current, update)

    def _members(self, sts: Obj, pods: Iterable[Obj]) -> list[Obj]:
        return [p for p in pods if self._is_member(sts, p) and _parent_and_ordinal(p)[1] >= 0]

    def _claim_pods(self, sts: Obj) -> list[Obj]:
        claimed = _claim(
            self.store,
            PODS,
            sts,
            _owned(self.store, PODS, sts),
            self._orphans.candidates(sts),
            member=lambda pod: self._is_member(sts, pod),
        )
        return self._members(sts, claimed)

    def _revisions(self, sts: Obj, revisions: list[Obj]) -> tuple[Obj, Obj, int]:
        """getStatefulSetRevisions: (current, update, collisionCount)."""
        collision_count = int((sts.get("status") or {}).get("collisionCount") or 0)
        data = _revision_data(sts["spec"].get("template") or {})
        next_number = (_revision_number(revisions[-1]) if revisions else 0) + 1
        equal = [r for r in revisions if r.get("data") == data]
        if equal and equal[-1] is revisions[-1]:
            update = revisions[-1]  # the template did not change
        elif equal:
            update = _set_revision_number(self.store, equal[-1], next_number)  # a rollback
        else:
            update, collision_count = _create_revision(self.store, sts, data, next_number, data, collision_count)
        current_name = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == current_name), None)
        if current is None or current["metadata"]["name"] == update["metadata"]["name"]:
            current = update
        return current, update, collision_count

    # --------------------------------------------------------------------------------- replicas
    def _update_pods(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj) -> None:
        """updateStatefulSet: create missing ordinals, scale down from the top, roll from the top."""
        spec = sts["spec"]
        count = _spec_replicas(sts)
        start = int((spec.get("ordinals") or {}).get("start") or 0)
        slots: list[Obj | None] = [None] * count
        condemned: list[Obj] = []
        for pod in pods:
            ordinal = _parent_and_ordinal(pod)[1]
            if start <= ordinal < start + count:
                slots[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        condemned.sort(key=lambda p: _parent_and_ordinal(p)[1], reverse=True)
        first_unhealthy = next((p for p in slots if not self._healthy(p)), None)
        if first_unhealthy is None:
            first_unhealthy = next((p for p in reversed(condemned) if not self._healthy(p)), None)
        monotonic = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        strategy = spec.get("updateStrategy") or {}
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        partition_spec = strategy.get("rollingUpdate")
        partition = int((partition_spec or {}).get("partition") or 0)
        templates = {
            "current": (_template_of(current), current["metadata"]["name"]),
            "update": (_template_of(update), update["metadata"]["name"]),
        }

        for index, pod in enumerate(slots):
            ordinal = start + index
            # Below the partition a missing pod comes back at the current revision.
            which = "current" if partition_spec is not None and ordinal < start + partition else "update"
            if self._process_replica(sts, ordinal, pod, templates[which], monotonic) and monotonic:
                return
        for pod in condemned:
            if self._process_condemned(sts, pod, first_unhealthy, monotonic) and monotonic:
                return
        if not rolling:
            return  # OnDelete: pods change only when someone deletes them
        namespace = sts["metadata"]["namespace"]
        update_name = update["metadata"]["name"]
        for index in range(count - 1, partition - 1, -1):
            slot = slots[index]
            pod = self.store.try_get(PODS, namespace, slot["metadata"]["name"]) if slot is not None else None
            if pod is None:
                return  # being (re)created: wait for it
            if _pod_revision(pod) != update_name and not podutil.is_terminating(pod):
                self._delete_pod(sts, pod)
                return
            if not self._healthy(pod):
                return  # one at a time: wait for the replaced pod to be Running and Ready

    @staticmethod
    def _healthy(pod: Obj | None) -> bool:
        return pod is not None and _is_running_and_ready(pod) and not podutil.is_terminating(pod)

    def _available(self, sts: Obj, pod: Obj) -> bool:
        min_ready = int(sts["spec"].get("minReadySeconds") or 0)
        return _is_running_and_ready(pod) and podutil.is_available(pod, min_ready, self.clock.time())

    def _process_replica(self, sts: Obj, ordinal: int, pod: Obj | None, template: tuple[dict[str, Any], str], monotonic: bool) -> bool:
        """processReplica: True when nothing further may happen in this sync (in order)."""
        if pod is None:
            return self._create_pod(sts, ordinal, template[0], template[1]) or monotonic
        if podutil.is_terminal(pod):
            # A finished pod is deleted and recreated (next sync, once it is gone).
            if not podutil.is_terminating(pod):
                self._delete_pod(sts, pod)
            return True
        if podutil.is_terminating(pod) and monotonic:
            return True
        if monotonic and not self._available(sts, pod):
            return True
        pod_name = pod["metadata"]["name"]
        labels = _labels(pod)
        if labels.get(STATEFULSET_POD_NAME_LABEL) != pod_name or labels.get(POD_INDEX_LABEL) != str(ordinal):

            def identify(obj: Obj) -> None:
                obj["metadata"].setdefault("labels", {}).update({STATEFULSET_POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(ordinal)})

            self.store.mutate(PODS, pod["metadata"]["namespace"], pod_name, identify)
        return False

    def _process_condemned(self, sts: Obj, pod: Obj, first_unhealthy: Obj | None, monotonic: bool) -> bool:
        """processCondemned: scale down from the highest ordinal, one healthy pod at a time."""
        if podutil.is_terminating(pod):
            return monotonic
        if monotonic and pod is not first_unhealthy and not self._available(sts, pod):
            return True
        self._delete_pod(sts, pod)
        return True

    def _new_pod(self, sts: Obj, ordinal: int, template: dict[str, Any], revision_name: str) -> Obj:
        set_name = sts["metadata"]["name"]
        pod_name = f"{set_name}-{ordinal}"
        pod = podutil.pod_from_template(
            template,
            sts,
            name=pod_name,
            extra_labels={
                STATEFULSET_POD_NAME_LABEL: pod_name,
                POD_INDEX_LABEL: str(ordinal),
                CONTROLLER_REVISION_HASH_LABEL: revision_name,
            },
        )
        spec = pod["spec"]
        spec["hostname"] = pod_name
        if sts["spec"].get("serviceName"):
            spec["subdomain"] = sts["spec"]["serviceName"]
        # Each claim template gives the pod a volume bound to its own claim.
        claims = sts["spec"].get("volumeClaimTemplates") or []
        if claims:
            names = {c["metadata"]["name"] for c in claims}
            volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in names]
            for claim in claims:
                claim_name = claim["metadata"]["name"]
                volumes.append({"name": claim_name, "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"}})
            spec["volumes"] = volumes
        return pod

    def _create_pod(self, sts: Obj, ordinal: int, template: dict[str, Any], revision_name: str) -> bool:
        """Create one ordinal's pod; True when that failed."""
        pod = self._new_pod(sts, ordinal, template, revision_name)
        set_name = sts["metadata"]["name"]
        pod_name = pod["metadata"]["name"]
        try:
            self.store.create(PODS, pod, namespace=sts["metadata"]["namespace"])
        except ApiError as exc:
            message = f"create Pod {pod_name} in StatefulSet {set_name} failed error: {exc.message}"
            _record(self.cluster, sts, "Warning", "FailedCreate", message, self.component)
            self.enqueue_after(_nsname(sts), FAILED_WRITE_RETRY_SECONDS)
            return True
        _record(self.cluster, sts, "Normal", "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {set_name} successful", self.component)
        return False

    def _delete_pod(self, sts: Obj, pod: Obj) -> None:
        namespace, pod_name = _nsname(pod)
        what = f"delete Pod {pod_name} in StatefulSet {sts['metadata']['name']}"
        try:
            self.store.delete(PODS, namespace, pod_name)
        except ApiError as exc:
            if exc.code != 404:
                _record(self.cluster, sts, "Warning", "FailedDelete", f"{what} failed error: {exc.message}", self.component)
            return
        _record(self.cluster, sts, "Normal", "SuccessfulDelete", f"{what} successful", self.component)

    # ---------------------------------------------------------------------------------- status
    def _update_status(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj, collision_count: int) -> None:
        now = self.clock.time()
        min_ready = int(sts["spec"].get("minReadySeconds") or 0)
        current_name, update_name = current["metadata"]["name"], update["metadata"]["name"]
        replicas = ready = available = current_replicas = updated = 0
        waits: list[float] = []
        for pod in pods:
            replicas += 1
            if _is_running_and_ready(pod):
                ready += 1
                if podutil.is_available(pod, min_ready, now):
                    available += 1
                elif (wait := _seconds_until_available(pod, min_ready, now)) is not None:
                    waits.append(wait)
            if not podutil.is_terminating(pod):
                revision = _pod_revision(pod)
                current_replicas += revision == current_name
                updated += revision == update_name
        rolling = ((sts["spec"].get("updateStrategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"
        if rolling and updated == replicas and ready == replicas:
            # completeRollingUpdate: every pod runs the update revision, which becomes current.
            current_replicas, current_name = updated, update_name
        status = {
            "observedGeneration": _generation(sts),
            "replicas": replicas,
            "readyReplicas": ready,
            "currentReplicas": current_replicas,
            "updatedReplicas": updated,
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": collision_count,
            "availableReplicas": available,
        }
        conditions = (sts.get("status") or {}).get("conditions")
        if conditions:
            status["conditions"] = conditions
        status = _without_zeros(status, keep=("replicas", "availableReplicas", "collisionCount"))
        if status != sts.get("status"):
            namespace, name = _nsname(sts)

            def write(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(STATEFULSETS, namespace, name, write, subresource="status")
        if waits:
            self.enqueue_after(_nsname(sts), min(waits) + 0.05)

    def _truncate_history(self, sts: Obj, pods: list[Obj], current: Obj, update: Obj) -> None:
        """Delete the oldest revisions no pod runs beyond revisionHistoryLimit."""
        live = {current["metadata"]["name"], update["metadata"]["name"]} | {_pod_revision(p) for p in pods}
        history = [r for r in _sorted_revisions(_owned(self.store, CONTROLLERREVISIONS, sts)) if r["metadata"]["name"] not in live]
        limit = sts["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        for revision in history[: max(0, len(history) - limit)]:
            try:
                self.store.delete(CONTROLLERREVISIONS, *_nsname(revision))
            except ApiError as exc:
                if exc.code != 404:
                    raise


# ======================================================================================= DaemonSet
# What AddOrUpdateDaemonPodTolerations gives every daemon pod, in its order.
DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}


def add_daemon_tolerations(spec: dict[str, Any]) -> None:
    """AddOrUpdateDaemonPodTolerations: replace a toleration with the same key, operator, value and
    effect, or append."""
    tolerations = [dict(t) for t in spec.get("tolerations") or []]
    extra = list(DAEMON_TOLERATIONS) + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])

    def identity(t: dict[str, Any]) -> tuple[str, str, str, str]:
        return (t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "", t.get("effect") or "")

    for wanted in extra:
        if any(t == wanted for t in tolerations):
            continue
        replaced = False
        out = []
        for t in tolerations:
            if identity(t) == identity(wanted):
                out.append(dict(wanted))
                replaced = True
            else:
                out.append(t)
        if not replaced:
            out.append(dict(wanted))
        tolerations = out
    spec["tolerations"] = tolerations


def pin_to_node(spec: dict[str, Any], node_name: str) -> None:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: required affinity to exactly this node."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    node_affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}
    else:
        required["nodeSelectorTerms"] = [term]


def target_node(pod: Obj) -> str:
    """GetTargetNodeName: the bound node, else the node a daemon pod's affinity pins it to."""
    node = pod.get("spec", {}).get("nodeName")
    if node:
        return str(node)
    required = ((pod.get("spec", {}).get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or ():
        for req in term.get("matchFields") or ():
            if req.get("key") == "metadata.name" and req.get("operator") == "In" and len(req.get("values") or []) == 1:
                return str(req["values"][0])
    return ""


def _daemon_pod_order(pod: Obj) -> tuple[int, str, str]:
    """podByCreationTimestampAndPhase: scheduled first, then oldest, then by name."""
    return (0 if pod.get("spec", {}).get("nodeName") else 1, pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"])


_DAEMON_TOTALS = ("desired", "current", "misscheduled", "ready", "available", "updated", "unavailable", "surging", "has_available")


@dataclass
class _DaemonNode:
    """What one node contributes to its DaemonSet's status and rolling update."""

    should_run: bool = False
    desired: int = 0
    current: int = 0
    misscheduled: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    unavailable: int = 0  # counts against maxUnavailable (no surge)
    surging: int = 0  # counts against maxSurge
    has_available: int = 0  # an available pod (surge: may a sunset node's pod go?)
    role: str = ""  # "replace": an old available pod to update; "sunset": one on a node it should leave


@dataclass
class _DaemonState:
    """A DaemonSet's per-node picture, kept up to date one node at a time."""

    uid: str
    generation: int
    hash: str
    template_generation: int | None
    pod_template: dict[str, Any]  # the template with daemon tolerations and revision labels
    probe: Obj  # a pod of the template: what node fitness is checked against
    min_ready: int
    rolling: bool
    surge_allowed: bool
    nodes: dict[str, _DaemonNode] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DAEMON_TOTALS, 0))
    replace: dict[str, None] = field(default_factory=dict)  # ordered set of nodes
    sunset: dict[str, None] = field(default_factory=dict)
    failed_backoff: dict[str, tuple[float, float]] = field(default_factory=dict)  # node -> (delay, since)

    def put(self, node_name: str, view: _DaemonNode | None) -> None:
        previous = self.nodes.pop(node_name, None)
        if previous is not None:
            for name in _DAEMON_TOTALS:
                self.totals[name] -= getattr(previous, name)
        self.replace.pop(node_name, None)
        self.sunset.pop(node_name, None)
        if view is None:
            return
        self.nodes[node_name] = view
        for name in _DAEMON_TOTALS:
            self.totals[name] += getattr(view, name)
        if view.role == "replace":
            self.replace[node_name] = None
        elif view.role == "sunset":
            self.sunset[node_name] = None


class DaemonSetController(Controller):
    """One pod per eligible node, pinned there by node affinity, updated node by node."""

    name = "daemonset"
    component = "daemonset-controller"
    watches = (DAEMONSETS, NODES, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._orphans = _Orphans()
        self._states: dict[Key, _DaemonState] = {}
        # Daemon pods by owner uid and target node: a node's pods without scanning the namespace
        # (pending pods are not bound yet, so store.pods_on_node would miss them).
        self._pods: dict[str, dict[str, dict[str, Obj]]] = {}

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        obj = new if new is not None else old
        assert obj is not None
        if type_key == DAEMONSETS:
            namespace, name = _nsname(obj)
            if event == "DELETED":
                self._states.pop((namespace, name), None)
                self._orphans.forget_owner(obj)
                return ()
            if event == "MODIFIED" and _only_status_changed(old, new):
                return ()
            return [("ds", namespace, name)]
        if type_key == NODES:
            if event == "MODIFIED" and not self._matters_to_daemons(old, new):
                return ()
            node_name = obj["metadata"]["name"]
            return [("node", ds["metadata"]["namespace"], ds["metadata"]["name"], node_name) for ds in self.store.iter(DAEMONSETS)]
        return self._on_pod(event, old, new)

    @staticmethod
    def _matters_to_daemons(old: Obj | None, new: Obj | None) -> bool:
        """Only labels, taints and cordon decide where daemons run (shouldIgnoreNodeUpdate)."""
        if old is None or new is None:
            return True
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        return (
            _labels(old) != _labels(new)
            or old_spec.get("taints") != new_spec.get("taints")
            or bool(old_spec.get("unschedulable")) != bool(new_spec.get("unschedulable"))
        )

    def _on_pod(self, event: str, old: Obj | None, new: Obj | None) -> list[Hashable]:
        keys: list[Hashable] = []
        current = None if event == "DELETED" else new
        old_ref = _ref_of_kind(old, "DaemonSet")
        new_ref = _ref_of_kind(current, "DaemonSet")
        if old_ref is not None and old is not None:
            node = target_node(old)
            by_node = self._pods.get(old_ref["uid"])
            if by_node is not None and node in by_node:
                by_node[node].pop(old["metadata"]["name"], None)
                if not by_node[node]:
                    del by_node[node]
                if not by_node:
                    del self._pods[old_ref["uid"]]
            keys.append(("node", old["metadata"]["namespace"], old_ref["name"], node))
        if new_ref is not None and current is not None:
            node = target_node(current)
            self._pods.setdefault(new_ref["uid"], {}).setdefault(node, {})[current["metadata"]["name"]] = current
            key = ("node", current["metadata"]["namespace"], new_ref["name"], node)
            if key not in keys:
                keys.append(key)
        orphan = self._orphans.observe(event, old, new)
        if orphan is not None:
            for namespace, name in _offer_orphan(self.store, self._orphans, DAEMONSETS, orphan):
                keys.append(("node", namespace, name, target_node(orphan)))
        return keys

    def initial_keys(self) -> Iterable[Hashable]:
        return [("ds",) + _nsname(ds) for ds in self.store.iter(DAEMONSETS)]

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        kind, namespace, name = key[0], key[1], key[2]
        ds = self.store.try_get(DAEMONSETS, namespace, name)
        if ds is None or _is_deleting(ds) or _selects_everything(ds):
            return
        state = self._states.get((namespace, name))
        if kind == "ds" or state is None or state.uid != _uid(ds) or state.generation != _generation(ds):
            self._full_sync(ds)
            return
        node_name = key[3]
        self._adopt_orphans(ds)
        self._reconcile_node(ds, state, node_name, allow_writes=True)
        self._rolling_update(ds, state)
        self._write_status(ds, state)

    def _full_sync(self, ds: Obj) -> None:
        """Every node: after a spec change, on start, and whenever the per-node picture is stale."""
        namespace, name = _nsname(ds)
        previous = self._states.get((namespace, name))
        collision_count = int((ds.get("status") or {}).get("collisionCount") or 0)
        current, old_revisions, collision_count = self._construct_history(ds, collision_count)
        state = self._new_state(ds, current["metadata"]["labels"][CONTROLLER_REVISION_HASH_LABEL])
        if previous is not None and previous.uid == state.uid:
            state.failed_backoff = previous.failed_backoff
        self._states[(namespace, name)] = state
        self._adopt_orphans(ds)
        node_names = {n["metadata"]["name"] for n in self.store.iter(NODES)} | set(self._pods.get(state.uid, {}))
        writes = 0
        for node_name in node_names:
            # Past the burst, the remaining nodes are only looked at; the requeue does the rest.
            writes += self._reconcile_node(ds, state, node_name, allow_writes=writes < DAEMONSET_BURST_REPLICAS)
        if writes >= DAEMONSET_BURST_REPLICAS:
            self.enqueue(("ds", namespace, name))
        self._rolling_update(ds, state)
        self._write_status(ds, state, collision_count)
        self._cleanup_history(ds, state, old_revisions)

    def _new_state(self, ds: Obj, revision_hash: str) -> _DaemonState:
        spec = ds["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        tg_raw = _annotations(ds).get(DAEMONSET_TEMPLATE_GENERATION_ANNOTATION)
        try:
            template_generation: int | None = int(tg_raw) if tg_raw is not None else None
        except ValueError:
            template_generation = None
        pod_spec = template.setdefault("spec", {})
        add_daemon_tolerations(pod_spec)
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        if template_generation is not None:
            labels[DAEMONSET_TEMPLATE_GENERATION_LABEL] = str(template_generation)
        labels[CONTROLLER_REVISION_HASH_LABEL] = revision_hash
        strategy = spec.get("updateStrategy") or {}
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        max_surge = (strategy.get("rollingUpdate") or {}).get("maxSurge") if rolling else None
        return _DaemonState(
            uid=_uid(ds),
            generation=_generation(ds),
            hash=revision_hash,
            template_generation=template_generation,
            pod_template=template,
            probe={"metadata": {"name": ds["metadata"]["name"]}, "spec": pod_spec},
            min_ready=int(spec.get("minReadySeconds") or 0),
            rolling=rolling,
            surge_allowed=rolling and podutil.int_or_percent(max_surge, 1, round_up=True) > 0,
        )

    def _adopt_orphans(self, ds: Obj) -> None:
        selector = _selector(ds)
        for orphan in self._orphans.candidates(ds):
            if labels_match(selector, _labels(orphan)):
                _adopt(self.store, PODS, orphan, ds)

    # ----------------------------------------------------------------------------- node level
    def _should_run(self, state: _DaemonState, node: Obj) -> tuple[bool, bool]:
        """NodeShouldRunDaemonPod: (should run, may keep running)."""
        pinned = state.probe["spec"].get("nodeName")
        if pinned and pinned != node["metadata"]["name"]:
            return False, False
        if not pod_matches_node_selection(state.probe, node):
            return False, False
        tolerations = state.probe["spec"].get("tolerations") or []
        untolerated = [
            t
            for t in node.get("spec", {}).get("taints") or ()
            if t.get("effect") in ("NoSchedule", "NoExecute") and not any(toleration_matches(tol, t) for tol in tolerations)
        ]
        if untolerated:
            return False, not any(t.get("effect") == "NoExecute" for t in untolerated)
        return True, True

    def _pods_on(self, ds: Obj, state: _DaemonState, node_name: str) -> list[Obj]:
        """The DaemonSet's pods for one node; pods whose labels left the selector are released."""
        selector = _selector(ds)
        out = []
        for pod in list(self._pods.get(state.uid, {}).get(node_name, {}).values()):
            if labels_match(selector, _labels(pod)):
                out.append(pod)
            elif not podutil.is_terminating(pod):
                _release(self.store, PODS, pod, ds)
        return out

    def _is_updated(self, state: _DaemonState, pod: Obj) -> bool:
        labels = _labels(pod)
        if labels.get(CONTROLLER_REVISION_HASH_LABEL) == state.hash:
            return True
        return state.template_generation is not None and labels.get(DAEMONSET_TEMPLATE_GENERATION_LABEL) == str(state.template_generation)

    def _available(self, state: _DaemonState, pod: Obj) -> bool:
        return podutil.is_available(pod, state.min_ready, self.clock.time())

    def _split(self, state: _DaemonState, pods: list[Obj]) -> tuple[Obj | None, Obj | None, bool]:
        """findUpdatedPodsOnNode: (new pod, old pod, ok); not ok with more than one of either."""
        new = old = None
        for pod in pods:
            if podutil.is_terminating(pod):
                continue
            if self._is_updated(state, pod):
                if new is not None:
                    return None, None, False
                new = pod
            else:
                if old is not None:
                    return None, None, False
                old = pod
        return new, old, True

    def _reconcile_node(self, ds: Obj, state: _DaemonState, node_name: str, allow_writes: bool) -> int:
        """Manage one node (and replace what needs no budget there); returns the writes made."""
        node = self.store.try_get(NODES, None, node_name) if node_name else None
        pods = self._pods_on(ds, state, node_name)
        should_run, should_continue = self._should_run(state, node) if node is not None else (False, False)
        writes = 0
        if allow_writes:
            writes = self._manage_node(ds, state, node_name, node, pods, should_run, should_continue)
            if not writes and state.rolling:
                writes = self._replace_on_node(ds, state, node_name, pods, should_run)
            if writes:
                pods = self._pods_on(ds, state, node_name)
        state.put(node_name, self._view(state, node, pods, should_run))
        waits = [w for p in pods if podutil.is_ready(p) and (w := _seconds_until_available(p, state.min_ready, self.clock.time())) is not None]
        if waits:
            self.enqueue_after(("node", ds["metadata"]["namespace"], ds["metadata"]["name"], node_name), min(waits) + 0.05)
        return writes

    def _manage_node(
        self, ds: Obj, state: _DaemonState, node_name: str, node: Obj | None, pods: list[Obj], should_run: bool, should_continue: bool
    ) -> int:
        """podsShouldBeOnNode: create the missing daemon pod, delete failed, excess or misplaced ones."""
        live = [p for p in pods if not podutil.is_terminating(p)]
        to_delete: list[Obj] = []
        create = False
        if node is None:
            # Never scheduled and pinned to a node that does not exist: nothing else removes them.
            to_delete = [p for p in live if not p.get("spec", {}).get("nodeName")]
        elif should_run and not pods:
            create = True
        elif should_continue:
            running = []
            for pod in live:
                phase = pod.get("status", {}).get("phase")
                if phase == "Failed":
                    if self._in_failed_backoff(ds, state, node_name):
                        continue
                    _record(
                        self.cluster, ds, "Warning", "FailedDaemonPod",
                        f"Found failed daemon pod {pod['metadata']['namespace']}/{pod['metadata']['name']} on node {node_name}, will try to kill it",
                        self.component,
                    )
                    to_delete.append(pod)
                elif phase == "Succeeded":
                    to_delete.append(pod)
                else:
                    running.append(pod)
            running.sort(key=_daemon_pod_order)
            if not state.surge_allowed:
                to_delete.extend(running[1:])  # one daemon pod per node: keep the oldest
            elif len(running) <= 1:
                create = not running and should_run
            else:
                # Surging: keep the oldest new pod and the oldest old one until the new is available.
                oldest_new = oldest_old = None
                for pod in running:
                    if self._is_updated(state, pod):
                        if oldest_new is None:
                            oldest_new = pod
                            continue
                    elif oldest_old is None:
                        oldest_old = pod
                        continue
                    to_delete.append(pod)
                if oldest_new is not None and oldest_old is not None:
                    if not podutil.is_ready(oldest_old) or self._available(state, oldest_new):
                        to_delete.append(oldest_old)
        elif live:
            to_delete = live
        writes = 0
        if create and self._create_pod(ds, state, node_name):
            writes += 1
        for pod in to_delete:
            writes += self._delete_pod(ds, pod)
        return writes

    def _in_failed_backoff(self, ds: Obj, state: _DaemonState, node_name: str) -> bool:
        """Failed daemon pods are replaced with exponential backoff per node (1 s .. 15 min)."""
        now = self.clock.time()
        delay, since = state.failed_backoff.get(node_name, (0.0, 0.0))
        if delay and now < since + delay:
            self.enqueue_after(("node", ds["metadata"]["namespace"], ds["metadata"]["name"], node_name), since + delay - now)
            return True
        state.failed_backoff[node_name] = (min(DAEMON_FAILED_BACKOFF_MAX, delay * 2 if delay else DAEMON_FAILED_BACKOFF_START), now)
        return False

    def _replace_on_node(self, ds: Obj, state: _DaemonState, node_name: str, pods: list[Obj], should_run: bool) -> int:
        """The rolling update's moves that need no budget: an old pod that is not available anyway
        is replaced at once; when surging, an old pod goes once its new one is available."""
        new, old, ok = self._split(state, pods)
        if not ok or old is None:
            return 0
        if not state.surge_allowed:
            if new is None and not self._available(state, old):
                return self._delete_pod(ds, old)
            return 0
        if new is None and not self._available(state, old):
            if not should_run:
                return self._delete_pod(ds, old)
            return 1 if self._create_pod(ds, state, node_name) else 0
        if new is not None and self._available(state, new):
            return self._delete_pod(ds, old)
        return 0

    def _view(self, state: _DaemonState, node: Obj | None, pods: list[Obj], should_run: bool) -> _DaemonNode | None:
        if not pods and (node is None or not should_run):
            return None
        view = _DaemonNode(should_run=should_run)
        if node is not None:
            if should_run:
                view.desired = 1
                if pods:
                    view.current = 1
                    oldest = min(pods, key=_daemon_pod_order)
                    if podutil.is_ready(oldest):
                        view.ready = 1
                        view.available = int(self._available(state, oldest))
                    view.updated = int(self._is_updated(state, oldest))
            elif pods:
                view.misscheduled = 1
        new, old, ok = self._split(state, pods)
        if state.surge_allowed:
            if not ok:
                view.surging = 1
                return view
            probe = old if old is not None else new
            view.has_available = int(probe is not None and self._available(state, probe))
            if old is not None and new is None and self._available(state, old):
                view.role = "replace" if should_run else "sunset"
            elif old is not None and new is not None and not self._available(state, new):
                view.surging = 1
            return view
        if not ok or (old is None) == (new is None):
            view.unavailable = 1  # nothing or two pods running here: the manage loop's business
        elif new is not None:
            view.unavailable = int(not self._available(state, new))
        elif not self._available(state, old):  # type: ignore[arg-type]
            view.unavailable = 1
        else:
            view.role = "replace"
        return view

    # ---------------------------------------------------------------------------- rolling update
    def _rolling_update(self, ds: Obj, state: _DaemonState) -> None:
        """Spend the maxUnavailable / maxSurge budget on nodes still running an old available pod."""
        if not state.rolling:
            return
        rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
        desired = state.totals["desired"]
        max_surge = podutil.int_or_percent(rolling.get("maxSurge"), desired, round_up=True)
        max_unavailable = podutil.int_or_percent(rolling.get("maxUnavailable"), desired, round_up=True)
        if desired > 0 and max_unavailable == 0 and max_surge == 0:
            max_unavailable = 1
        if not state.surge_allowed:
            for node_name in list(state.replace):
                if max_unavailable - state.totals["unavailable"] <= 0:
                    break
                self._act_on_node(ds, state, node_name, create=False)
            return
        for node_name in list(state.replace):
            if max_surge - state.totals["surging"] <= 0:
                break
            self._act_on_node(ds, state, node_name, create=True)
        # Leaving a node (scheduling constraints changed): only while enough pods are available.
        deletable = state.totals["has_available"] - desired
        for node_name in list(state.sunset)[: max(0, deletable)]:
            self._act_on_node(ds, state, node_name, create=False)

    def _act_on_node(self, ds: Obj, state: _DaemonState, node_name: str, create: bool) -> None:
        """Replace the old pod on one node: delete it, or (surging) start the new one beside it."""
        pods = self._pods_on(ds, state, node_name)
        _, old, ok = self._split(state, pods)
        if ok and old is not None:
            if create:
                self._create_pod(ds, state, node_name)
            else:
                self._delete_pod(ds, old)
            pods = self._pods_on(ds, state, node_name)
        node = self.store.try_get(NODES, None, node_name)
        should_run = self._should_run(state, node)[0] if node is not None else False
        state.put(node_name, self._view(state, node, pods, should_run))

    # ------------------------------------------------------------------------------------ writes
    def _create_pod(self, ds: Obj, state: _DaemonState, node_name: str) -> bool:
        template = copy.deepcopy(state.pod_template)
        pin_to_node(template.setdefault("spec", {}), node_name)
        pod = podutil.pod_from_template(template, ds, generate_name=f"{ds['metadata']['name']}-")
        try:
            created = self.store.create(PODS, pod, namespace=ds["metadata"]["namespace"])
        except ApiError as exc:
            _record(self.cluster, ds, "Warning", "FailedCreate", f"Error creating: {exc.message}", self.component)
            self.enqueue_after(("node", ds["metadata"]["namespace"], ds["metadata"]["name"], node_name), FAILED_WRITE_RETRY_SECONDS)
            return False
        _record(self.cluster, ds, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", self.component)
        return True

    def _delete_pod(self, ds: Obj, pod: Obj) -> int:
        namespace, name = _nsname(pod)
        try:
            self.store.delete(PODS, namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                _record(self.cluster, ds, "Warning", "FailedDelete", f"Error deleting: {exc.message}", self.component)
            return 0
        _record(self.cluster, ds, "Normal", "SuccessfulDelete", f"Deleted pod: {name}", self.component)
        return 1

    def _write_status(self, ds: Obj, state: _DaemonState, collision_count: int | None = None) -> None:
        current = self.store.try_get(DAEMONSETS, *_nsname(ds)) or ds
        old_status = current.get("status") or {}
        if collision_count is None:
            collision_count = int(old_status.get("collisionCount") or 0)
        t = state.totals
        status: dict[str, Any] = {
            "currentNumberScheduled": t["current"],
            "numberMisscheduled": t["misscheduled"],
            "desiredNumberScheduled": t["desired"],
            "numberReady": t["ready"],
            "observedGeneration": _generation(ds),
            "updatedNumberScheduled": t["updated"],
            "numberAvailable": t["available"],
            "numberUnavailable": t["desired"] - t["available"],
            "collisionCount": collision_count,
        }
        if old_status.get("conditions"):
            status["conditions"] = old_status["conditions"]
        status = _without_zeros(status, keep=("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"))
        if status != old_status:

            def write(obj: Obj) -> None:
                obj["status"] = status

            self.store.mutate(DAEMONSETS, *_nsname(ds), write, subresource="status")

    # ----------------------------------------------------------------------------------- history
    def _construct_history(self, ds: Obj, collision_count: int) -> tuple[Obj, list[Obj], int]:
        """constructHistory: the revision matching the template (created if new), and the others."""
        template = ds["spec"].get("template") or {}
        data = _revision_data(template)
        revisions = _sorted_revisions(_owned(self.store, CONTROLLERREVISIONS, ds))
        current = [r for r in revisions if r.get("data") == data]
        old = [r for r in revisions if r.get("data") != data]
        next_number = max((_revision_number(r) for r in old), default=0) + 1
        if not current:
            revision, collision_count = _create_revision(self.store, ds, data, next_number, template, collision_count)
        else:
            revision = current[-1]
            if _revision_number(revision) < next_number:
                revision = _set_revision_number(self.store, revision, next_number)
        if CONTROLLER_REVISION_HASH_LABEL not in _labels(revision):
            # Label it with its name as the real controller does, so pods can refer to it.
            revision_name = revision["metadata"]["name"]

            def label(obj: Obj) -> None:
                obj["metadata"].setdefault("labels", {})[CONTROLLER_REVISION_HASH_LABEL] = revision_name

            revision = self.store.mutate(CONTROLLERREVISIONS, *_nsname(revision), label)
        return revision, old, collision_count

    def _cleanup_history(self, ds: Obj, state: _DaemonState, old: list[Obj]) -> None:
        limit = ds["spec"].get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        excess = len(old) - limit
        if excess <= 0:
            return
        live = {
            _labels(pod).get(CONTROLLER_REVISION_HASH_LABEL)
            for pods in self._pods.get(state.uid, {}).values()
            for pod in pods.values()
        }
        for revision in _sorted_revisions(old):
            if excess <= 0:
                break
            if _labels(revision).get(CONTROLLER_REVISION_HASH_LABEL) in live:
                continue
            try:
                self.store.delete(CONTROLLERREVISIONS, *_nsname(revision))
            except ApiError as exc:
                if exc.code != 404:
                    raise
            excess -= 1


# ======================================================================================= admission
_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
_PERCENT = re.compile(r"^[0-9]+%$")


def _default(obj: dict[str, Any], key: str, value: Any) -> None:
    """Set a field the client left out (or sent as null)."""
    if obj.get(key) is None:
        obj[key] = value


def _image_pull_policy(image: str) -> str:
    """Always for ``:latest`` or no tag, IfNotPresent otherwise (digests included)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_pod_template(template: dict[str, Any]) -> None:
    """SetDefaults_PodSpec / _Container / _Probe / _Volume, as the apiserver applies them to the pod
    template of every workload (what ``kubectl get -o yaml`` shows, and what the template hash
    covers)."""
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return
    _default(spec, "restartPolicy", "Always")
    _default(spec, "terminationGracePeriodSeconds", 30)
    _default(spec, "dnsPolicy", "ClusterFirst")
    _default(spec, "schedulerName", "default-scheduler")
    _default(spec, "securityContext", {})
    for section in ("initContainers", "containers"):
        for container in spec.get(section) or []:
            if not isinstance(container, dict):
                continue
            _default(container, "imagePullPolicy", _image_pull_policy(str(container.get("image") or "")))
            _default(container, "terminationMessagePath", "/dev/termination-log")
            _default(container, "terminationMessagePolicy", "File")
            _default(container, "resources", {})
            for port in container.get("ports") or []:
                _default(port, "protocol", "TCP")
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if isinstance(probe, dict):
                    for key, value in _PROBE_DEFAULTS.items():
                        _default(probe, key, value)
                    if isinstance(probe.get("httpGet"), dict):
                        _default(probe["httpGet"], "scheme", "HTTP")
            for env in container.get("env") or []:
                field_ref = (env.get("valueFrom") or {}).get("fieldRef")
                if isinstance(field_ref, dict):
                    _default(field_ref, "apiVersion", "v1")
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                _default(volume[source], "defaultMode", 420)


def _template(obj: Obj) -> dict[str, Any]:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec.get("template"), dict):
        spec["template"] = {}
    return spec["template"]


def default_deployment(obj: Obj, store: Any = None) -> None:
    spec = obj.setdefault("spec", {})
    _default(spec, "replicas", 1)
    strategy = spec.setdefault("strategy", {})
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        _default(rolling, "maxUnavailable", "25%")
        _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    default_pod_template(_template(obj))


def default_replicaset(obj: Obj, store: Any = None) -> None:
    _default(obj.setdefault("spec", {}), "replicas", 1)
    default_pod_template(_template(obj))


def default_statefulset(obj: Obj, store: Any = None) -> None:
    spec = obj.setdefault("spec", {})
    _default(spec, "podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
        _default(strategy, "rollingUpdate", {})
    if strategy["type"] == "RollingUpdate" and isinstance(strategy.get("rollingUpdate"), dict):
        _default(strategy["rollingUpdate"], "partition", 0)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    _default(retention, "whenDeleted", "Retain")
    _default(retention, "whenScaled", "Retain")
    _default(spec, "replicas", 1)
    _default(spec, "revisionHistoryLimit", 10)
    default_pod_template(_template(obj))


def default_daemonset(obj: Obj, store: Any = None) -> None:
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {})
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        _default(rolling, "maxUnavailable", 1)
        _default(rolling, "maxSurge", 0)
    _default(spec, "revisionHistoryLimit", 10)
    default_pod_template(_template(obj))
    # The internal spec.templateGeneration, which apps/v1 carries as this annotation.
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.setdefault(DAEMONSET_TEMPLATE_GENERATION_ANNOTATION, "1")


def _go_map(values: dict[str, Any] | None) -> str:
    """A label map as Go's %#v prints it in field errors."""
    if values is None:
        return "map[string]string(nil)"
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(values.items())) + "}"


def _go_selector(selector: dict[str, Any] | None) -> str:
    if selector is None:
        return "nil"
    expressions = selector.get("matchExpressions") or []
    if expressions:
        rendered = ", ".join(
            'v1.LabelSelectorRequirement{Key:"%s", Operator:"%s", Values:[]string{%s}}'
            % (e.get("key"), e.get("operator"), ", ".join(f'"{v}"' for v in e.get("values") or []))
            for e in expressions
        )
        expr_text = "[]v1.LabelSelectorRequirement{" + rendered + "}"
    else:
        expr_text = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{_go_map(selector.get('matchLabels'))}, MatchExpressions:{expr_text}}}"


def _go_int_or_string(value: Any) -> str:
    """An IntOrString as field errors print it: 0 or "0%"."""
    return str(value) if isinstance(value, int) else f'"{value}"'


def _int_or_percent_causes(path: str, value: Any, max_percent: bool) -> tuple[list[tuple[str, str]], int | None]:
    """Validate an IntOrString; returns (causes, value as a number of percent or units)."""
    if value is None:
        return [], None
    if isinstance(value, bool):
        return [(path, f"Invalid value: {value!r}: must be an integer or percentage")], None
    if isinstance(value, int):
        if value < 0:
            return [(path, f"Invalid value: {value}: must be greater than or equal to 0")], None
        return [], value
    text = str(value)
    if not _PERCENT.match(text):
        return [
            (
                path,
                f'Invalid value: "{text}": a valid percent string must be a numeric string followed by an ending \'%\' '
                "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )
        ], None
    number = int(text[:-1])
    if max_percent and number > 100:
        return [(path, f'Invalid value: "{text}": must not be greater than 100%')], None
    return [], number


def _selector_causes(kind: str, spec: dict[str, Any]) -> list[tuple[str, str]]:
    selector = spec.get("selector")
    if selector is None:
        return [("spec.selector", "Required value")]
    if not isinstance(selector, dict):
        return [("spec.selector", f"Invalid value: {selector!r}: must be a label selector")]
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        if kind == "ReplicaSet":
            return [("spec.selector", "Required value")]
        return [("spec.selector", f"Invalid value: {_go_selector(selector)}: empty selector is invalid for {kind.lower()}")]
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        operator = expr.get("operator")
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return [(f"spec.selector.matchExpressions[{index}].operator", f'Invalid value: "{operator}": not a valid selector operator')]
        if operator in ("In", "NotIn") and not expr.get("values"):
            return [(f"spec.selector.matchExpressions[{index}].values", "Required value: must be specified when `operator` is 'In' or 'NotIn'")]
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not labels_match(selector_from_object(selector), template_labels):
        return [("spec.template.metadata.labels", f"Invalid value: {_go_map(template_labels)}: `selector` does not match template `labels`")]
    return []


def _workload_causes(kind: str, obj: Obj) -> list[tuple[str, str]]:
    """What every apps/v1 workload spec must satisfy: selector, replicas and pod template."""
    spec = obj.get("spec") or {}
    causes = _selector_causes(kind, spec)
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        causes.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"))
    min_ready = spec.get("minReadySeconds")
    if min_ready is not None and (not isinstance(min_ready, int) or min_ready < 0):
        causes.append(("spec.minReadySeconds", f"Invalid value: {min_ready}: must be greater than or equal to 0"))
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    for index, container in enumerate(containers):
        if not container.get("name"):
            causes.append((f"spec.template.spec.containers[{index}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"spec.template.spec.containers[{index}].image", "Required value"))
    restart = pod_spec.get("restartPolicy")
    if restart != "Always":
        causes.append(("spec.template.spec.restartPolicy", f'Unsupported value: "{restart}": supported values: "Always"'))
    return causes


def _immutable_selector_causes(new: Obj, old: Obj | None) -> list[tuple[str, str]]:
    if old is None:
        return []
    new_selector = (new.get("spec") or {}).get("selector")
    if _strip_empty(new_selector) != _strip_empty((old.get("spec") or {}).get("selector")):
        return [("spec.selector", f"Invalid value: {_go_selector(new_selector)}: field is immutable")]
    return []


def _keep_generation(new: Obj, old: Obj | None) -> None:
    """Generation moves only when the spec changed once defaulted (the store compared before)."""
    if old is not None and new.get("spec") == old.get("spec"):
        generation = old["metadata"].get("generation")
        if generation is not None:
            new["metadata"]["generation"] = generation


def _raise(kind: str, obj: Obj, causes: list[tuple[str, str]]) -> None:
    if causes:
        raise errors.invalid(kind, obj.get("metadata", {}).get("name", ""), causes, "apps")


def validate_deployment(new: Obj, old: Obj | None) -> None:
    default_deployment(new)
    causes = _workload_causes("Deployment", new) + _immutable_selector_causes(new, old)
    spec = new["spec"]
    strategy = spec.get("strategy") or {}
    strategy_type = strategy.get("type")
    if strategy_type not in ("RollingUpdate", "Recreate"):
        causes.append(("spec.strategy.type", f'Unsupported value: "{strategy_type}": supported values: "Recreate", "RollingUpdate"'))
    elif strategy_type == "Recreate" and strategy.get("rollingUpdate") is not None:
        causes.append(("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'"))
    else:
        rolling = strategy.get("rollingUpdate") or {}
        unavailable_causes, unavailable = _int_or_percent_causes("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"), True)
        surge_causes, surge = _int_or_percent_causes("spec.strategy.rollingUpdate.maxSurge", rolling.get("maxSurge"), False)
        causes += unavailable_causes + surge_causes
        if unavailable == 0 and surge == 0:
            value = _go_int_or_string(rolling.get("maxUnavailable"))
            causes.append(("spec.strategy.rollingUpdate.maxUnavailable", f"Invalid value: {value}: may not be 0 when `maxSurge` is 0"))
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None and deadline <= int(spec.get("minReadySeconds") or 0):
        causes.append(("spec.progressDeadlineSeconds", f"Invalid value: {deadline}: must be greater than minReadySeconds"))
    revisions = spec.get("revisionHistoryLimit")
    if revisions is not None and revisions < 0:
        causes.append(("spec.revisionHistoryLimit", f"Invalid value: {revisions}: must be greater than or equal to 0"))
    _raise("Deployment", new, causes)
    _keep_generation(new, old)


def validate_replicaset(new: Obj, old: Obj | None) -> None:
    default_replicaset(new)
    _raise("ReplicaSet", new, _workload_causes("ReplicaSet", new) + _immutable_selector_causes(new, old))
    _keep_generation(new, old)


# The StatefulSet fields an update may change (everything else is fixed at creation).
_STATEFULSET_MUTABLE = frozenset(
    {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds", "revisionHistoryLimit"}
)


def validate_statefulset(new: Obj, old: Obj | None) -> None:
    default_statefulset(new)
    causes = _workload_causes("StatefulSet", new)
    spec = new["spec"]
    policy = spec.get("podManagementPolicy")
    if policy not in ("OrderedReady", "Parallel"):
        causes.append(("spec.podManagementPolicy", f'Unsupported value: "{policy}": supported values: "OrderedReady", "Parallel"'))
    strategy = spec.get("updateStrategy") or {}
    strategy_type = strategy.get("type")
    if strategy_type not in ("RollingUpdate", "OnDelete"):
        causes.append(("spec.updateStrategy.type", f'Unsupported value: "{strategy_type}": supported values: "OnDelete", "RollingUpdate"'))
    elif strategy_type == "OnDelete" and strategy.get("rollingUpdate") is not None:
        causes.append(("spec.updateStrategy.rollingUpdate", "Forbidden: only allowed for updateStrategy 'RollingUpdate'"))
    else:
        partition = (strategy.get("rollingUpdate") or {}).get("partition")
        if partition is not None and (not isinstance(partition, int) or partition < 0):
            causes.append(("spec.updateStrategy.rollingUpdate.partition", f"Invalid value: {partition}: must be greater than or equal to 0"))
    if old is not None:
        old_spec = old.get("spec") or {}
        fixed = (set(spec) | set(old_spec)) - _STATEFULSET_MUTABLE
        if any(_strip_empty(spec.get(k)) != _strip_empty(old_spec.get(k)) for k in fixed):
            causes.append(
                (
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                )
            )
    _raise("StatefulSet", new, causes)
    _keep_generation(new, old)


def validate_daemonset(new: Obj, old: Obj | None) -> None:
    default_daemonset(new)
    causes = _workload_causes("DaemonSet", new) + _immutable_selector_causes(new, old)
    strategy = new["spec"].get("updateStrategy") or {}
    strategy_type = strategy.get("type")
    if strategy_type not in ("RollingUpdate", "OnDelete"):
        causes.append(("spec.updateStrategy.type", f'Unsupported value: "{strategy_type}": supported values: "OnDelete", "RollingUpdate"'))
    elif strategy_type == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        path = "spec.updateStrategy.rollingUpdate"
        unavailable_causes, unavailable = _int_or_percent_causes(f"{path}.maxUnavailable", rolling.get("maxUnavailable"), True)
        surge_causes, surge = _int_or_percent_causes(f"{path}.maxSurge", rolling.get("maxSurge"), True)
        causes += unavailable_causes + surge_causes
        if unavailable == 0 and surge == 0:
            value = _go_int_or_string(rolling.get("maxUnavailable"))
            causes.append(("spec.updateStrategy.rollingUpdate.maxUnavailable", f"Invalid value: {value}: cannot be 0 when maxSurge is 0"))
    _raise("DaemonSet", new, causes)
    if old is not None:
        # spec.templateGeneration is the server's: kept, and raised when the template changes.
        try:
            template_generation = int(_annotations(old).get(DAEMONSET_TEMPLATE_GENERATION_ANNOTATION, "1"))
        except ValueError:
            template_generation = 1
        if (new.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template"):
            template_generation += 1
        new["metadata"].setdefault("annotations", {})[DAEMONSET_TEMPLATE_GENERATION_ANNOTATION] = str(template_generation)
    _keep_generation(new, old)


CONTROLLERS = [ReplicaSetController, DeploymentController, StatefulSetController, DaemonSetController]
DEFAULTERS = {
    DEPLOYMENTS: default_deployment,
    REPLICASETS: default_replicaset,
    STATEFULSETS: default_statefulset,
    DAEMONSETS: default_daemonset,
}
VALIDATORS = {
    DEPLOYMENTS: validate_deployment,
    REPLICASETS: validate_replicaset,
    STATEFULSETS: validate_statefulset,
    DAEMONSETS: validate_daemonset,
}
