"""What a deferred task waits on, and the wait itself: list then watch, until the first change the
task has not seen. Plain data and blocking calls, no Airflow: the triggers (``core.triggers``) run
the wait in the triggerer, and code that runs without Airflow (the benchmarks) the same wait in
process.
"""
from __future__ import annotations

from typing import Any, Callable

# Which changes of an object matter to the waiting task, beyond its having changed at all (None: any).
Relevant = Callable[[dict[str, Any]], bool]

# What a deferred task waits on, as plain data (it travels in the trigger's kwargs): one kind of
# object in one namespace, and what the task saw of it when it last looked.
#   {"group": "apps", "version": "v1", "plural": "deployments", "namespace": "shop",
#    "label_selector": "tier=web" | None, "resource_version": "<its list's>" | "",
#    "seen": {name: resourceVersion}, "only_seen": true | false,
#    "wake_on": ["ADDED", "MODIFIED", "DELETED"]}
WAKE_ON_ANY = ("ADDED", "MODIFIED", "DELETED")


def watch_target(
    ref: Any,
    namespace: str | None,
    resource_version: str = "",
    seen: dict[str, str] | None = None,
    label_selector: str | None = None,
    wake_on: tuple[str, ...] = WAKE_ON_ANY,
    only_seen: bool = False,
) -> dict[str, Any]:
    """What to watch (a ``core.k8s.ResourceRef`` in a namespace) and what the task saw of it: the
    resourceVersion of the list it looked at (the watch resumes from there, so nothing that happens
    between the task's look and the trigger's start is missed) and each object's resourceVersion
    after the task's own writes (so its own patches do not wake it). ``only_seen``: only the objects
    in ``seen`` are waited on (the others of the kind may change as they like); ``wake_on``: which
    kinds of change wake the task."""
    return {
        "group": ref.group,
        "version": ref.version,
        "plural": ref.plural,
        "namespace": namespace,
        "label_selector": label_selector or None,
        "resource_version": resource_version or "",
        "seen": dict(seen or {}),
        "only_seen": bool(only_seen),
        "wake_on": list(wake_on),
    }


def describe_watch(watch: dict[str, Any]) -> str:
    where = f" in {watch['namespace']}" if watch.get("namespace") else ""
    selector = f" ({watch['label_selector']})" if watch.get("label_selector") else ""
    return f"{watch['plural']}{where}{selector}"


def _relevant_event(watch: dict[str, Any], etype: str, obj: dict[str, Any], relevant: Relevant | None = None) -> str | None:
    """What a watch event changed that the task has not seen (None: nothing it waits on)."""
    if etype not in watch.get("wake_on", WAKE_ON_ANY):
        return None
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    seen = watch.get("seen") or {}
    if watch.get("only_seen") and name not in seen:
        return None  # not one the task waits on
    if etype != "DELETED" and seen.get(name) == meta.get("resourceVersion"):
        return None  # the version the task already looked at (its own write, replayed)
    if etype != "DELETED" and relevant is not None and not relevant(obj):
        return None  # a change, but none the task would act on
    return f"{etype.lower()}: " + "/".join(p for p in (watch["plural"], meta.get("namespace") or watch.get("namespace"), name) if p)


def _relevant_list(watch: dict[str, Any], items: list[dict[str, Any]], relevant: Relevant | None = None) -> str | None:
    """What a fresh list shows that differs from what the task saw (None: nothing)."""
    seen = watch.get("seen") or {}
    wake_on = watch.get("wake_on", WAKE_ON_ANY)
    by_name = {o["metadata"]["name"]: o for o in items if relevant is None or relevant(o)}
    listed = {o["metadata"]["name"]: o["metadata"].get("resourceVersion") for o in items}
    gone = sorted(set(seen) - set(listed)) if "DELETED" in wake_on else []
    added = sorted(set(by_name) - set(seen)) if "ADDED" in wake_on and not watch.get("only_seen") else []
    changed = sorted(n for n in set(seen) & set(by_name) if seen[n] != listed[n]) if "MODIFIED" in wake_on else []
    for what, names in (("deleted", gone), ("added", added), ("modified", changed)):
        if names:
            return f"{what} since the task looked: {watch['plural']} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
    return None


def first_relevant_change(kube: Any, watch: dict[str, Any], seconds: float, relevant: Relevant | None = None) -> str | None:
    """Blocking: follow ``watch`` (a ``watch_target``) for at most ``seconds``; what changed first,
    or None when the time ran out. A watch without a resourceVersion, or whose resourceVersion is
    too old (410 Gone, e.g. after a triggerer restart), lists first and compares what it finds with
    what the task saw, then watches from that list's resourceVersion. ``relevant``: a change (not a
    deletion) counts only when the object, as changed, passes it. Any other error is raised: the
    caller ends the wait early and the task looks for itself."""
    import time

    from kube_maintenance.core.k8s import KubeApiError, ResourceRef

    ref = ResourceRef(watch["group"], watch["version"], watch["plural"], namespaced=watch.get("namespace") is not None)
    namespace, selector = watch.get("namespace"), watch.get("label_selector")
    rv = watch.get("resource_version") or ""
    deadline = time.monotonic() + seconds
    listed_for_nothing = 0  # lists in a row whose resourceVersion was too old to watch from at once
    while True:
        if not rv:
            if listed_for_nothing >= 2:
                raise RuntimeError(f"watch on {describe_watch(watch)}: its fresh lists' resourceVersion keeps expiring")
            items, rv = kube.list(ref, namespace, label_selector=selector)
            listed_for_nothing += 1
            if (what := _relevant_list(watch, items, relevant)) is not None:
                return what
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            for event in kube.watch_events(ref, namespace, rv, label_selector=selector, timeout_seconds=max(1, int(remaining + 0.999))):
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if int(obj.get("code") or 0) == 410:
                        rv = ""  # too old: list again
                        break
                    raise RuntimeError(f"watch on {describe_watch(watch)}: {obj.get('message') or obj}")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                listed_for_nothing = 0
                if etype != "BOOKMARK" and (what := _relevant_event(watch, str(etype), obj, relevant)) is not None:
                    return what
                if time.monotonic() >= deadline:
                    return None
        except KubeApiError as err:
            if err.status != 410:
                raise
            rv = ""
