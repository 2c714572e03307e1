"""The garbage collector and the namespace controller.

``GarbageCollector`` follows ownerReferences as kube-controller-manager's garbage collector does:

- background: once an owner is gone, each dependent whose owners are all gone is deleted (and its
  own dependents follow when it is gone); a dependent that still has a live owner only loses the
  reference to the dead one;
- foreground: an owner carrying the ``foregroundDeletion`` finalizer has its dependents deleted
  (in foreground themselves when they have dependents) and keeps the finalizer until no dependent
  with ``blockOwnerDeletion: true`` remains;
- orphan: an owner carrying the ``orphan`` finalizer has its reference removed from every dependent,
  then the finalizer;
- dangling: an object created with a reference to an owner that does not exist is deleted.

``NamespaceController`` empties a namespace being deleted (everything namespaced, background
propagation, pods terminating gracefully), then clears its ``kubernetes`` finalizer so it goes.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable

from ..resources import BY_KIND, NAMESPACES, RESOURCE_TYPES
from .base import Controller

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
ALL_TYPE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(rt.key for rt in RESOURCE_TYPES))
NAMESPACED_TYPE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(rt.key for rt in RESOURCE_TYPES if rt.namespaced))
# How often a terminating namespace is looked at again while content remains (deletions normally
# wake it sooner; this covers finalizers cleared by something that does not delete anything).
NAMESPACE_RECHECK_SECONDS = 1.0


def _ref_uids(obj: Obj | None) -> list[str]:
    if obj is None:
        return []
    return [ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or ()]


def _finalizers(obj: Obj) -> list[str]:
    return list(obj["metadata"].get("finalizers") or [])


def _is_deleting(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _location(type_key: str, obj: Obj) -> tuple[str, str, str, str]:
    m = obj["metadata"]
    return type_key, m.get("namespace", ""), m["name"], m["uid"]


class GarbageCollector(Controller):
    name = "garbage-collector"
    watches = ALL_TYPE_KEYS

    # --------------------------------------------------------------------------------- informers
    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        keys: list[Hashable] = []
        if event == "DELETED":
            gone = old if old is not None else new
            assert gone is not None
            uid = gone["metadata"]["uid"]
            if self.store.dependents(uid):
                keys.append(("owner-gone", uid))
            # A dependent going away may be what a foreground-deleting owner waits for.
            keys.extend(self._waiting_owners(_ref_uids(gone)))
            return keys
        assert new is not None
        finalizers = _finalizers(new)
        if _is_deleting(new) and FOREGROUND in finalizers:
            keys.append(("foreground",) + _location(type_key, new))
        if _is_deleting(new) and ORPHAN in finalizers:
            keys.append(("orphan",) + _location(type_key, new))
        new_refs = _ref_uids(new)
        if event == "ADDED" and any(self.store.by_uid(uid) is None for uid in new_refs):
            keys.append(("dangling",) + _location(type_key, new))
        old_refs = (old or {}).get("metadata", {}).get("ownerReferences")
        if old_refs and old_refs != new["metadata"].get("ownerReferences"):
            # A reference dropped (orphaned) or blockOwnerDeletion changed: an owner may be free.
            keys.extend(self._waiting_owners(_ref_uids(old)))
        return keys

    def _waiting_owners(self, uids: list[str]) -> list[Hashable]:
        out: list[Hashable] = []
        for uid in uids:
            owner = self.store.by_uid(uid)
            if owner is not None and _is_deleting(owner) and FOREGROUND in _finalizers(owner):
                out.append(("foreground",) + _location(self._type_key(owner), owner))
        return out

    @staticmethod
    def _type_key(obj: Obj) -> str:
        return BY_KIND[(obj.get("apiVersion", ""), obj.get("kind", ""))].key

    # -------------------------------------------------------------------------------------- sync
    def sync(self, key: Any) -> None:
        kind = key[0]
        if kind == "owner-gone":
            self._owner_gone(key[1])
            return
        _, type_key, namespace, name, uid = key
        obj = self.store.try_get(type_key, namespace or None, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        if kind == "foreground":
            self._foreground(type_key, obj)
        elif kind == "orphan":
            self._orphan(type_key, obj)
        elif kind == "dangling":
            self._attempt_to_delete(type_key, obj)

    def _owner_gone(self, owner_uid: str) -> None:
        if self.store.by_uid(owner_uid) is not None:
            return
        for type_key, dependent in self.store.dependents(owner_uid):
            self._attempt_to_delete(type_key, dependent)

    def _attempt_to_delete(self, type_key: str, dependent: Obj) -> None:
        """attemptToDeleteItem: delete a dependent whose owners are all gone, or drop dead refs."""
        if _is_deleting(dependent):
            return
        refs = list(dependent["metadata"].get("ownerReferences") or [])
        if not refs:
            return
        live: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for ref in refs:
            owner = self.store.by_uid(ref.get("uid", ""))
            if owner is None or owner.get("kind") != ref.get("kind"):
                dead.append(ref)
            elif _is_deleting(owner) and FOREGROUND in _finalizers(owner):
                waiting.append(ref)
            else:
                live.append(ref)
        m = dependent["metadata"]
        if live:
            if dead or waiting:
                # A live owner keeps the object; only the references to the others go.
                live_uids = {r.get("uid") for r in live}

                def keep_live(obj: Obj) -> None:
                    obj["metadata"]["ownerReferences"] = [
                        r for r in obj["metadata"].get("ownerReferences") or () if r.get("uid") in live_uids
                    ]

                self.store.mutate(type_key, m.get("namespace"), m["name"], keep_live)
            return
        if not dead and not waiting:
            return
        # Owners all gone (or being deleted in foreground): the dependent goes too. One whose owner
        # waits in foreground and that has dependents of its own is deleted in foreground as well.
        propagation = "Foreground" if waiting and self.store.dependents(m["uid"]) else "Background"
        self.store.delete(type_key, m.get("namespace"), m["name"], propagation=propagation, preconditions={"uid": m["uid"]})

    def _foreground(self, type_key: str, owner: Obj) -> None:
        om = owner["metadata"]
        if FOREGROUND not in _finalizers(owner):
            return
        blocking = 0
        for dep_key, dependent in self.store.dependents(om["uid"]):
            if not _is_deleting(dependent):
                self._attempt_to_delete(dep_key, dependent)
                dependent = self.store.try_get(dep_key, dependent["metadata"].get("namespace"), dependent["metadata"]["name"]) or {}
            if not dependent:
                continue
            for ref in dependent["metadata"].get("ownerReferences") or ():
                if ref.get("uid") == om["uid"] and ref.get("blockOwnerDeletion"):
                    blocking += 1
        if blocking:
            return  # the dependents' removal wakes this owner again

        def release(obj: Obj) -> None:
            obj["metadata"]["finalizers"] = [f for f in _finalizers(obj) if f != FOREGROUND]

        # With no finalizer left the store removes the object, and GC of any stragglers follows.
        self.store.mutate(type_key, om.get("namespace"), om["name"], release)

    def _orphan(self, type_key: str, owner: Obj) -> None:
        om = owner["metadata"]
        if ORPHAN not in _finalizers(owner):
            return
        for dep_key, dependent in self.store.dependents(om["uid"]):
            dm = dependent["metadata"]

            def drop_ref(obj: Obj, owner_uid: str = om["uid"]) -> None:
                refs = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("uid") != owner_uid]
                if refs:
                    obj["metadata"]["ownerReferences"] = refs
                else:
                    obj["metadata"].pop("ownerReferences", None)

            self.store.mutate(dep_key, dm.get("namespace"), dm["name"], drop_ref)

        def release(obj: Obj) -> None:
            obj["metadata"]["finalizers"] = [f for f in _finalizers(obj) if f != ORPHAN]

        self.store.mutate(type_key, om.get("namespace"), om["name"], release)


class NamespaceController(Controller):
    name = "namespace"
    watches = (NAMESPACES,) + NAMESPACED_TYPE_KEYS

    def keys_for(self, type_key: str, event: str, old: Obj | None, new: Obj | None) -> Iterable[Hashable]:
        if type_key == NAMESPACES:
            if new is not None and event != "DELETED" and _is_deleting(new):
                return [new["metadata"]["name"]]
            return ()
        if event != "DELETED" and not (new is not None and old is not None and _finalizers(new) != _finalizers(old)):
            return ()
        # Content removed (or a finalizer cleared) in a terminating namespace: look at it again.
        namespace = (old or new or {}).get("metadata", {}).get("namespace")
        ns = self.store.try_get(NAMESPACES, None, namespace) if namespace else None
        if ns is not None and _is_deleting(ns):
            return [namespace]
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        return [ns["metadata"]["name"] for ns in self.store.iter(NAMESPACES) if _is_deleting(ns)]

    def sync(self, key: Any) -> None:
        namespace = self.store.try_get(NAMESPACES, None, key)
        if namespace is None or not _is_deleting(namespace):
            return
        if NAMESPACE_FINALIZER not in (namespace.get("spec", {}).get("finalizers") or []):
            return
        remaining: dict[str, int] = {}
        finalizers_left: dict[str, int] = {}
        for type_key in NAMESPACED_TYPE_KEYS:
            for obj in self.store.iter(type_key, key):
                m = obj["metadata"]
                if not _is_deleting(obj):
                    # The namespace deleter asks for background propagation explicitly.
                    obj, removed = self.store.delete(type_key, key, m["name"], propagation="Background")
                    if removed:
                        continue
                # Store keys spell the group-resource as the controller reports it ("deployments.apps").
                remaining[type_key] = remaining.get(type_key, 0) + 1
                for finalizer in obj["metadata"].get("finalizers") or ():
                    finalizers_left[finalizer] = finalizers_left.get(finalizer, 0) + 1
        self._write_conditions(namespace, remaining, finalizers_left)
        if remaining:
            self.enqueue_after(key, NAMESPACE_RECHECK_SECONDS)
            return

        def finalize(obj: Obj) -> None:
            obj.setdefault("spec", {})["finalizers"] = [f for f in obj["spec"].get("finalizers") or [] if f != NAMESPACE_FINALIZER]

        # The finalize subresource: with spec.finalizers (and metadata.finalizers) empty it is gone.
        self.store.mutate(NAMESPACES, None, key, finalize)

    def _write_conditions(self, namespace: Obj, remaining: dict[str, int], finalizers_left: dict[str, int]) -> None:
        """The status conditions the namespace controller reports while it empties a namespace."""
        if remaining:
            content = (
                "True",
                "SomeResourcesRemain",
                "Some resources are remaining: " + ", ".join(f"{r} has {n} resource instances" for r, n in sorted(remaining.items())),
            )
        else:
            content = ("False", "ContentRemoved", "All content successfully removed")
        if finalizers_left:
            finalizing = (
                "True",
                "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: "
                + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers_left.items())),
            )
        else:
            finalizing = ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished")
        wanted = [
            ("NamespaceDeletionDiscoveryFailure", ("False", "ResourcesDiscovered", "All resources successfully discovered")),
            ("NamespaceDeletionGroupVersionParsingFailure", ("False", "ParsedGroupVersions", "All legacy kube types successfully parsed")),
            ("NamespaceDeletionContentFailure", ("False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization")),
            ("NamespaceContentRemaining", content),
            ("NamespaceFinalizersRemaining", finalizing),
        ]
        current = {c.get("type"): c for c in namespace.get("status", {}).get("conditions") or ()}
        if all(
            (current.get(t) or {}).get("status") == s and current[t].get("reason") == r and current[t].get("message") == m
            for t, (s, r, m) in wanted
        ):
            return
        now_iso = self.clock.iso()

        def write(obj: Obj) -> None:
            conditions = []
            for cond_type, (status, reason, message) in wanted:
                previous = current.get(cond_type) or {}
                since = previous.get("lastTransitionTime") if previous.get("status") == status else now_iso
                conditions.append(
                    {"type": cond_type, "status": status, "reason": reason, "message": message, "lastTransitionTime": since or now_iso}
                )
            obj.setdefault("status", {})["conditions"] = conditions

        self.store.mutate(NAMESPACES, None, namespace["metadata"]["name"], write, subresource="status")


CONTROLLERS = [GarbageCollector, NamespaceController]
