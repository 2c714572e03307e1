"""PodDisruptionBudgets: admission, the disruption controller's status and the Eviction subresource.

- ``VALIDATORS`` check a policy/v1 PDB as the apiserver does (minAvailable and maxUnavailable are not
  both set, each a non-negative int or a percentage up to 100%, a known unhealthyPodEvictionPolicy);
  ``DEFAULTERS`` clear the status a client sent, as the strategy's PrepareForCreate does.
- ``DisruptionController`` keeps each PDB's status as kube-controller-manager's disruption controller
  does: expectedPods / desiredHealthy from minAvailable or maxUnavailable (percentages and
  maxUnavailable scale by the ``spec.replicas`` of the pods' controllers: Deployment through its
  ReplicaSet, ReplicaSet, StatefulSet, ReplicationController; pods without one make the sync fail
  safe with disruptionsAllowed 0 and reason SyncFailed), currentHealthy (Ready, not terminating, not
  just evicted), disruptionsAllowed, disruptedPods (expiring after two minutes) and the
  DisruptionAllowed condition.
- ``evict`` is the ``pods/<name>/eviction`` subresource (pkg/registry/core/pod/storage/eviction.go).
"""
from __future__ import annotations

import copy
from typing import Any, Hashable, Iterable

from .. import errors, podutil
from ..clock import parse_time
from ..events import record_event
from ..resources import BY_KIND, DEPLOYMENTS, PDBS, PODS, REPLICASETS, STATEFULSETS
from ..selectors import LabelSelector, labels_match, selector_from_object
from .base import Controller

Obj = dict[str, Any]

REPLICATIONCONTROLLERS = "replicationcontrollers"
DISRUPTION_CONTROLLER = "controllermanager"  # the component the real disruption controller records as
DISRUPTION_ALLOWED = "DisruptionAllowed"
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
# How long an eviction the PDB approved keeps the pod out of currentHealthy while the pod is not yet
# being deleted (the disruption controller's DeletionTimeout).
DELETION_TIMEOUT_SECONDS = 120.0
DISRUPTED_RECHECK_MAX_SECONDS = 1.0
MAX_DISRUPTED_POD_SIZE = 2000
UNHEALTHY_POLICIES = ("AlwaysAllow", "IfHealthyBudget")
EVICTION_VIOLATES_BUDGET = "Cannot evict pod as it would violate the pod's disruption budget."
MORE_THAN_ONE_PDB = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
_PERCENT_MESSAGE = (
    "a valid percent string must be a numeric string followed by an ending '%' "
    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
)


# ===================================================================================== admission
def default_pdb(pdb: Obj, store: Any) -> None:
    """A new PDB starts with an empty status (the integers are not omitempty in policy/v1)."""
    pdb["status"] = {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}


def _int_or_percent_causes(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, bool):
        return [(path, f"Invalid value: {value}: must be an integer or percentage (e.g '5%')")]
    if isinstance(value, int):
        if value < 0:
            return [(path, f"Invalid value: {value}: must be greater than or equal to 0")]
        return []
    if isinstance(value, str):
        digits = value[:-1]
        if not value.endswith("%") or not digits.isdigit():
            return [(path, f'Invalid value: "{value}": {_PERCENT_MESSAGE}')]
        if int(digits) > 100:
            return [(path, f'Invalid value: "{value}": must not be greater than 100%')]
        return []
    return [(path, f"Invalid value: {value!r}: must be an integer or percentage (e.g '5%')")]


def _selector_causes(selector: Any, path: str) -> list[tuple[str, str]]:
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return [(path, "Invalid value: must be a label selector")]
    causes: list[tuple[str, str]] = []
    for i, expr in enumerate(selector.get("matchExpressions") or ()):
        op = expr.get("operator")
        values = expr.get("values") or []
        where = f"{path}.matchExpressions[{i}]"
        if op in ("In", "NotIn"):
            if not values:
                causes.append((f"{where}.values", "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                causes.append((f"{where}.values", "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            causes.append((f"{where}.operator", f'Invalid value: "{op}": not a valid selector operator'))
    return causes


def validate_pdb(new: Obj, old: Obj | None) -> None:
    spec = new.get("spec") or {}
    causes: list[tuple[str, str]] = []
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if min_available is not None and max_unavailable is not None:
        causes.append(("spec", "Invalid value: {...}: minAvailable and maxUnavailable cannot be both set"))
    if min_available is not None:
        causes.extend(_int_or_percent_causes(min_available, "spec.minAvailable"))
    if max_unavailable is not None:
        causes.extend(_int_or_percent_causes(max_unavailable, "spec.maxUnavailable"))
    causes.extend(_selector_causes(spec.get("selector"), "spec.selector"))
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in UNHEALTHY_POLICIES:
        causes.append(("spec.unhealthyPodEvictionPolicy", f'Unsupported value: "{policy}": supported values: "AlwaysAllow", "IfHealthyBudget"'))
    if causes:
        raise errors.invalid("PodDisruptionBudget", new["metadata"].get("name", ""), causes, "policy")


# ================================================================================ shared helpers
def pdb_selector(pdb: Obj) -> LabelSelector | None:
    """None (a null selector) selects nothing; an empty one selects every pod of the namespace."""
    try:
        return selector_from_object((pdb.get("spec") or {}).get("selector"))
    except (KeyError, TypeError, AttributeError):
        return None  # an invalid selector matches no pod


def pdbs_for_pod(store: Any, pod: Obj) -> list[Obj]:
    labels = pod["metadata"].get("labels") or {}
    return [pdb for pdb in store.iter(PDBS, pod["metadata"].get("namespace")) if labels_match(pdb_selector(pdb), labels)]


def _set_status_condition(status: dict[str, Any], cond_status: str, reason: str, message: str, generation: int | None, now_iso: str) -> None:
    """apimeta.SetStatusCondition for the DisruptionAllowed condition (metav1.Condition)."""
    conditions = status.setdefault("conditions", [])
    cond: dict[str, Any] = {"type": DISRUPTION_ALLOWED, "status": cond_status}
    if generation:
        cond["observedGeneration"] = generation
    cond["lastTransitionTime"] = now_iso
    cond["reason"] = reason
    cond["message"] = message
    for i, existing in enumerate(conditions):
        if existing.get("type") == DISRUPTION_ALLOWED:
            if existing.get("status") == cond_status:
                cond["lastTransitionTime"] = existing.get("lastTransitionTime", now_iso)
            conditions[i] = cond
            return
    conditions.append(cond)


def update_disruption_allowed_condition(status: dict[str, Any], now_iso: str) -> None:
    """pdbhelper.UpdateDisruptionAllowedCondition."""
    if int(status.get("disruptionsAllowed") or 0) > 0:
        _set_status_condition(status, "True", SUFFICIENT_PODS, "", status.get("observedGeneration"), now_iso)
    else:
        _set_status_condition(status, "False", INSUFFICIENT_PODS, "", status.get("observedGeneration"), now_iso)


class _ScaleError(Exception):
    """The expected pod count cannot be worked out; ``event`` names the warning the controller records."""

    def __init__(self, message: str, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event


def _replicas(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _api_group(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def _same(obj: Obj | None, ref: dict[str, Any]) -> bool:
    return obj is not None and obj["metadata"].get("uid") == ref.get("uid")


def controller_scale(store: Any, namespace: str, ref: dict[str, Any]) -> tuple[str, int] | None:
    """(uid, spec.replicas) of the workload that sets how many pods a controller ref stands for.

    The finders of the disruption controller, in its order: ReplicationController, Deployment (via
    its ReplicaSet), ReplicaSet not owned by a Deployment, StatefulSet, then any kind with a scale
    subresource. Raises _ScaleError for a kind without one (DaemonSet, Job, Node...).
    """
    kind, api_version, name = ref.get("kind", ""), ref.get("apiVersion", ""), ref.get("name", "")
    group = _api_group(api_version)
    if kind == "ReplicationController" and group == "":
        rc = store.try_get(REPLICATIONCONTROLLERS, namespace, name)
        if _same(rc, ref):
            return rc["metadata"]["uid"], _replicas(rc)
    if kind == "ReplicaSet" and group in ("apps", "extensions"):
        rs = store.try_get(REPLICASETS, namespace, name)
        if _same(rs, ref):
            rs_ref = podutil.controller_ref(rs)
            if rs_ref is None or rs_ref.get("kind") != "Deployment":
                return rs["metadata"]["uid"], _replicas(rs)
            if _api_group(rs_ref.get("apiVersion", "")) in ("apps", "extensions"):
                deployment = store.try_get(DEPLOYMENTS, namespace, rs_ref.get("name", ""))
                if _same(deployment, rs_ref):
                    return deployment["metadata"]["uid"], _replicas(deployment)
    if kind == "StatefulSet" and group == "apps":
        sts = store.try_get(STATEFULSETS, namespace, name)
        if _same(sts, ref):
            return sts["metadata"]["uid"], _replicas(sts)
    # The generic finder: the scale subresource of whatever kind the reference names.
    rt = BY_KIND.get((api_version, kind))
    if rt is None:
        raise _ScaleError(f'no matches for kind "{kind}" in version "{api_version}"')
    if "scale" not in rt.subresources:
        resource = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        raise _ScaleError(f"{resource} does not implement the scale subresource")
    obj = store.try_get(rt.key, namespace, name)
    if _same(obj, ref):
        return obj["metadata"]["uid"], _replicas(obj)
    return None


def expected_scale(store: Any, pods: list[Obj]) -> int:
    """getExpectedScale: the sum of the scales of the controllers of the pods."""
    scales: dict[str, int] = {}
    seen_refs: set[str] = set()
    for pod in pods:
        ref = podutil.controller_ref(pod)
        name = pod["metadata"]["name"]
        if ref is None:
            raise _ScaleError(f'found no controller ref for pod "{name}"', "NoControllerRef")
        if ref.get("uid") in seen_refs:
            continue
        found = controller_scale(store, pod["metadata"].get("namespace", ""), ref)
        if found is None:
            raise _ScaleError(f'found no controllers for pod "{name}"', "NoControllers")
        seen_refs.add(ref.get("uid", ""))
        scales[found[0]] = found[1]
    return sum(scales.values())


def expected_pod_count(store: Any, pdb: Obj, pods: list[Obj]) -> tuple[int, int]:
    """(expectedPods, desiredHealthy) as getExpectedPodCount computes them."""
    spec = pdb.get("spec") or {}
    max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
    if max_unavailable is not None:
        expected = expected_scale(store, pods)
        unavailable = podutil.int_or_percent(max_unavailable, expected, round_up=True)
        return expected, max(0, expected - unavailable)
    if min_available is not None:
        if isinstance(min_available, int):
            return len(pods), min_available
        expected = expected_scale(store, pods)
        return expected, podutil.int_or_percent(min_available, expected, round_up=True)
    return 0, 0


# ========================================================================= disruption controller
class DisruptionController(Controller):
    name = "disruption"
    watches = (PDBS, PODS, REPLICASETS, DEPLOYMENTS, STATEFULSETS, REPLICATIONCONTROLLERS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self._selectors: dict[str, tuple[int, LabelSelector | None]] = {}  # pdb uid -> (generation, selector)

    def _selector(self, pdb: Obj) -> LabelSelector | None:
        uid = pdb["metadata"]["uid"]
        generation = int(pdb["metadata"].get("generation") or 0)
        cached = self._selectors.get(uid)
        if cached is None or cached[0] != generation:
            cached = (generation, pdb_selector(pdb))
            self._selectors[uid] = cached
        return cached[1]

    # ------------------------------------------------------------------------------ informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        obj = new if new is not None else old
        assert obj is not None
        namespace = obj["metadata"].get("namespace", "")
        if type_key == PDBS:
            if event == "DELETED":
                self._selectors.pop(obj["metadata"]["uid"], None)
                return ()
            return [(namespace, obj["metadata"]["name"])]
        if type_key == PODS:
            if event == "MODIFIED" and _pod_fingerprint(old) == _pod_fingerprint(new):
                return ()  # nothing a budget looks at changed
            keys = []
            for pdb in self.store.iter(PDBS, namespace):
                selector = self._selector(pdb)
                if any(p is not None and labels_match(selector, p["metadata"].get("labels")) for p in (old, new)):
                    keys.append((namespace, pdb["metadata"]["name"]))
            return keys
        # A workload scaled: budgets counting by its replicas change their expectedPods.
        if event == "MODIFIED" and _replicas(old or {}) == _replicas(new or {}):
            return ()
        return [(namespace, pdb["metadata"]["name"]) for pdb in self.store.iter(PDBS, namespace)]

    def initial_keys(self) -> Iterable[Hashable]:
        return [(p["metadata"].get("namespace", ""), p["metadata"]["name"]) for p in self.store.iter(PDBS)]

    # ----------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        namespace, name = key
        pdb = self.store.try_get(PDBS, namespace, name)
        if pdb is None:
            return
        selector = self._selector(pdb)
        pods = [p for p in self.store.iter(PODS, namespace) if labels_match(selector, p["metadata"].get("labels"))]
        try:
            expected, desired = expected_pod_count(self.store, pdb, pods)
        except _ScaleError as exc:
            self._fail_safe(pdb, exc)
            return
        now = self.clock.time()
        disrupted, recheck = self._disrupted_pods(pdb, pods, now)
        healthy = self._count_healthy(pods, disrupted, now)
        allowed = healthy - desired
        # A budget matching no pods yet must not allow disruptions when its first pods appear.
        if expected <= 0 or allowed <= 0:
            allowed = 0
        status = copy.deepcopy(pdb.get("status") or {})
        old_status = copy.deepcopy(status)
        status["observedGeneration"] = int(pdb["metadata"].get("generation") or 0)
        status["disruptionsAllowed"] = allowed
        status["currentHealthy"] = healthy
        status["desiredHealthy"] = desired
        status["expectedPods"] = expected
        if disrupted:
            status["disruptedPods"] = disrupted
        else:
            status.pop("disruptedPods", None)
        update_disruption_allowed_condition(status, self.clock.iso())
        self._write(pdb, status, old_status)
        if recheck is not None:
            # Also look again soon, so a test moving the cluster clock past the expiry is noticed.
            self.enqueue_after(key, min(max(0.01, recheck - now), DISRUPTED_RECHECK_MAX_SECONDS))

    def _disrupted_pods(self, pdb: Obj, pods: list[Obj], now: float) -> tuple[dict[str, str], float | None]:
        """buildDisruptedPodMap: evictions not yet followed by a deletion, for two minutes at most."""
        recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
        result: dict[str, str] = {}
        recheck: float | None = None
        if not recorded:
            return result, recheck
        for pod in pods:
            if podutil.is_terminating(pod):
                continue
            name = pod["metadata"]["name"]
            when = recorded.get(name)
            if when is None:
                continue
            expires = (parse_time(when) or now) + DELETION_TIMEOUT_SECONDS
            if expires < now:
                record_event(
                    self.cluster,
                    pod,
                    "Warning",
                    "NotDeleted",
                    f"Pod was expected by PDB {pdb['metadata'].get('namespace')}/{pdb['metadata']['name']} to be deleted but it wasn't",
                    DISRUPTION_CONTROLLER,
                )
                continue
            result[name] = when
            recheck = expires if recheck is None else min(recheck, expires)
        return result, recheck

    @staticmethod
    def _count_healthy(pods: list[Obj], disrupted: dict[str, str], now: float) -> int:
        healthy = 0
        for pod in pods:
            if podutil.is_terminating(pod):
                continue
            when = disrupted.get(pod["metadata"]["name"])
            if when is not None and (parse_time(when) or now) + DELETION_TIMEOUT_SECONDS > now:
                continue  # about to be deleted by an approved eviction
            if podutil.is_ready(pod):
                healthy += 1
        return healthy

    def _fail_safe(self, pdb: Obj, exc: _ScaleError) -> None:
        """failSafe: no disruptions while the expected count is unknown."""
        status = copy.deepcopy(pdb.get("status") or {})
        old_status = copy.deepcopy(status)
        status["disruptionsAllowed"] = 0
        _set_status_condition(status, "False", SYNC_FAILED, exc.message, status.get("observedGeneration"), self.clock.iso())
        if self._write(pdb, status, old_status):
            if exc.event:
                record_event(self.cluster, pdb, "Warning", exc.event, exc.message, DISRUPTION_CONTROLLER)
            record_event(
                self.cluster,
                pdb,
                "Warning",
                "CalculateExpectedPodCountFailed",
                f"Failed to calculate the number of expected pods: {exc.message}",
                DISRUPTION_CONTROLLER,
            )

    def _write(self, pdb: Obj, status: dict[str, Any], old_status: dict[str, Any]) -> bool:
        if _comparable(status) == _comparable(old_status):
            return False

        def apply(obj: Obj) -> None:
            obj["status"] = status

        self.store.mutate(PDBS, pdb["metadata"].get("namespace"), pdb["metadata"]["name"], apply, subresource="status")
        return True


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """The status without condition timestamps (a transition time alone is no change)."""
    out = copy.deepcopy(status)
    for cond in out.get("conditions") or ():
        cond.pop("lastTransitionTime", None)
    return out


def _pod_fingerprint(pod: Obj | None) -> tuple[Any, ...] | None:
    if pod is None:
        return None
    ref = podutil.controller_ref(pod) or {}
    return (
        pod["metadata"].get("labels"),
        bool(pod["metadata"].get("deletionTimestamp")),
        podutil.is_ready(pod),
        pod.get("status", {}).get("phase"),
        ref.get("uid"),
    )


# ====================================================================================== eviction
EVICTION_SUCCESS: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def _too_many_requests(pdb: Obj) -> errors.ApiError:
    status = pdb.get("status") or {}
    message = (
        f"The disruption budget {pdb['metadata']['name']} needs {int(status.get('desiredHealthy') or 0)} "
        f"healthy pods and has {int(status.get('currentHealthy') or 0)} currently"
    )
    return errors.ApiError(
        429, EVICTION_VIOLATES_BUDGET, reason="TooManyRequests", details={"causes": [{"reason": "DisruptionBudget", "message": message}]}
    )


def _still_processing(pdb: Obj) -> errors.ApiError:
    message = f"The disruption budget {pdb['metadata']['name']} is still being processed by the server."
    return errors.ApiError(
        429,
        EVICTION_VIOLATES_BUDGET,
        reason="TooManyRequests",
        details={"causes": [{"reason": "DisruptionBudget", "message": message}], "retryAfterSeconds": 10},
        retry_after=10,
    )


def _pdb_forbidden(pdb: Obj, why: str) -> errors.ApiError:
    name = pdb["metadata"]["name"]
    return errors.ApiError(
        403,
        f'poddisruptionbudgets.policy "{name}" is forbidden: {why}',
        reason="Forbidden",
        details={"name": name, "group": "policy", "kind": "poddisruptionbudgets"},
    )


def _can_ignore_pdb(pod: Obj) -> bool:
    """Terminal, pending or already terminating pods are deleted without asking any budget."""
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed", "Pending", None) or podutil.is_terminating(pod)


def _check_preconditions(pod: Obj, preconditions: dict[str, Any] | None) -> None:
    """The conflicts addConditionAndDeletePod reports for stale preconditions."""
    pre = preconditions or {}
    name = pod["metadata"]["name"]
    uid = pre.get("uid")
    if uid and uid != pod["metadata"]["uid"]:
        raise errors.ApiError(
            409,
            f'Operation cannot be fulfilled on Pod "{name}": the UID in the precondition ({uid}) does not match the UID in record '
            f"({pod['metadata']['uid']}). The object might have been deleted and then recreated",
            reason="Conflict",
            details={"name": name, "group": "", "kind": "Pod"},
        )
    rv = pre.get("resourceVersion")
    if rv and rv != pod["metadata"].get("resourceVersion"):
        raise errors.ApiError(
            409,
            f'Operation cannot be fulfilled on Pod "{name}": the ResourceVersion in the precondition ({rv}) does not match the '
            f"ResourceVersion in record ({pod['metadata'].get('resourceVersion')}). The object might have been modified",
            reason="Conflict",
            details={"name": name, "group": "", "kind": "Pod"},
        )


def _add_condition_and_delete(cluster: Any, pod: Obj, options: dict[str, Any], dry_run: bool) -> None:
    store = cluster.store
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    current = store.get(PODS, namespace, name)
    _check_preconditions(current, options.get("preconditions"))
    if dry_run:
        return
    now_iso = cluster.clock.iso()

    def disruption_target(obj: Obj) -> None:
        podutil.set_condition(
            obj.setdefault("status", {}),
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"},
            now_iso,
        )

    store.mutate(PODS, namespace, name, disruption_target, subresource="status")
    grace = options.get("gracePeriodSeconds")
    store.delete(
        PODS,
        namespace,
        name,
        grace_period=None if grace is None else int(grace),
        propagation=options.get("propagationPolicy"),
        orphan_dependents=options.get("orphanDependents"),
    )


def _check_and_decrement(cluster: Any, pdb: Obj, pod_name: str, dry_run: bool) -> None:
    status = pdb.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
        raise _still_processing(pdb)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise _pdb_forbidden(pdb, "pdb disruptions allowed is negative")
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_POD_SIZE:
        raise _pdb_forbidden(pdb, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if allowed == 0:
        raise _too_many_requests(pdb)
    if dry_run:
        return
    now_iso = cluster.clock.iso()

    def decrement(obj: Obj) -> None:
        new_status = obj.setdefault("status", {})
        new_status["disruptionsAllowed"] = int(new_status.get("disruptionsAllowed") or 0) - 1
        if new_status["disruptionsAllowed"] == 0:
            update_disruption_allowed_condition(new_status, now_iso)
        # Tells the disruption controller the pod is about to go, so it stops counting it healthy.
        disrupted = dict(new_status.get("disruptedPods") or {})
        disrupted[pod_name] = now_iso
        new_status["disruptedPods"] = disrupted

    cluster.store.mutate(PDBS, pdb["metadata"]["namespace"], pdb["metadata"]["name"], decrement, subresource="status")


def evict(cluster: Any, namespace: str, pod_name: str, eviction_body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/namespaces/<ns>/pods/<name>/eviction with a policy/v1 (or v1beta1) Eviction.

    Returns the v1 Status the apiserver answers with (HTTP 201); raises ApiError for 404, 409
    (stale preconditions), 429 (the budget allows no disruption, or its status is stale) and 500
    (more than one budget selects the pod). ``cluster.faults.blocked_pdbs`` makes a budget refuse
    every eviction it is asked about.
    """
    body = eviction_body or {}
    metadata = body.get("metadata") or {}
    if metadata.get("name") != pod_name:
        raise errors.bad_request("name in URL does not match name in Eviction object")
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
    options = body.get("deleteOptions") or {}
    dry_run = bool(options.get("dryRun"))
    store = cluster.store
    with store.lock:
        pod = store.get(PODS, namespace, pod_name)
        if _can_ignore_pdb(pod):
            _add_condition_and_delete(cluster, pod, options, dry_run)
            return copy.deepcopy(EVICTION_SUCCESS)
        pdbs = pdbs_for_pod(store, pod)
        if len(pdbs) > 1:
            raise errors.ApiError(500, MORE_THAN_ONE_PDB)
        if pdbs:
            pdb = pdbs[0]
            if (namespace, pdb["metadata"]["name"]) in cluster.faults.blocked_pdbs:
                raise _too_many_requests(pdb)
            if not _spares_unhealthy_pod(pod, pdb):
                _check_and_decrement(cluster, pdb, pod_name, dry_run)
        _add_condition_and_delete(cluster, pod, options, dry_run)
        return copy.deepcopy(EVICTION_SUCCESS)


def _spares_unhealthy_pod(pod: Obj, pdb: Obj) -> bool:
    """An unready pod is deleted without touching the budget when the policy allows it."""
    if podutil.is_ready(pod):
        return False
    if (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return True
    status = pdb.get("status") or {}
    desired = int(status.get("desiredHealthy") or 0)
    return int(status.get("currentHealthy") or 0) >= desired and desired > 0


CONTROLLERS = [DisruptionController]
DEFAULTERS = {PDBS: default_pdb}
VALIDATORS = {PDBS: validate_pdb}
