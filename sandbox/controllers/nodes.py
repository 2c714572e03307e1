"""Where pods run: kube-scheduler, the kubelets, the node lifecycle controller and the pod GC.

- ``Scheduler`` binds pending pods to a feasible node (cordon, taints, nodeSelector, required node
  affinity, pod capacity), least loaded first, as kube-scheduler's default plugins do.
- ``Kubelet`` stands for every node's kubelet: it starts bound pods, runs Job pods to completion and
  finishes graceful deletions; nothing progresses on a node that is not Ready.
- ``NodeLifecycle`` keeps the condition taints (not-ready, unreachable, unschedulable) in step with
  each node, marks pods not ready when their node stops reporting, and evicts pods that do not
  tolerate a NoExecute taint (after their tolerationSeconds), as the taint eviction controller does.
- ``PodGC`` force-deletes the pods of a Node object that was deleted.
"""
from __future__ import annotations

import hashlib
from typing import Any, Hashable, Iterable

from .. import podutil
from ..config import EXIT_CODE_ANNOTATION, NEVER_READY_ANNOTATION, RUN_SECONDS_ANNOTATION
from ..events import record_event
from ..resources import NODES, PODS
from .base import Controller

Obj = dict[str, Any]
PodKey = tuple[str, str]  # (namespace, name)

DEFAULT_SCHEDULER = "default-scheduler"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
CONDITION_TAINT_KEYS = frozenset({TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE})
# What the DefaultTolerationSeconds admission plugin gives every pod for not-ready / unreachable.
DEFAULT_NOT_READY_TOLERATION_SECONDS = 300
NODE_STATUS_UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
# How the scheduler spells "this filter rejected the node" in its FailedScheduling message.
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"
JOB_RESTART_POLICIES = frozenset({"Never", "OnFailure"})


# Setting ``config.extra["record_events"] = False`` skips these controllers' Events (the scale
# benchmark would otherwise hold one Scheduled and one Started Event per pod).
RECORD_EVENTS_OPTION = "record_events"


def _event(cluster: Any, obj: Obj, event_type: str, reason: str, message: str, component: str) -> None:
    if cluster.config.extra.get(RECORD_EVENTS_OPTION, True):
        record_event(cluster, obj, event_type, reason, message, component)


# Deadlines are kept in cluster-clock seconds; timers wake at least this often so that a test
# advancing the clock (Clock.advance) sees a long wait end within about a second of wall time.
MAX_TIMER_SECONDS = 1.0


def _timer_delay(seconds: float) -> float:
    return min(max(0.0, seconds), MAX_TIMER_SECONDS)


# ------------------------------------------------------------------------------------ node helpers
def node_ready_status(node: Obj) -> str:
    """The Ready condition's status: "True", "False" or "Unknown" (no condition yet is Unknown)."""
    cond = podutil.condition(node, "Ready")
    return cond.get("status", "Unknown") if cond else "Unknown"


def desired_condition_taints(node: Obj, now_iso: str, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The taints the node lifecycle controller keeps on a node, given its Ready state and cordon.

    NoExecute taints carry ``timeAdded`` (the taint eviction controller counts tolerationSeconds
    from it); an existing taint keeps its original timeAdded.
    """
    ready = node_ready_status(node)
    wanted: list[tuple[str, str]] = []
    if ready == "False":
        wanted += [(TAINT_NOT_READY, "NoSchedule"), (TAINT_NOT_READY, "NoExecute")]
    elif ready == "Unknown":
        wanted += [(TAINT_UNREACHABLE, "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute")]
    if node.get("spec", {}).get("unschedulable"):
        wanted.append((TAINT_UNSCHEDULABLE, "NoSchedule"))
    existing = {(t.get("key"), t.get("effect")): t for t in current}
    out = []
    for key, effect in wanted:
        if (key, effect) in existing:
            out.append(existing[(key, effect)])
            continue
        taint: dict[str, Any] = {"key": key, "effect": effect}
        if effect == "NoExecute":
            taint["timeAdded"] = now_iso
        out.append(taint)
    return out


def toleration_matches(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint: empty effect matches every effect, empty key with Exists every key."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    if not key:
        return False  # Equal with no key is invalid; it tolerates nothing
    return (toleration.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


def _implicit_taints(node: Obj) -> list[dict[str, Any]]:
    """Taints the node has or is about to get from its Ready condition.

    The lifecycle controller writes them moments after the kubelet reports, so the scheduler treats
    a node that is not Ready as tainted even before that write (a real scheduler never sees the gap
    because the kubelet registers with the not-ready taint).
    """
    taints = list(node.get("spec", {}).get("taints") or ())
    ready = node_ready_status(node)
    if ready != "True":
        key = TAINT_NOT_READY if ready == "False" else TAINT_UNREACHABLE
        if not any(t.get("key") == key and t.get("effect") == "NoSchedule" for t in taints):
            taints.append({"key": key, "effect": "NoSchedule"})
    return taints


def _expression_matches(expr: dict[str, Any], value: str | None) -> bool:
    operator = expr.get("operator")
    values = expr.get("values") or []
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt"):
        try:
            actual, bound = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return actual > bound if operator == "Gt" else actual < bound
    return False


def node_selector_term_matches(term: dict[str, Any], node: Obj) -> bool:
    """A NodeSelectorTerm: all its expressions and fields hold; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    for expr in expressions:
        if not _expression_matches(expr, labels.get(expr.get("key"))):
            return False
    for expr in fields:
        value = node["metadata"]["name"] if expr.get("key") == "metadata.name" else None
        if not _expression_matches(expr, value):
            return False
    return True


def _required_node_affinity(pod: Obj) -> list[dict[str, Any]] | None:
    affinity = (pod.get("spec", {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return None
    return list(required.get("nodeSelectorTerms") or [])


def pod_matches_node_selection(pod: Obj, node: Obj) -> bool:
    """spec.nodeSelector and required node affinity (terms ORed), as the NodeAffinity plugin checks."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod.get("spec", {}).get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    terms = _required_node_affinity(pod)
    if terms is None:
        return True
    return any(node_selector_term_matches(term, node) for term in terms)


def _named_nodes(pod: Obj) -> set[str] | None:
    """Node names the pod's required affinity pins it to (DaemonSet pods), or None when unpinned.

    Mirrors the NodeAffinity plugin's PreFilterResult: only when every term has a
    ``metadata.name In`` field requirement can the search skip the other nodes.
    """
    terms = _required_node_affinity(pod)
    if not terms:
        return None
    names: set[str] = set()
    for term in terms:
        pinned = [f for f in term.get("matchFields") or [] if f.get("key") == "metadata.name" and f.get("operator") == "In"]
        if not pinned:
            return None
        names.update(pinned[0].get("values") or [])
    return names


def _allocatable_pods(node: Obj, default: int) -> int:
    raw = (node.get("status", {}).get("allocatable") or {}).get("pods")
    try:
        return int(raw) if raw is not None else default
    except (TypeError, ValueError):
        return default


def is_job_pod(pod: Obj) -> bool:
    return pod.get("spec", {}).get("restartPolicy") in JOB_RESTART_POLICIES


def _pod_key(obj: Obj) -> PodKey:
    m = obj["metadata"]
    return m.get("namespace", ""), m["name"]


def _wants_default_scheduler(pod: Obj) -> bool:
    return (pod.get("spec", {}).get("schedulerName") or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER


def _occupies_node(pod: Obj | None) -> str | None:
    """The node a pod takes a slot on: bound and not terminal (the scheduler's cache ignores
    Succeeded and Failed pods)."""
    if pod is None or podutil.is_terminal(pod):
        return None
    return pod.get("spec", {}).get("nodeName") or None


# ------------------------------------------------------------------------------------- resources
_QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 10**-9, "u": 10**-6, "m": 10**-3, "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def parse_quantity(value: Any) -> float:
    """A resource.Quantity ("250m", "1.5", "512Mi", "1e3") as a plain number (cores, bytes)."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"):
        if text.endswith(suffix) and text[: -len(suffix)]:
            try:
                return float(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        return 0.0


def pod_requests(pod: Obj) -> tuple[float, float]:
    """(cpu cores, memory bytes) the pod requests, as NodeResourcesFit computes them.

    Regular containers and sidecars (restartable init containers) add up; a one-shot init
    container needs its request only while it runs, so the larger of the two counts; overhead adds.
    """
    spec = pod.get("spec", {})

    def requests(container: dict[str, Any]) -> tuple[float, float]:
        req = (container.get("resources") or {}).get("requests") or {}
        return parse_quantity(req.get("cpu")), parse_quantity(req.get("memory"))

    cpu = memory = 0.0
    sidecar_cpu = sidecar_memory = 0.0
    init_cpu = init_memory = 0.0
    for container in spec.get("initContainers") or ():
        c, m = requests(container)
        if container.get("restartPolicy") == "Always":
            sidecar_cpu, sidecar_memory = sidecar_cpu + c, sidecar_memory + m
        else:
            init_cpu, init_memory = max(init_cpu, sidecar_cpu + c), max(init_memory, sidecar_memory + m)
    for container in spec.get("containers") or ():
        c, m = requests(container)
        cpu, memory = cpu + c, memory + m
    cpu, memory = max(cpu + sidecar_cpu, init_cpu), max(memory + sidecar_memory, init_memory)
    overhead = spec.get("overhead") or {}
    return cpu + parse_quantity(overhead.get("cpu")), memory + parse_quantity(overhead.get("memory"))


def _allocatable(node: Obj, resource: str) -> float | None:
    raw = (node.get("status", {}).get("allocatable") or {}).get(resource)
    return None if raw is None else parse_quantity(raw)


# ------------------------------------------------------------------------------------- scheduler
class Scheduler(Controller):
    """kube-scheduler with the default profile's filters that matter here, spreading pods.

    Filters, in the default profile's order: NodeUnschedulable, TaintToleration (NoSchedule and
    NoExecute), NodeAffinity (nodeSelector, required affinity), NodeResourcesFit (pods, cpu,
    memory requests). Among feasible nodes the one holding the fewest pods wins. Nodes are kept in
    buckets by pod count, so a pod usually finds its node after looking at a handful of them,
    however large the cluster (the real scheduler samples a share of the nodes to the same end).
    """

    name = "scheduler"
    watches = (PODS, NODES)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        # Node cache: the stored node objects (never mutated in place), and what each node holds.
        self._nodes: dict[str, Obj] = {}
        self._pods_on: dict[str, dict[PodKey, tuple[float, float]]] = {}  # node -> pod -> requests
        self._requested: dict[str, list[float]] = {}  # node -> [cpu, memory] requested
        # Nodes by the number of pods they hold; insertion order rotates ties (round-robin).
        self._buckets: list[dict[str, None]] = []
        self._bucket_of: dict[str, int] = {}
        # Pods that did not fit anywhere; retried when nodes change or capacity frees up.
        self._unschedulable: dict[PodKey, str] = {}  # -> last FailedScheduling message

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == NODES:
            return self._on_node(event, old, new)
        return self._on_pod(event, old, new)

    def _on_node(self, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if event == "DELETED" or new is None:
            name = (old or new or {}).get("metadata", {}).get("name", "")
            self._nodes.pop(name, None)
            self._unbucket(name)
            return ()
        name = new["metadata"]["name"]
        known = name in self._nodes
        self._nodes[name] = new
        if not known:
            self._bucket(name)
        if self._unschedulable and (old is None or self._may_fit_more(old, new)):
            return [("retry",)]
        return ()

    def _bucket(self, name: str) -> None:
        count = len(self._pods_on.get(name, ()))
        while len(self._buckets) <= count:
            self._buckets.append({})
        self._buckets[count][name] = None
        self._bucket_of[name] = count

    def _unbucket(self, name: str) -> None:
        count = self._bucket_of.pop(name, None)
        if count is not None:
            del self._buckets[count][name]

    @staticmethod
    def _may_fit_more(old: Obj, new: Obj) -> bool:
        """Whether a node update could let a pending pod in (the scheduler's queueing hints)."""
        return (
            podutil.is_node_ready(new) and not podutil.is_node_ready(old)
            or bool(old.get("spec", {}).get("unschedulable")) and not new.get("spec", {}).get("unschedulable")
            or old.get("spec", {}).get("taints") != new.get("spec", {}).get("taints")
            or old["metadata"].get("labels") != new["metadata"].get("labels")
            or old.get("status", {}).get("allocatable") != new.get("status", {}).get("allocatable")
        )

    def _on_pod(self, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        obj = new if new is not None else old
        assert obj is not None
        key = _pod_key(obj)
        current = None if event == "DELETED" else new
        old_node = _occupies_node(old)
        new_node = _occupies_node(current)
        freed = False
        if old_node != new_node:
            if old_node is not None:
                self._release(old_node, key)
                freed = True
            if new_node is not None and current is not None:
                self._occupy(new_node, key, pod_requests(current))
        out: list[Hashable] = []
        if current is None or current.get("spec", {}).get("nodeName"):
            self._unschedulable.pop(key, None)
        elif self._needs_scheduling(current):
            out.append(("pod",) + key)
        if freed and self._unschedulable:
            out.append(("retry",))
        return out

    def _occupy(self, node: str, key: PodKey, requests: tuple[float, float]) -> None:
        self._unbucket(node)
        self._pods_on.setdefault(node, {})[key] = requests
        totals = self._requested.setdefault(node, [0.0, 0.0])
        totals[0] += requests[0]
        totals[1] += requests[1]
        if node in self._nodes:
            self._bucket(node)

    def _release(self, node: str, key: PodKey) -> None:
        pods = self._pods_on.get(node)
        if pods is None or key not in pods:
            return
        self._unbucket(node)
        cpu, memory = pods.pop(key)
        totals = self._requested[node]
        totals[0] -= cpu
        totals[1] -= memory
        if not pods:
            del self._pods_on[node]
            del self._requested[node]
        if node in self._nodes:
            self._bucket(node)

    @staticmethod
    def _needs_scheduling(pod: Obj) -> bool:
        return (
            not pod.get("spec", {}).get("nodeName")
            and not podutil.is_terminating(pod)
            and not podutil.is_terminal(pod)
            and _wants_default_scheduler(pod)
        )

    def initial_keys(self) -> Iterable[Hashable]:
        # Objects created before the manager started were already seen by keys_for (the listener is
        # registered with the cluster); pods waiting for a node are queued again here.
        return [("pod",) + _pod_key(p) for p in self.store.iter(PODS) if self._needs_scheduling(p)]

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        if key[0] == "retry":
            for namespace, name in list(self._unschedulable):
                self.enqueue(("pod", namespace, name))
            return
        _, namespace, name = key
        pod = self.store.try_get(PODS, namespace, name)
        if pod is None or not self._needs_scheduling(pod):
            self._unschedulable.pop((namespace, name), None)
            return
        if pod["spec"].get("schedulingGates"):
            # Gated pods wait; removing the gates is a pod update, which queues the pod again.
            self._set_scheduled_false(pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")
            return
        node_name, message = self._find_node(pod)
        if node_name is None:
            self._mark_unschedulable(pod, message)
        else:
            self._bind(pod, node_name)

    def _candidates(self, pod: Obj) -> tuple[Iterable[str], int]:
        """Nodes to try, least loaded first, and how many nodes were ruled out without a look."""
        pinned = _named_nodes(pod)
        if pinned is not None:
            # NodeAffinity's PreFilterResult: a DaemonSet pod only ever looks at its own node.
            present = sorted((n for n in pinned if n in self._nodes), key=lambda n: self._bucket_of.get(n, 0))
            return present, len(self._nodes) - len(present)
        return (name for bucket in self._buckets for name in list(bucket)), 0

    def _find_node(self, pod: Obj) -> tuple[str | None, str]:
        total = len(self._nodes)
        if total == 0:
            return None, "no nodes available to schedule pods"
        candidates, ruled_out = self._candidates(pod)
        tolerations = list(pod.get("spec", {}).get("tolerations") or [])
        requests = pod_requests(pod)
        reasons: dict[str, int] = {REASON_AFFINITY: ruled_out} if ruled_out else {}
        for name in candidates:
            rejections = self._filter(pod, self._nodes[name], tolerations, requests)
            if not rejections:
                return name, ""
            for reason in rejections:
                reasons[reason] = reasons.get(reason, 0) + 1
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return None, (
            f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are available: "
            f"{total} Preemption is not helpful for scheduling."
        )

    def _filter(self, pod: Obj, node: Obj, tolerations: list[dict[str, Any]], requests: tuple[float, float]) -> list[str]:
        """Why the node is rejected: the first filter plugin that fails, in the default profile's
        order (NodeResourcesFit names every resource that is short); empty when the pod fits."""
        unschedulable_taint = {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}
        if node.get("spec", {}).get("unschedulable") and not tolerates(tolerations, unschedulable_taint):
            return [REASON_UNSCHEDULABLE]
        for taint in _implicit_taints(node):
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not tolerates(tolerations, taint):
                return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
        if not pod_matches_node_selection(pod, node):
            return [REASON_AFFINITY]
        name = node["metadata"]["name"]
        short = []
        if len(self._pods_on.get(name, ())) >= _allocatable_pods(node, self.config.max_pods_per_node):
            short.append(REASON_TOO_MANY_PODS)
        requested = self._requested.get(name, (0.0, 0.0))
        for index, resource in enumerate(("cpu", "memory")):
            capacity = _allocatable(node, resource)
            # A tiny epsilon: requests add up as floats ("100m" three times).
            if requests[index] and capacity is not None and requested[index] + requests[index] > capacity + 1e-9:
                short.append(f"Insufficient {resource}")
        return short

    def _bind(self, pod: Obj, node_name: str) -> None:
        namespace, name = _pod_key(pod)

        def assign(obj: Obj) -> None:
            obj["spec"]["nodeName"] = node_name

        def scheduled(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            podutil.set_condition(status, {"type": "PodScheduled", "status": "True", "lastProbeTime": None}, self.clock.iso())
            for cond in status.get("conditions") or ():
                if cond.get("type") == "PodScheduled":
                    cond.pop("reason", None)
                    cond.pop("message", None)

        # The binding subresource sets spec.nodeName and the PodScheduled condition together.
        self.store.mutate(PODS, namespace, name, assign)
        self.store.mutate(PODS, namespace, name, scheduled, subresource="status")
        self._unschedulable.pop((namespace, name), None)
        _event(self.cluster, pod, "Normal", "Scheduled", f"Successfully assigned {namespace}/{name} to {node_name}", DEFAULT_SCHEDULER)

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        key = _pod_key(pod)
        previous = self._unschedulable.get(key)
        self._unschedulable[key] = message
        self._set_scheduled_false(pod, "Unschedulable", message)
        if previous != message:
            _event(self.cluster, pod, "Warning", "FailedScheduling", message, DEFAULT_SCHEDULER)

    def _set_scheduled_false(self, pod: Obj, reason: str, message: str) -> None:
        cond = podutil.condition(pod, "PodScheduled")
        if cond and cond.get("status") == "False" and cond.get("reason") == reason and cond.get("message") == message:
            return  # unchanged: no write, so no event loop

        def not_scheduled(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            podutil.set_condition(
                status,
                {"type": "PodScheduled", "status": "False", "reason": reason, "message": message, "lastProbeTime": None},
                self.clock.iso(),
            )

        namespace, name = _pod_key(pod)
        self.store.mutate(PODS, namespace, name, not_scheduled, subresource="status")


# --------------------------------------------------------------------------------------- kubelet
def _fake_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _image_id(image: str) -> str:
    """``<repository>@<digest>`` as a runtime reports it: an image pinned by digest runs exactly that
    digest; a tag runs whatever the (simulated) registry serves for it."""
    repository, _, pinned = image.partition("@")
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    return f"{repository}@{pinned}" if pinned else f"{repository}@sha256:{_fake_digest(image)}"


def _container_id(pod_uid: str, container: str, attempt: int = 0) -> str:
    return "containerd://" + _fake_digest(f"{pod_uid}/{container}/{attempt}")


def _node_internal_ip(node: Obj) -> str:
    for address in node.get("status", {}).get("addresses") or ():
        if address.get("type") == "InternalIP":
            return address.get("address", "")
    return ""


class Kubelet(Controller):
    """Every node's kubelet: pod startup, Job pods running to completion, graceful termination."""

    name = "kubelet"
    watches = (PODS, NODES)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        # Per pod uid: when its containers are up, when a Job pod's container exits, when a
        # terminating pod's containers have stopped (cluster clock seconds).
        self._start_at: dict[str, float] = {}
        self._finish_at: dict[str, float] = {}
        self._stop_at: dict[str, float] = {}
        self._next_ip: dict[str, int] = {}  # node -> next host number in its pod CIDR

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == NODES:
            if new is not None and event != "DELETED" and podutil.is_node_ready(new) and not (old and podutil.is_node_ready(old)):
                # The kubelet is back (or just registered): everything it holds moves on.
                return [("pod",) + _pod_key(p) for p in self.store.pods_on_node(new["metadata"]["name"])]
            if event == "DELETED" and old is not None:
                self._next_ip.pop(old["metadata"]["name"], None)
            return ()
        if event == "DELETED":
            uid = (old or new or {}).get("metadata", {}).get("uid")
            for table in (self._start_at, self._finish_at, self._stop_at):
                table.pop(uid, None)
            return ()
        if new is None or not new.get("spec", {}).get("nodeName"):
            return ()
        if podutil.is_terminal(new) and not podutil.is_terminating(new):
            return ()
        return [("pod",) + _pod_key(new)]

    def initial_keys(self) -> Iterable[Hashable]:
        keys: list[Hashable] = []
        for node in self.store.iter(NODES):
            keys.extend(("pod",) + _pod_key(p) for p in self.store.pods_on_node(node["metadata"]["name"]))
        return keys

    def sync(self, key: Any) -> None:
        _, namespace, name = key
        pod = self.store.try_get(PODS, namespace, name)
        if pod is None or not pod.get("spec", {}).get("nodeName"):
            return
        node = self.store.try_get(NODES, None, pod["spec"]["nodeName"])
        if node is None or not podutil.is_node_ready(node):
            return  # no kubelet reporting: the pod stays as it was
        now = self.clock.time()
        if podutil.is_terminating(pod):
            self._terminate(pod, now)
        elif podutil.is_terminal(pod):
            return
        elif pod.get("status", {}).get("phase") == "Running":
            if is_job_pod(pod):
                self._maybe_finish(pod, now)
        else:
            self._maybe_start(pod, node, now)

    # ---------------------------------------------------------------------------------- phases
    def _maybe_start(self, pod: Obj, node: Obj, now: float) -> None:
        uid = pod["metadata"]["uid"]
        namespace, name = _pod_key(pod)
        if uid not in self._start_at:
            self._start_at[uid] = now + self.config.pod_start_seconds
            if not pod.get("status", {}).get("startTime"):
                self._write_status(pod, lambda status: self._pending_status(pod, node, status))
        due = self._start_at[uid]
        if now < due:
            self.enqueue_after(("pod", namespace, name), _timer_delay(due - now))
            return
        self._write_status(pod, lambda status: self._running_status(pod, node, status))
        _event(self.cluster, pod, "Normal", "Started", "Started container " + self._first_container(pod), "kubelet")
        if is_job_pod(pod):
            run = self._run_seconds(pod)
            if run is not None:
                self._finish_at[uid] = now + run
                self.enqueue_after(("pod", namespace, name), _timer_delay(run))

    def _maybe_finish(self, pod: Obj, now: float) -> None:
        run = self._run_seconds(pod)
        if run is None:
            return  # "forever"
        uid = pod["metadata"]["uid"]
        due = self._finish_at.setdefault(uid, now + run)
        if now < due:
            self.enqueue_after(("pod",) + _pod_key(pod), _timer_delay(due - now))
            return
        exit_code = self._exit_code(pod)
        self._write_status(pod, lambda status: self._finished_status(pod, status, exit_code))

    def _terminate(self, pod: Obj, now: float) -> None:
        uid = pod["metadata"]["uid"]
        namespace, name = _pod_key(pod)
        if uid not in self._stop_at:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            grace = float(grace) if grace is not None else float(self.config.pod_termination_seconds)
            self._stop_at[uid] = now + min(grace, self.config.pod_termination_seconds)
            if podutil.is_ready(pod) or (podutil.condition(pod, "ContainersReady") or {}).get("status") == "True":
                self._write_status(pod, self._not_ready_while_terminating)
            _event(self.cluster, pod, "Normal", "Killing", "Stopping container " + self._first_container(pod), "kubelet")
        due = self._stop_at[uid]
        if now < due:
            self.enqueue_after(("pod", namespace, name), _timer_delay(due - now))
            return
        # Containers are gone: the kubelet's final delete (grace 0) removes the object.
        self.store.remove_now(PODS, namespace, name)

    # ---------------------------------------------------------------------------------- helpers
    def _write_status(self, pod: Obj, fill: Any) -> None:
        namespace, name = _pod_key(pod)

        def apply(obj: Obj) -> None:
            fill(obj.setdefault("status", {}))

        self.store.mutate(PODS, namespace, name, apply, subresource="status")

    @staticmethod
    def _first_container(pod: Obj) -> str:
        containers = pod.get("spec", {}).get("containers") or [{}]
        return containers[0].get("name", "")

    def _run_seconds(self, pod: Obj) -> float | None:
        raw = (pod["metadata"].get("annotations") or {}).get(RUN_SECONDS_ANNOTATION)
        if raw is None:
            return float(self.config.job_run_seconds)
        if str(raw).strip().lower() == "forever":
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            return float(self.config.job_run_seconds)

    @staticmethod
    def _exit_code(pod: Obj) -> int:
        raw = (pod["metadata"].get("annotations") or {}).get(EXIT_CODE_ANNOTATION, "0")
        try:
            return int(raw)
        except ValueError:
            return 1

    @staticmethod
    def _never_ready(pod: Obj) -> bool:
        return str((pod["metadata"].get("annotations") or {}).get(NEVER_READY_ANNOTATION, "")).lower() == "true"

    def _pod_ip(self, pod: Obj, node: Obj) -> str:
        host_ip = _node_internal_ip(node)
        if pod.get("spec", {}).get("hostNetwork"):
            return host_ip
        node_name = node["metadata"]["name"]
        cidr = node.get("spec", {}).get("podCIDR") or ""
        number = self._next_ip.get(node_name, 0)
        self._next_ip[node_name] = number + 1
        if cidr.endswith(".0/24"):
            return f"{cidr[:-5]}.{number % 253 + 2}"
        index = int(_fake_digest(node_name)[:4], 16)
        return f"10.{100 + index % 100}.{(index >> 7) % 256}.{number % 253 + 2}"

    def _set_conditions(self, status: dict[str, Any], values: list[tuple[str, str, str | None, str | None]]) -> None:
        """Upsert (type, status, reason, message) conditions, in the order the kubelet lists them."""
        now = self.clock.iso()
        for cond_type, value, reason, message in values:
            podutil.set_condition(status, {"type": cond_type, "status": value, "lastProbeTime": None}, now)
            for existing in status["conditions"]:
                if existing["type"] != cond_type:
                    continue
                for field_name, field_value in (("reason", reason), ("message", message)):
                    if field_value:
                        existing[field_name] = field_value
                    else:
                        existing.pop(field_name, None)
        order = {"PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2, "ContainersReady": 3, "PodScheduled": 4}
        status["conditions"].sort(key=lambda c: order.get(c.get("type"), 9))

    @staticmethod
    def _unready_message(status: dict[str, Any]) -> str:
        names = [c.get("name", "") for c in status.get("containerStatuses") or () if not c.get("ready")]
        return "containers with unready status: [" + " ".join(names) + "]"

    def _pending_status(self, pod: Obj, node: Obj, status: dict[str, Any]) -> None:
        spec = pod.get("spec", {})
        host_ip = _node_internal_ip(node)
        status["phase"] = "Pending"
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["startTime"] = self.clock.iso()
        status["containerStatuses"] = [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
            }
            for c in spec.get("containers") or ()
        ]
        init_names = [c.get("name", "") for c in spec.get("initContainers") or ()]
        unready = self._unready_message(status)
        self._set_conditions(
            status,
            [
                ("PodReadyToStartContainers", "False", None, None),
                (
                    "Initialized",
                    "False" if init_names else "True",
                    "ContainersNotInitialized" if init_names else None,
                    "containers with incomplete status: [" + " ".join(init_names) + "]" if init_names else None,
                ),
                ("Ready", "False", "ContainersNotReady", unready),
                ("ContainersReady", "False", "ContainersNotReady", unready),
                ("PodScheduled", "True", None, None),
            ],
        )

    def _running_status(self, pod: Obj, node: Obj, status: dict[str, Any]) -> None:
        spec = pod.get("spec", {})
        uid = pod["metadata"]["uid"]
        now_iso = self.clock.iso()
        ready = not self._never_ready(pod)
        host_ip = status.get("hostIP") or _node_internal_ip(node)
        pod_ip = status.get("podIP") or self._pod_ip(pod, node)
        status["phase"] = "Running"
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
        status.setdefault("startTime", now_iso)
        init_statuses = []
        for c in spec.get("initContainers") or ():
            cname = c.get("name", "")
            base = {
                "name": cname,
                "image": c.get("image", ""),
                "imageID": _image_id(c.get("image", "")),
                "containerID": _container_id(uid, cname),
                "restartCount": 0,
                "lastState": {},
            }
            if c.get("restartPolicy") == "Always":  # a sidecar keeps running
                base.update(ready=ready, started=True, state={"running": {"startedAt": now_iso}})
            else:
                base.update(
                    ready=True,
                    started=False,
                    state={"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now_iso, "finishedAt": now_iso, "containerID": base["containerID"]}},
                )
            init_statuses.append(base)
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        status["containerStatuses"] = [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "imageID": _image_id(c.get("image", "")),
                "containerID": _container_id(uid, c.get("name", "")),
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now_iso}},
                "lastState": {},
            }
            for c in spec.get("containers") or ()
        ]
        ready_value = "True" if ready else "False"
        not_ready_reason = None if ready else "ContainersNotReady"
        not_ready_message = None if ready else self._unready_message(status)
        self._set_conditions(
            status,
            [
                ("PodReadyToStartContainers", "True", None, None),
                ("Initialized", "True", None, None),
                ("Ready", ready_value, not_ready_reason, not_ready_message),
                ("ContainersReady", ready_value, not_ready_reason, not_ready_message),
                ("PodScheduled", "True", None, None),
            ],
        )

    def _finished_status(self, pod: Obj, status: dict[str, Any], exit_code: int) -> None:
        now_iso = self.clock.iso()
        succeeded = exit_code == 0
        status["phase"] = "Succeeded" if succeeded else "Failed"
        for cs in status.get("containerStatuses") or ():
            started = (cs.get("state", {}).get("running") or {}).get("startedAt", now_iso)
            cs["ready"] = False
            cs["started"] = False
            cs["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if succeeded else "Error",
                    "startedAt": started,
                    "finishedAt": now_iso,
                    "containerID": cs.get("containerID", ""),
                }
            }
        reason = "PodCompleted" if succeeded else "PodFailed"
        self._set_conditions(
            status,
            [
                ("PodReadyToStartContainers", "False", None, None),
                ("Initialized", "True", None, None),
                ("Ready", "False", reason, None),
                ("ContainersReady", "False", reason, None),
                ("PodScheduled", "True", None, None),
            ],
        )

    def _not_ready_while_terminating(self, status: dict[str, Any]) -> None:
        for cs in status.get("containerStatuses") or ():
            cs["ready"] = False
        unready = self._unready_message(status)
        self._set_conditions(
            status, [("Ready", "False", "ContainersNotReady", unready), ("ContainersReady", "False", "ContainersNotReady", unready)]
        )


# ------------------------------------------------------------------------------ node lifecycle
def mark_node_not_ready(cluster: Any, node_name: str, reason: str = "NodeStatusUnknown") -> Obj | None:
    """What the node lifecycle controller writes when a kubelet stops posting status.

    Ready and the pressure conditions go Unknown; the lifecycle controller then taints the node
    unreachable and marks its pods not ready. Returns the node, or None when it does not exist.
    """
    with cluster.store.lock:
        if cluster.store.try_get(NODES, None, node_name) is None:
            return None
        now_iso = cluster.clock.iso()

        def unknown(node: Obj) -> None:
            status = node.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            if not any(c.get("type") == "Ready" for c in conditions):
                conditions.append({"type": "Ready"})
            for cond in conditions:
                if cond.get("type") in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                    if cond.get("status") != "Unknown":
                        cond["lastTransitionTime"] = now_iso
                    cond["status"] = "Unknown"
                    cond["reason"] = reason
                    cond["message"] = NODE_STATUS_UNKNOWN_MESSAGE
                    cond.setdefault("lastHeartbeatTime", now_iso)

        return cluster.store.mutate(NODES, None, node_name, unknown, subresource="status")


def mark_node_ready(cluster: Any, node_name: str) -> Obj | None:
    """What a kubelet posts once the node is up: Ready True and no pressure."""
    with cluster.store.lock:
        if cluster.store.try_get(NODES, None, node_name) is None:
            return None
        now_iso = cluster.clock.iso()
        healthy = {
            "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
            "MemoryPressure": ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        }

        def ready(node: Obj) -> None:
            status = node.setdefault("status", {})
            for cond_type, (value, reason, message) in healthy.items():
                podutil.set_condition(
                    status,
                    {"type": cond_type, "status": value, "reason": reason, "message": message, "lastHeartbeatTime": now_iso},
                    now_iso,
                )

        return cluster.store.mutate(NODES, None, node_name, ready, subresource="status")


def _toleration_seconds_for(pod: Obj, taint: dict[str, Any]) -> float | None:
    """How long a pod may stay on a node with this NoExecute taint: 0 = evict now, None = forever.

    Pods admitted without tolerations for not-ready / unreachable get the DefaultTolerationSeconds
    admission plugin's 300 s, as every pod on a real cluster does.
    """
    matching = [t for t in pod.get("spec", {}).get("tolerations") or () if toleration_matches(t, taint)]
    if not matching:
        if taint.get("key") in (TAINT_NOT_READY, TAINT_UNREACHABLE):
            return float(DEFAULT_NOT_READY_TOLERATION_SECONDS)
        return 0.0
    seconds = [t.get("tolerationSeconds") for t in matching]
    if any(s is None for s in seconds):
        return None
    return float(min(max(0, int(s)) for s in seconds))  # type: ignore[arg-type]


class NodeLifecycle(Controller):
    """Condition taints, marking pods not ready, and NoExecute taint eviction."""

    name = "node-lifecycle"
    watches = (NODES, PODS)

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if event == "DELETED" or new is None:
            return ()
        if type_key == PODS:
            return self._pod_arrived(old, new)
        name = new["metadata"]["name"]
        keys: list[Hashable] = [("taints", name)]
        was_ready = old is not None and podutil.is_node_ready(old)
        if was_ready and not podutil.is_node_ready(new):
            keys.append(("pods-not-ready", name))
        old_taints = (old or {}).get("spec", {}).get("taints") or []
        new_taints = new.get("spec", {}).get("taints") or []
        if any(t.get("effect") == "NoExecute" for t in new_taints) and new_taints != old_taints:
            keys.append(("evict", name))
        return keys

    def _pod_arrived(self, old: Obj | None, new: Obj) -> Iterable[Hashable]:
        """A pod bound to a node that already has NoExecute taints is judged by them too."""
        node_name = new.get("spec", {}).get("nodeName")
        if not node_name or (old is not None and old.get("spec", {}).get("nodeName") == node_name):
            return ()
        node = self.store.try_get(NODES, None, node_name)
        if node is not None and any(t.get("effect") == "NoExecute" for t in node.get("spec", {}).get("taints") or ()):
            return [("evict", node_name)]
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        keys: list[Hashable] = []
        for node in self.store.iter(NODES):
            name = node["metadata"]["name"]
            keys.append(("taints", name))
            if any(t.get("effect") == "NoExecute" for t in node.get("spec", {}).get("taints") or ()):
                keys.append(("evict", name))
        return keys

    def sync(self, key: Any) -> None:
        kind, name = key
        node = self.store.try_get(NODES, None, name)
        if node is None:
            return
        if kind == "taints":
            self._sync_taints(node)
        elif kind == "pods-not-ready":
            self._mark_pods_not_ready(node)
        elif kind == "evict":
            self._evict(node)

    def _sync_taints(self, node: Obj) -> None:
        current = list(node.get("spec", {}).get("taints") or [])
        managed = [t for t in current if t.get("key") in CONDITION_TAINT_KEYS]
        others = [t for t in current if t.get("key") not in CONDITION_TAINT_KEYS]
        desired = desired_condition_taints(node, self.clock.iso(), managed)
        if desired == managed:
            return
        taints = others + desired

        def retaint(obj: Obj) -> None:
            if taints:
                obj.setdefault("spec", {})["taints"] = taints
            else:
                obj.get("spec", {}).pop("taints", None)

        self.store.mutate(NODES, None, node["metadata"]["name"], retaint)

    def _mark_pods_not_ready(self, node: Obj) -> None:
        """MarkPodsNotReady: the node stopped reporting, so nothing on it can be trusted as Ready."""
        if podutil.is_node_ready(node):
            return
        now_iso = self.clock.iso()
        for pod in self.store.pods_on_node(node["metadata"]["name"]):
            if not podutil.is_ready(pod):
                continue

            def not_ready(obj: Obj) -> None:
                status = obj.setdefault("status", {})
                podutil.set_condition(status, {"type": "Ready", "status": "False"}, now_iso)

            self.store.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], not_ready, subresource="status")
            _event(self.cluster, pod, "Warning", "NodeNotReady", "Node is not ready", "node-controller")

    def _evict(self, node: Obj) -> None:
        """The taint eviction controller: delete pods that stopped tolerating a NoExecute taint."""
        now = self.clock.time()
        no_execute = [t for t in node.get("spec", {}).get("taints") or () if t.get("effect") == "NoExecute"]
        if not no_execute:
            return
        next_check: float | None = None
        for pod in self.store.pods_on_node(node["metadata"]["name"]):
            if podutil.is_terminating(pod) or podutil.is_terminal(pod):
                continue
            evict_at: float | None = None
            for taint in no_execute:
                seconds = _toleration_seconds_for(pod, taint)
                if seconds is None:
                    continue
                added = podutil.parse_time(taint.get("timeAdded")) or now
                at = added + seconds
                evict_at = at if evict_at is None else min(evict_at, at)
            if evict_at is None:
                continue
            if evict_at > now:
                next_check = evict_at if next_check is None else min(next_check, evict_at)
                continue
            self._evict_pod(pod)
        if next_check is not None:
            self.enqueue_after(("evict", node["metadata"]["name"]), _timer_delay(next_check - now))

    def _evict_pod(self, pod: Obj) -> None:
        namespace, name = _pod_key(pod)
        now_iso = self.clock.iso()

        def disruption(obj: Obj) -> None:
            podutil.set_condition(
                obj.setdefault("status", {}),
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"},
                now_iso,
            )

        self.store.mutate(PODS, namespace, name, disruption, subresource="status")
        _event(self.cluster, pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {namespace}/{name}", "taint-eviction-controller")
        self.store.delete(PODS, namespace, name)


# ---------------------------------------------------------------------------------------- pod GC
class PodGC(Controller):
    """Force-deletes pods whose node is gone, as the pod garbage collector does for orphans."""

    name = "pod-gc"
    watches = (NODES,)

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if event == "DELETED" and old is not None:
            return [("orphans", old["metadata"]["name"])]
        return ()

    def sync(self, key: Any) -> None:
        _, node_name = key
        if self.store.try_get(NODES, None, node_name) is not None:
            return  # a node of that name registered again: its pods are not orphans
        now_iso = self.clock.iso()
        for pod in self.store.pods_on_node(node_name):
            namespace, name = _pod_key(pod)
            if not podutil.is_terminal(pod):

                def failed(obj: Obj) -> None:
                    status = obj.setdefault("status", {})
                    status["phase"] = "Failed"
                    podutil.set_condition(
                        status,
                        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists"},
                        now_iso,
                    )

                self.store.mutate(PODS, namespace, name, failed, subresource="status")
            self.store.delete(PODS, namespace, name, grace_period=0)


CONTROLLERS = [Scheduler, Kubelet, NodeLifecycle, PodGC]
