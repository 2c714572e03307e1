"""Node replacement's triggers: what a deferred batch waits for on the triggerer."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import threading
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from kube_maintenance.core.triggers import back_off_after_error

log = logging.getLogger("kube_maintenance.node_replacement")


class PodsOnNodesChangeTrigger(BaseTrigger):
    """The drain's wait: fires as soon as the drain has something to do again, or at ``moment`` at
    the latest, with the batch's state as its event (and ``woken_by``: the budget that woke it, if
    one did):

    - every pod the drain waits for on a node (``pods``: node -> "<ns>/<name>" of the pods left)
      is gone (the node is drained), or a new pod lands on it (to judge); a pod merely starting to
      terminate wakes nothing. Without ``pods`` for a node (a trigger deferred before they were
      given), any change of a pod on it wakes the drain;
    - one of ``budgets`` (PodDisruptionBudgets that refused an eviction, "<ns>/<name>") allows a
      disruption again, or goes. Otherwise a drain a budget slows down (one pod out at a time, say)
      would look again only a poke interval after each refusal, whenever the pod it waits for got
      Ready elsewhere: the replacement pod is not on the drained node, so nothing there changes.

    One list and one watch per node and per budgets' namespace, resumed from the list's
    resourceVersion, in threads off the triggerer's event loop; any error just ends the wait
    early: the task looks at the cluster again anyway."""

    def __init__(
        self, cluster_name: str, nodes: list[str], moment: str, state: dict[str, Any], budgets: list[str] | None = None, pods: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.nodes = nodes
        self.moment = moment
        self.state = state
        self.budgets = sorted(budgets or [])
        self.pods = {node: sorted(refs) for node, refs in (pods or {}).items()}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "cluster_name": self.cluster_name, "nodes": self.nodes, "moment": self.moment, "state": self.state, "budgets": self.budgets, "pods": self.pods,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.moment)
        remaining = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
        woken_by: dict[str, Any] = {"trigger": type(self).__name__}
        if remaining > 0 and (self.nodes or self.budgets):
            try:
                budget = await asyncio.wait_for(self._first_change(remaining), timeout=remaining)
                if budget:
                    woken_by["budget"] = budget
            except asyncio.TimeoutError:
                pass
            except Exception as exc:  # noqa: BLE001 - a wait cut short is harmless: the task looks again
                log.warning("watching the pods of %s ended early: %s", ", ".join(self.nodes), exc)
                woken_by["error"] = f"{type(exc).__name__}: {exc}"
                await back_off_after_error(deadline)
        yield TriggerEvent({"state": self.state, "woken_by": woken_by})

    async def _first_change(self, seconds: float) -> str | None:
        """None when a pod changed (or a watch ended), the budget's "<ns>/<name>" when one allows."""
        from asgiref.sync import sync_to_async

        kube = await sync_to_async(self._client)()
        namespaces: dict[str, set[str]] = {}
        for ref in self.budgets:
            namespace, _, name = ref.partition("/")
            namespaces.setdefault(namespace, set()).add(name)
        watches = [_in_thread(self._watch_node, kube, node, seconds, self.pods.get(node)) for node in self.nodes]
        watches += [_in_thread(self._watch_budgets, kube, namespace, names, seconds) for namespace, names in sorted(namespaces.items())]
        try:
            done, _ = await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
            return next((found for watch in done if (found := watch.result())), None)
        finally:
            for watch in watches:
                watch.cancel()  # the thread itself ends with its watch (bounded by ``seconds``)

    def _client(self) -> Any:
        from kube_maintenance.core.k8s import KubeClient
        from kube_maintenance.core.registry import load_registry

        return KubeClient.for_cluster(load_registry().cluster(self.cluster_name))

    @staticmethod
    def _watch_node(kube: Any, node: str, seconds: float, waiting: list[str] | None = None) -> None:
        """Returns when the node's pods give the drain something to do (see the class), or its
        watch ends (its timeout, an ERROR event: the wait ends early)."""
        from kube_maintenance.core.k8s import PODS

        def ref(pod: dict[str, Any]) -> str:
            meta = pod.get("metadata") or {}
            return f"{meta.get('namespace')}/{meta.get('name')}"

        selector = f"spec.nodeName={node}"
        items, resource_version = kube.list(PODS, field_selector=selector)
        present = {ref(p) for p in items}
        remaining = set(waiting or ()) & present
        if waiting is not None and not remaining:
            return  # gone already, between the drain's look and this list
        known = present | set(waiting or ())
        for event in kube.watch_events(PODS, None, resource_version, field_selector=selector, timeout_seconds=max(1, int(seconds))):
            kind, obj = event.get("type"), event.get("object") or {}
            if waiting is None:
                if kind in ("ADDED", "MODIFIED", "DELETED", "ERROR"):
                    return
                continue
            if kind == "ERROR" or kind == "ADDED" and ref(obj) not in known:
                return
            if kind == "DELETED":
                remaining.discard(ref(obj))
                if not remaining:
                    return

    @staticmethod
    def _watch_budgets(kube: Any, namespace: str, names: set[str], seconds: float) -> str | None:
        """The first of ``names`` (PDBs of ``namespace``) seen allowing a disruption, or gone; None
        when the watch ends without one (its timeout, or an ERROR event: the wait ends early)."""
        from kube_maintenance.core.k8s import PDBS

        def allows(pdb: dict[str, Any]) -> bool:
            return pdb["metadata"].get("name") in names and int((pdb.get("status") or {}).get("disruptionsAllowed") or 0) > 0

        items, resource_version = kube.list(PDBS, namespace)
        # It refused when the drain asked (the eviction API refuses only while it allows none):
        # allowing now means it changed since.
        found = next((p["metadata"]["name"] for p in items if allows(p)), None)
        gone = names - {p["metadata"].get("name") for p in items}
        if found or gone:
            return f"{namespace}/{found or sorted(gone)[0]}"
        for event in kube.watch_events(PDBS, namespace, resource_version, timeout_seconds=max(1, int(seconds))):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return None
            if kind in ("ADDED", "MODIFIED") and allows(obj) or kind == "DELETED" and (obj.get("metadata") or {}).get("name") in names:
                return f"{namespace}/{obj['metadata']['name']}"
        return None


# --------------------------------------------------------------------------------- watching kinds
# A watch that ends early by itself (the server's timeout, a cut stream) is resumed from the last
# resourceVersion seen; an error (a 410 Gone, an ERROR event, a refused request) ends the wait early.
ABSENT = "absent"


class WatchError(Exception):
    """The API server ended a watch with an error (an ERROR event)."""


def _in_thread(fn: Any, *args: Any) -> "asyncio.Future[Any]":
    """Run ``fn`` in a daemon thread of its own and await it: a blocking watch must not take a
    worker of the event loop's default executor (a handful of threads shared by every trigger of
    the triggerer). The thread ends when its watch does (bounded by the trigger's deadline)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Any, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled meanwhile: nobody waits for this thread any more
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)

    def body() -> None:
        try:
            outcome, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, outcome, error)
        except RuntimeError:
            pass  # the loop is closed: the trigger is long gone

    threading.Thread(target=body, name=f"kube-maintenance-watch-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return future


def _key(kind: str, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('name')}" if kind == "node" else f"{kind}/{meta.get('namespace')}/{meta.get('name')}"


class _WatchingTrigger(BaseTrigger):
    """List each kind, then follow a watch of it from the list's resourceVersion (a thread per
    kind, off the event loop), until a change the waiting step would judge differently, or
    ``moment`` (an absolute time: a triggerer restart does not push it back). The event carries
    the batch's state and what woke it (``woken_by``: the changes, or the error that cut the wait
    short); any error ends the wait early, which is harmless: the step looks at the cluster again.

    Subclasses say which kinds, how an object is judged (``_judge``: a JSON-able value, changes in
    anything else such as heartbeats are ignored), and which differences count (``_on_list``
    against what the step saw when it decided to wait, ``_on_change`` during the watch)."""

    # Where the waiting step left its view of the cluster in its state (``views``): the trigger then
    # watches from the view's resourceVersion without listing, keeps the view current, and hands it
    # back in its event. Without one (a trigger deferred before views), it lists first.
    view_key = ""

    def __init__(self, cluster_name: str, moment: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.moment = moment
        self.state = state
        # Held while a watch thread applies an event to the view: once the trigger fires, no thread
        # changes the view it hands back (an event seen after that is seen again by the next watch,
        # which resumes from the view's resourceVersion).
        self._view_lock = threading.Lock()
        # The kinds whose watch the server accepted during this run (a view is current only then).
        self._opened: set[str] = set()

    def _view(self) -> dict[str, Any] | None:
        view = self.state.get(self.view_key) if self.view_key else None
        return view if isinstance(view, dict) else None

    def _view_resource_version(self, kind: str) -> str:
        """The resourceVersion the view of ``kind`` is current at ("" when there is none)."""
        raise NotImplementedError

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a watch event to the view; the change that wakes the step, or None."""
        raise NotImplementedError

    def _kinds(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def _judge(self, kind: str, obj: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _on_list(self, kind: str, judged: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def _on_change(self, kind: str, key: str, before: Any, after: Any, judged: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.moment)
        remaining = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
        woken_by: dict[str, Any] = {"trigger": type(self).__name__, "changes": []}
        if remaining > 0:
            try:
                woken_by["changes"] = await asyncio.wait_for(self._first_change(remaining), timeout=remaining)
            except asyncio.TimeoutError:
                pass
            except Exception as exc:  # noqa: BLE001 - a wait cut short is harmless: the task looks again
                log.warning("%s on %s ended early: %s", type(self).__name__, self.cluster_name, exc)
                woken_by["error"] = f"{type(exc).__name__}: {exc}"
                await back_off_after_error(deadline)
        if self._view() is not None and "error" not in woken_by and self._opened >= {kind for kind, _ in self._kinds()}:
            # Every watch was accepted (the server sent what happened since the view's version
            # first): the view the event carries is current, and the step may count from it
            # without a list. Not so when the trigger fired before its watches were open (e.g. a
            # triggerer that picked it up after its moment): the step then lists again.
            woken_by["view_kept"] = self.view_key
        if woken_by["changes"]:
            log.info("%s on %s: %s", type(self).__name__, self.cluster_name, "; ".join(_describe(c) for c in woken_by["changes"][:10]))
        yield TriggerEvent({"state": self.state, "woken_by": woken_by})

    async def _first_change(self, seconds: float) -> list[dict[str, Any]]:
        from asgiref.sync import sync_to_async

        kube = await sync_to_async(self._client)()
        end = time.monotonic() + seconds
        stop = threading.Event()
        watches = [_in_thread(self._follow, kube, kind, ref, end, stop) for kind, ref in self._kinds()]
        try:
            done, _ = await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
            with self._view_lock:
                stop.set()  # from here on, the view the event carries stays as it is
            changes: list[dict[str, Any]] = []
            for watch in done:
                changes += watch.result()  # an error ends the wait (raised to run())
            return changes
        finally:
            with self._view_lock:
                stop.set()  # the other threads end at their next event, or with their watch (the deadline)
            for watch in watches:
                watch.cancel()

    def _client(self) -> Any:
        from kube_maintenance.core.k8s import KubeClient
        from kube_maintenance.core.registry import load_registry

        return KubeClient.for_cluster(load_registry().cluster(self.cluster_name))

    def _follow(self, kube: Any, kind: str, ref: Any, end: float, stop: Any) -> list[dict[str, Any]]:
        """In a thread: watch from the step's view (or, without one, list first and watch from the
        list's resourceVersion), resumed after a stream that ends by itself, until a change that
        counts, or ``end`` or ``stop`` ([])."""
        viewed = self._view() is not None
        judged: dict[str, Any] = {}
        if viewed:
            resource_version = self._view_resource_version(kind)
        else:
            items, resource_version = kube.list(ref)
            judged = {_key(kind, o): self._judge(kind, o) for o in items}
            found = self._on_list(kind, judged)
            if found:
                return found
        while (left := end - time.monotonic()) > 0 and not stop.is_set():
            for event in kube.watch_events(ref, None, resource_version, timeout_seconds=max(1, math.ceil(left)), on_open=lambda: self._opened.add(kind)):
                kind_of_event, obj = event.get("type"), event.get("object") or {}
                if kind_of_event == "ERROR":
                    raise WatchError(f"watch of {ref.plural} ended with {obj.get('code', '?')} {obj.get('reason', '')}: {obj.get('message', '')}".strip())
                resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                if viewed:
                    with self._view_lock:
                        if stop.is_set():
                            return []
                        change = self._apply(kind, str(kind_of_event), obj)
                    if change:
                        return [change]
                    if time.monotonic() >= end:
                        return []
                    continue
                if kind_of_event not in ("ADDED", "MODIFIED", "DELETED"):
                    continue  # BOOKMARK: only the resourceVersion moves
                key = _key(kind, obj)
                before = judged.get(key, ABSENT)
                after = ABSENT if kind_of_event == "DELETED" else self._judge(kind, obj)
                if after == ABSENT:
                    judged.pop(key, None)
                else:
                    judged[key] = after
                if before != after and (change := self._on_change(kind, key, before, after, judged)):
                    return [change]
                if time.monotonic() >= end or stop.is_set():
                    return []
        return []


def _describe(change: dict[str, Any]) -> str:
    if "before" in change:
        return f"{change['ref']}: {change['before']} -> {change['after']}"
    return f"{change['ref']}: {change.get('what', 'changed')}"


def _digest(judged: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sorted(judged.items())).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ nodes
# Taints the node lifecycle controller derives from the Ready condition: they say again what Ready
# says, a moment later (waking on them would only cost a look).
_READINESS_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def node_judgement(node: dict[str, Any]) -> str:
    """What a step waiting for nodes judges a Node by: its Ready condition, whether it is
    schedulable, its taints (e.g. a cloud provider's "uninitialized"; not those mirroring Ready).
    Heartbeats and the rest of its status are not in it."""
    from kube_maintenance.node_replacement.plan import is_node_ready

    spec = node.get("spec") or {}
    taints = sorted(
        f"{t.get('key', '')}={t.get('value', '')}:{t.get('effect', '')}" for t in spec.get("taints") or () if t.get("key") not in _READINESS_TAINTS
    )
    words = ["Ready" if is_node_ready(node) else "NotReady"] + (["unschedulable"] if spec.get("unschedulable") else [])
    return ", ".join(words + [f"tainted {t}" for t in taints])


def nodes_seen(nodes: list[dict[str, Any]]) -> str:
    """A short digest of the Nodes as a step judged them before deciding to wait: the trigger
    compares its own list with it, so a node that joined between the step's look and the
    trigger's start (or during a triggerer restart) wakes the task at once."""
    return _digest({_key("node", n): node_judgement(n) for n in nodes})


class NodesChangeTrigger(_WatchingTrigger):
    """For steps waiting for nodes to join (surge nodes, replacements): fires as soon as a Node is
    added or deleted or its Ready condition, unschedulable flag or taints change, or at once when
    the Nodes differ from what the step saw (``seen``, from ``nodes_seen``), or at ``moment``
    at the latest (what a node cannot tell, an EC2 instance reaching "running", is looked at then).
    One watch of Nodes, in a thread off the event loop, from the step's view (``nodes_view`` in
    its state, ``views.joining_nodes_view``): no list, and a node the step does not wait for
    (a heartbeat of any of thousands) costs a comparison. The view, kept current, is handed back
    in the event; the step counts from it. A trigger deferred without a view lists first and
    compares with ``seen``."""

    def __init__(self, cluster_name: str, moment: str, state: dict[str, Any], seen: str | None = None) -> None:
        super().__init__(cluster_name, moment, state)
        self.seen = seen

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"cluster_name": self.cluster_name, "moment": self.moment, "state": self.state, "seen": self.seen}

    view_key = "nodes_view"

    def _kinds(self) -> list[tuple[str, Any]]:
        from kube_maintenance.core.k8s import NODES

        return [("node", NODES)]

    def _view_resource_version(self, kind: str) -> str:
        return str(self.state[self.view_key]["resource_version"])

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        from kube_maintenance.node_replacement.views import apply_node_event

        return apply_node_event(self.state[self.view_key], event_type, obj)

    def _judge(self, kind: str, obj: dict[str, Any]) -> Any:
        return node_judgement(obj)

    def _on_list(self, kind: str, judged: dict[str, Any]) -> list[dict[str, Any]]:
        if self.seen and _digest(judged) != self.seen:
            return [{"ref": "nodes", "what": "changed since the step looked"}]
        return []

    def _on_change(self, kind: str, key: str, before: Any, after: Any, judged: dict[str, Any]) -> dict[str, Any] | None:
        return {"ref": key, "before": before, "after": after}


# ----------------------------------------------------------------------------------------- health
HEALTH_KINDS = ("node", "deployment", "daemonset", "statefulset")
_GOOD = frozenset({"Ready", "available"})


def health_judgement(kind: str, obj: dict[str, Any]) -> str:
    """What a validation judges an object by: a Node Ready or not, a workload available or not
    (as ``health.unavailable_workloads`` counts it)."""
    from kube_maintenance.node_replacement.health import unavailable_workloads
    from kube_maintenance.node_replacement.plan import is_node_ready

    if kind == "node":
        return "Ready" if is_node_ready(obj) else "NotReady"
    return "unavailable" if unavailable_workloads(**{f"{kind}s": [obj]}) else "available"


def health_problems(nodes: list[Any], deployments: list[Any], daemonsets: list[Any], statefulsets: list[Any]) -> list[str]:
    """The objects a validation saw in a bad state ("node/<name>", "deployment/<ns>/<name>" ...):
    the baseline its trigger compares with."""
    out = []
    for kind, objs in zip(HEALTH_KINDS, (nodes, deployments, daemonsets, statefulsets)):
        out += [_key(kind, o) for o in objs if health_judgement(kind, o) not in _GOOD]
    return sorted(out)


class HealthChangeTrigger(_WatchingTrigger):
    """For the validation after a batch. Between two healthy checks the wait is a timer (the
    spacing is the point: healthy several times in a row, some seconds apart, as kops validates),
    but the wait is watched, so that a regression in between (a Node that was Ready going
    NotReady or away, a Deployment, DaemonSet or StatefulSet going unavailable) wakes the task at
    once: ``fire_on="worse"``. "In a row" then means the cluster stayed healthy in between, not
    that it happened to look healthy at two instants; the step starts its count again.

    While the cluster is not healthy yet (``fire_on="any"``), it wakes when the check may pass:
    every workload of a kind the validation waits for (``waiting_for``) available again, or a Node
    getting Ready (the count of Ready nodes may be whole again); not at each workload that
    recovers, each wake being a task start on a worker. So the next batch starts when it may, not
    a poke interval later.

    Watched: Nodes and the three workload kinds, one watch each from the step's view
    (``health_view`` in its state, ``views.health_view``: the Ready count and what is NotReady or
    unavailable), kept current and handed back in the event, so that the resumed check lists
    none of them again. (A trigger deferred without a view lists each kind first.) Not watched: Pending and kube-system pods. The validation judges those by age
    (stuck for minutes), which no watch event announces, and a cluster-wide pod watch is the
    costliest watch there is, waking on every pod start; the poke interval and the checks
    themselves see them.

    ``problems`` is what the step saw in a bad state (``health_problems``); against it the
    trigger's own list already counts (a change between the step's look and the trigger's start
    is not missed). A Node the trigger sees NotReady that the step did not is counted as a
    regression even when it is new (booting): conservative, the count starts again."""

    def __init__(
        self, cluster_name: str, moment: str, state: dict[str, Any], problems: list[str] | None = None, fire_on: str = "any", waiting_for: list[str] | None = None,
    ) -> None:
        super().__init__(cluster_name, moment, state)
        if fire_on not in ("any", "worse"):
            raise ValueError(f"fire_on must be 'any' or 'worse', not {fire_on!r}")
        self.problems = sorted(problems or [])
        self.fire_on = fire_on
        self.waiting_for = sorted(self.problems if waiting_for is None else waiting_for)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "cluster_name": self.cluster_name, "moment": self.moment, "state": self.state, "problems": self.problems, "fire_on": self.fire_on,
            "waiting_for": self.waiting_for,
        }

    view_key = "health_view"

    def _kinds(self) -> list[tuple[str, Any]]:
        from kube_maintenance.core.k8s import DAEMONSETS, DEPLOYMENTS, NODES, STATEFULSETS

        return list(zip(HEALTH_KINDS, (NODES, DEPLOYMENTS, DAEMONSETS, STATEFULSETS)))

    def _view_resource_version(self, kind: str) -> str:
        return str(self.state[self.view_key][kind]["resource_version"])

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        from kube_maintenance.node_replacement.views import apply_health_event, health_judgement_in

        view = self.state[self.view_key]
        changed = apply_health_event(view, kind, event_type, obj)
        if changed is None:
            return None
        key, before, after = changed
        judged = {r: health_judgement_in(view, kind, r) for r in self.waiting_for if r.startswith(kind + "/")}
        return self._on_change(kind, key, before, after, judged)

    def _judge(self, kind: str, obj: dict[str, Any]) -> Any:
        return health_judgement(kind, obj)

    def _all_back(self, kind: str, judged: dict[str, Any]) -> dict[str, Any] | None:
        """Every object of ``kind`` the validation waits for good (or gone) now, if it waited for any."""
        waited = [r for r in self.waiting_for if r.startswith(kind + "/")]
        if waited and all(judged.get(r, ABSENT) in _GOOD | {ABSENT} for r in waited):
            return {"ref": f"{kind}s", "what": f"every {kind} the validation waited for is {'Ready' if kind == 'node' else 'available'}", "worse": False}
        return None

    def _on_list(self, kind: str, judged: dict[str, Any]) -> list[dict[str, Any]]:
        baseline = {p for p in self.problems if p.startswith(kind + "/")}
        bad = {k for k, v in judged.items() if v not in _GOOD}
        if self.fire_on == "worse":
            return [{"ref": k, "before": "seen healthy by the step", "after": judged[k], "worse": True} for k in sorted(bad - baseline)]
        ready_again = [{"ref": k, "before": "NotReady", "after": "Ready", "worse": False} for k in sorted(baseline - bad) if judged.get(k) == "Ready"]
        back = self._all_back(kind, judged)
        return ready_again or ([back] if back else [])

    def _on_change(self, kind: str, key: str, before: Any, after: Any, judged: dict[str, Any]) -> dict[str, Any] | None:
        if self.fire_on == "worse":
            # A Ready node NotReady or gone (one Ready node fewer); a workload no longer available
            # (or a new one not available yet: the check would count it too).
            if before == "Ready" if kind == "node" else after == "unavailable":
                return {"ref": key, "before": before, "after": after, "worse": True}
            return None
        if kind == "node" and after == "Ready":
            return {"ref": key, "before": before, "after": after, "worse": False}
        return self._all_back(kind, judged) if key in self.waiting_for else None
