"""The simulator's object store: etcd plus the apiserver's generic registry.

Objects are plain JSON dicts. A stored dict is never mutated in place: every write stores a new dict,
so readers (HTTP handlers serialising a list, watch streams) may hold references without copying.
Callers that want to change an object take ``get_copy`` and write it back.

Every write bumps one global resourceVersion, is appended to the per-type event history (so watches
can resume from a resourceVersion, or get 410 when it was compacted away), is pushed to matching
watchers, and is handed to listeners (the controllers' informers) under the store lock.
"""
from __future__ import annotations

import base64
import copy
import json
import queue
import re
import threading
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import errors
from .clock import Clock
from .resources import BY_KEY, NAMESPACES, PODS, ResourceType

Obj = dict[str, Any]
Listener = Callable[[str, str, "Obj | None", "Obj | None"], None]  # (type key, event, old, new)

HISTORY_PER_TYPE = 20_000
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RANDOM_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what apimachinery's rand.String uses

# Types whose metadata.generation tracks spec changes.
_GENERATION_TYPES = frozenset(
    {
        "deployments.apps",
        "replicasets.apps",
        "daemonsets.apps",
        "statefulsets.apps",
        "jobs.batch",
        "cronjobs.batch",
        "poddisruptionbudgets.policy",
        "pods",
    }
)
# batch/v1 Jobs orphan their pods when deleted without a propagationPolicy (kept for compatibility
# with the old API); everything else is deleted in the background.
_DEFAULT_ORPHAN = frozenset({"jobs.batch", "replicationcontrollers"})


def random_suffix(n: int = 5) -> str:
    raw = uuid.uuid4().int
    out = []
    for _ in range(n):
        raw, idx = divmod(raw, len(_RANDOM_ALPHABET))
        out.append(_RANDOM_ALPHABET[idx])
    return "".join(out)


def meta(obj: Obj) -> dict[str, Any]:
    return obj.setdefault("metadata", {})


@dataclass
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
    object: Obj
    rv: int


_CLOSED = object()


@dataclass
class Watcher:
    """One open watch; the HTTP handler drains ``events``."""

    type_key: str
    namespace: str | None
    matches: Callable[[Obj], bool]
    events: "queue.SimpleQueue[Any]" = field(default_factory=queue.SimpleQueue)
    closed: bool = False

    def offer(self, event_type: str, old: Obj | None, new: Obj | None, rv: int) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if self.namespace and obj.get("metadata", {}).get("namespace") != self.namespace:
            return
        old_match = old is not None and self.matches(old)
        new_match = new is not None and self.matches(new)
        if event_type == "MODIFIED":
            # As the apiserver's cacher does: an object leaving the selector is DELETED for this
            # watcher, one entering it is ADDED.
            if old_match and not new_match:
                event_type, obj = "DELETED", new  # type: ignore[assignment]
            elif new_match and not old_match:
                event_type = "ADDED"
            elif not new_match:
                return
        elif event_type == "ADDED" and not new_match:
            return
        elif event_type == "DELETED" and not old_match:
            return
        self.events.put(WatchEvent(event_type, obj, rv))  # type: ignore[arg-type]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.events.put(_CLOSED)

    def get(self, timeout: float) -> WatchEvent | None | object:
        """The next event, ``None`` on timeout, or ``CLOSED``."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


CLOSED = _CLOSED


class Store:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.lock = threading.RLock()
        self._rv = 1000
        # type key -> namespace ("" for cluster-scoped) -> name -> object
        self._objects: dict[str, dict[str, dict[str, Obj]]] = defaultdict(lambda: defaultdict(dict))
        self._history: dict[str, deque[tuple[int, str, Obj | None, Obj | None]]] = defaultdict(
            lambda: deque(maxlen=HISTORY_PER_TYPE)
        )
        self._compacted: dict[str, int] = defaultdict(int)  # rv before which history is gone
        self._watchers: dict[str, list[Watcher]] = defaultdict(list)
        self._listeners: list[Listener] = []
        self._pods_by_node: dict[str, dict[tuple[str, str], Obj]] = defaultdict(dict)
        self._dependents: dict[str, set[tuple[str, str, str]]] = defaultdict(set)  # owner uid -> keys
        self._by_uid: dict[str, tuple[str, str, str]] = {}
        # Admission: per-type defaulting and validation (see schema.py), set by the cluster.
        self.defaulters: dict[str, Callable[[Obj, "Store"], None]] = {}
        self.validators: dict[str, Callable[[Obj, Obj | None], None]] = {}

    # ----------------------------------------------------------------------------------- plumbing
    @property
    def resource_version(self) -> int:
        return self._rv

    def add_listener(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.append(listener)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, key: str, event_type: str, old: Obj | None, new: Obj | None, rv: int) -> None:
        hist = self._history[key]
        if len(hist) == hist.maxlen:
            self._compacted[key] = hist[0][0]
        hist.append((rv, event_type, old, new))
        for watcher in list(self._watchers[key]):
            if watcher.closed:
                self._watchers[key].remove(watcher)
                continue
            watcher.offer(event_type, old, new, rv)
        for listener in self._listeners:
            listener(key, event_type, old, new)

    def _index(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None:
            om = old["metadata"]
            okey = (key, om.get("namespace", ""), om["name"])
            for ref in om.get("ownerReferences") or ():
                deps = self._dependents.get(ref.get("uid"))
                if deps is not None:
                    deps.discard(okey)
                    if not deps:
                        del self._dependents[ref.get("uid")]
            if new is None:
                self._by_uid.pop(om.get("uid"), None)
            if key == PODS:
                node = old.get("spec", {}).get("nodeName")
                if node:
                    self._pods_by_node[node].pop((om.get("namespace", ""), om["name"]), None)
                    if not self._pods_by_node[node]:
                        del self._pods_by_node[node]
        if new is not None:
            nm = new["metadata"]
            nkey = (key, nm.get("namespace", ""), nm["name"])
            self._by_uid[nm["uid"]] = nkey
            for ref in nm.get("ownerReferences") or ():
                self._dependents[ref.get("uid")].add(nkey)
            if key == PODS:
                node = new.get("spec", {}).get("nodeName")
                if node:
                    self._pods_by_node[node][(nm.get("namespace", ""), nm["name"])] = new

    def _put(self, key: str, event_type: str, old: Obj | None, new: Obj) -> Obj:
        rv = self._next_rv()
        new["metadata"]["resourceVersion"] = str(rv)
        ns = new["metadata"].get("namespace", "")
        self._objects[key][ns][new["metadata"]["name"]] = new
        self._index(key, old, new)
        self._emit(key, event_type, old, new, rv)
        return new

    def _remove(self, key: str, obj: Obj) -> Obj:
        rv = self._next_rv()
        m = obj["metadata"]
        ns = m.get("namespace", "")
        bucket = self._objects[key].get(ns)
        if bucket is not None:
            bucket.pop(m["name"], None)
            if not bucket:
                del self._objects[key][ns]
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._index(key, obj, None)
        self._emit(key, "DELETED", obj, gone, rv)
        return gone

    # -------------------------------------------------------------------------------------- reads
    def try_get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        bucket = self._objects.get(key, {}).get(namespace or "")
        return bucket.get(name) if bucket else None

    def get(self, key: str, namespace: str | None, name: str) -> Obj:
        obj = self.try_get(key, namespace, name)
        if obj is None:
            rt = BY_KEY[key]
            raise errors.not_found(rt.plural, name, rt.group)
        return obj

    def get_copy(self, key: str, namespace: str | None, name: str) -> Obj:
        return copy.deepcopy(self.get(key, namespace, name))

    def by_uid(self, uid: str) -> Obj | None:
        loc = self._by_uid.get(uid)
        return self.try_get(*loc) if loc else None

    def dependents(self, owner_uid: str) -> list[tuple[str, Obj]]:
        out = []
        for key, ns, name in list(self._dependents.get(owner_uid, ())):
            obj = self.try_get(key, ns, name)
            if obj is not None:
                out.append((key, obj))
        return out

    def iter(self, key: str, namespace: str | None = None) -> Iterator[Obj]:
        buckets = self._objects.get(key, {})
        if namespace:
            yield from list(buckets.get(namespace, {}).values())
        else:
            for bucket in list(buckets.values()):
                yield from list(bucket.values())

    def pods_on_node(self, node_name: str) -> list[Obj]:
        return list(self._pods_by_node.get(node_name, {}).values())

    def count(self, key: str) -> int:
        return sum(len(b) for b in self._objects.get(key, {}).values())

    def list(
        self,
        key: str,
        namespace: str | None = None,
        matches: Callable[[Obj], bool] | None = None,
        node_name: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], int, str | None, int | None]:
        """(items, resourceVersion, continue token, remaining count) of a consistent list.

        ``node_name`` uses the pods-by-node index, as the apiserver's ``spec.nodeName`` index does,
        so a drain's field-selected list never scans every pod.
        """
        with self.lock:
            if key == PODS and node_name is not None:
                source: Iterable[Obj] = self.pods_on_node(node_name)
                if namespace:
                    source = [p for p in source if p["metadata"].get("namespace") == namespace]
            else:
                source = self.iter(key, namespace)
            items = [o for o in source if matches is None or matches(o)]
            rv = self._rv
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        start_after: tuple[str, str] | None = None
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()).decode())
                start_after = (token["ns"], token["name"])
                rv = int(token["rv"])
            except Exception as exc:  # noqa: BLE001 - any malformed token is the client's error
                raise errors.ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from exc
        if start_after is not None:
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start_after]
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = {"rv": rv, "ns": last.get("namespace", ""), "name": last["name"]}
            cont = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            return items[:limit], rv, cont, len(items) - limit
        return items, rv, None, None

    # ------------------------------------------------------------------------------------- watches
    def watch(
        self,
        key: str,
        namespace: str | None,
        matches: Callable[[Obj], bool],
        since_rv: int | None,
        send_initial: bool = False,
    ) -> Watcher:
        """Open a watch. ``since_rv`` replays history after it; 410 if that history is gone."""
        watcher = Watcher(key, namespace, matches)
        with self.lock:
            if send_initial or since_rv is None:
                for obj in sorted(self.iter(key, namespace), key=lambda o: int(o["metadata"]["resourceVersion"])):
                    if matches(obj):
                        watcher.events.put(WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"])))
            else:
                if since_rv < self._compacted[key]:
                    raise errors.ApiError(
                        410, f"too old resource version: {since_rv} ({self._compacted[key]})", reason="Expired"
                    )
                for rv, etype, old, new in self._history[key]:
                    if rv > since_rv:
                        watcher.offer(etype, old, new, rv)
            self._watchers[key].append(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        with self.lock:
            watcher.close()
            if watcher in self._watchers[watcher.type_key]:
                self._watchers[watcher.type_key].remove(watcher)

    def close_all_watches(self) -> None:
        with self.lock:
            for watchers in self._watchers.values():
                for w in watchers:
                    w.close()
                watchers.clear()

    # -------------------------------------------------------------------------------------- writes
    def create(self, key: str, obj: Obj, namespace: str | None = None) -> Obj:
        rt = BY_KEY[key]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        m = meta(obj)
        with self.lock:
            if rt.namespaced:
                ns = namespace or m.get("namespace") or "default"
                if m.get("namespace") and namespace and m["namespace"] != namespace:
                    raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
                m["namespace"] = ns
                ns_obj = self.try_get(NAMESPACES, None, ns)
                if ns_obj is None:
                    raise errors.not_found("namespaces", ns)
                if ns_obj["metadata"].get("deletionTimestamp"):
                    raise errors.ApiError(
                        403,
                        f'{rt.plural} "{m.get("name") or m.get("generateName")}" is forbidden: unable to create new content in namespace {ns} because it is being terminated',
                        reason="Forbidden",
                    )
            else:
                m.pop("namespace", None)
            if not m.get("name"):
                if m.get("generateName"):
                    # As the apiserver's name generator: the base is cut so the name stays within 63.
                    m["name"] = m["generateName"][:58] + random_suffix()
                else:
                    raise errors.invalid(rt.kind, "", [("metadata.name", "Required value: name or generateName is required")], rt.group)
            self._validate_name(rt, m["name"])
            if self.try_get(key, m.get("namespace"), m["name"]) is not None:
                raise errors.already_exists(rt.plural, m["name"], rt.group)
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                m.pop(k, None)
            m["uid"] = str(uuid.uuid4())
            m["creationTimestamp"] = self.clock.iso()
            if key in _GENERATION_TYPES:
                m["generation"] = 1
            if key in self.defaulters:
                self.defaulters[key](obj, self)
            if key in self.validators:
                self.validators[key](obj, None)
            return self._put(key, "ADDED", None, obj)

    @staticmethod
    def _validate_name(rt: ResourceType, name: str) -> None:
        pattern = _LABEL_NAME if rt.plural in ("namespaces", "services") else _NAME
        if len(name) > 253 or not pattern.match(name):
            raise errors.invalid(
                rt.kind,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    )
                ],
                rt.group,
            )

    def update(
        self,
        key: str,
        obj: Obj,
        subresource: str | None = None,
        check_rv: bool = True,
        _owned: bool = False,
    ) -> Obj:
        """Replace an object (PUT). The main resource keeps the old status; ``status`` keeps the rest.

        ``_owned``: the caller hands over a private copy (``mutate``), so no defensive copy is made.
        """
        rt = BY_KEY[key]
        new = obj if _owned else copy.deepcopy(obj)
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        nm = meta(new)
        with self.lock:
            old = self.get(key, nm.get("namespace"), nm.get("name", ""))
            om = old["metadata"]
            sent_rv = nm.get("resourceVersion")
            if check_rv and sent_rv and sent_rv != om["resourceVersion"]:
                raise errors.conflict(
                    rt.plural, om["name"], "the object has been modified; please apply your changes to the latest version and try again", rt.group
                )
            if nm.get("uid") and nm["uid"] != om["uid"]:
                raise errors.conflict(
                    rt.plural, om["name"], f"Precondition failed: UID in precondition: {nm['uid']}, UID in object meta: {om['uid']}", rt.group
                )
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if k in om:
                    nm[k] = om[k]
                else:
                    nm.pop(k, None)
            if rt.namespaced:
                nm["namespace"] = om["namespace"]
            if subresource == "status":
                # Stored objects are never changed in place: sharing the old spec is safe.
                merged = {k: v for k, v in old.items() if k != "status"}
                merged["metadata"] = copy.deepcopy(old["metadata"])
                merged["status"] = new.get("status", {})
                new = merged
            elif subresource is None and "status" in rt.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if key in _GENERATION_TYPES and subresource is None and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = int(om.get("generation", 1)) + 1
            if key in self.validators:
                self.validators[key](new, old)
            if om.get("deletionTimestamp") and not new["metadata"].get("finalizers") and self._finalizable(key, new):
                return self._remove(key, new)
            return self._put(key, "MODIFIED", old, new)

    def mutate(self, key: str, namespace: str | None, name: str, fn: Callable[[Obj], Any], subresource: str | None = None) -> Obj:
        """Read-modify-write under the lock, for controllers (no conflicts possible)."""
        with self.lock:
            obj = self.get_copy(key, namespace, name)
            fn(obj)
            return self.update(key, obj, subresource=subresource, check_rv=False, _owned=True)

    def _finalizable(self, key: str, obj: Obj) -> bool:
        # A terminating namespace goes only once the namespace controller cleared spec.finalizers
        # (through the finalize subresource), not on any update that happens to carry no
        # metadata.finalizers.
        if key == NAMESPACES and obj.get("spec", {}).get("finalizers"):
            return False
        # A pod bound to a node is removed by its kubelet once its containers stopped, not here.
        return not (key == PODS and obj.get("spec", {}).get("nodeName") and obj["metadata"].get("deletionGracePeriodSeconds", 0) > 0)

    def delete(
        self,
        key: str,
        namespace: str | None,
        name: str,
        grace_period: int | None = None,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        orphan_dependents: bool | None = None,
    ) -> tuple[Obj, bool]:
        """Delete as the apiserver does; returns (object, removed now?).

        Graceful pod deletion and finalizers leave the object in place with a deletionTimestamp
        (the kubelet or the garbage collector finishes it); then the answer is 200 with the object.
        """
        rt = BY_KEY[key]
        with self.lock:
            old = self.get(key, namespace, name)
            om = old["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != om["uid"]:
                raise errors.conflict(
                    rt.plural, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {om['uid']}", rt.group
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != om["resourceVersion"]:
                raise errors.conflict(
                    rt.plural,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {om['resourceVersion']}",
                    rt.group,
                )
            if orphan_dependents is not None and propagation is None:
                propagation = "Orphan" if orphan_dependents else "Background"
            if propagation not in (None, "Orphan", "Background", "Foreground"):
                raise errors.invalid(
                    "DeleteOptions", "", [("propagationPolicy", f'Unsupported value: "{propagation}": supported values: "Foreground", "Background", "Orphan", "nil"')]
                )
            if propagation is None:
                propagation = "Orphan" if key in _DEFAULT_ORPHAN else "Background"
            new = copy.deepcopy(old)
            nm = new["metadata"]
            finalizers = list(nm.get("finalizers") or [])
            if propagation == "Foreground" and "foregroundDeletion" not in finalizers and self.dependents(om["uid"]):
                finalizers.append("foregroundDeletion")
            if propagation == "Orphan" and "orphan" not in finalizers and self.dependents(om["uid"]):
                finalizers.append("orphan")
            if key == NAMESPACES:
                # The namespace controller empties it, then removes the finalizer.
                if not om.get("deletionTimestamp"):
                    nm["deletionTimestamp"] = self.clock.iso()
                    nm["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    new.setdefault("spec", {})["finalizers"] = ["kubernetes"]
                    return self._put(key, "MODIFIED", old, new), False
                return old, False
            graceful = key == PODS and self._pod_grace(old, grace_period)
            if graceful:
                grace = self._pod_grace(old, grace_period)
                current = om.get("deletionGracePeriodSeconds")
                if current is not None and current <= grace:
                    return old, False  # already terminating at least as fast
                nm["deletionTimestamp"] = self.clock.iso(self.clock.time() + grace)
                nm["deletionGracePeriodSeconds"] = grace
                if finalizers:
                    nm["finalizers"] = finalizers
                return self._put(key, "MODIFIED", old, new), False
            if finalizers:
                if om.get("deletionTimestamp") and finalizers == list(om.get("finalizers") or []):
                    return old, False
                nm["finalizers"] = finalizers
                nm.setdefault("deletionTimestamp", self.clock.iso())
                nm.setdefault("deletionGracePeriodSeconds", 0)
                return self._put(key, "MODIFIED", old, new), False
            return self._remove(key, old), True

    @staticmethod
    def _pod_grace(pod: Obj, requested: int | None) -> int:
        """Seconds of graceful termination a pod gets, 0 when it is removed at once."""
        if not pod.get("spec", {}).get("nodeName"):
            return 0  # never scheduled: nothing runs, removed immediately
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = requested if requested is not None else pod["spec"].get("terminationGracePeriodSeconds", 30)
        return max(0, int(grace))

    def remove_now(self, key: str, namespace: str | None, name: str) -> Obj | None:
        """Remove an object outright (kubelet confirming a pod is gone, GC clearing finalizers)."""
        with self.lock:
            obj = self.try_get(key, namespace, name)
            if obj is None:
                return None
            return self._remove(key, obj)
