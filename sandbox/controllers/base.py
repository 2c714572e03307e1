"""A tiny controller-manager: informers feed work queues, one thread reconciles, timers wake keys.

Each controller declares the store types it watches and maps each change to the keys it must
reconcile; ``sync(key)`` then runs under the store lock, so a controller sees a consistent store and
never races another controller or an API request. Delays (a pod starting, a node booting) are timers.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Hashable, Iterable

if TYPE_CHECKING:
    from ..cluster import SandboxCluster
    from ..store import Obj

log = logging.getLogger("sandbox.controllers")


class Controller:
    """Base class: override ``watches``, ``keys_for`` and ``sync``."""

    name = "controller"
    watches: tuple[str, ...] = ()

    def __init__(self, cluster: "SandboxCluster") -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.config = cluster.config
        self.clock = cluster.clock

    def keys_for(self, type_key: str, event: str, old: "Obj | None", new: "Obj | None") -> Iterable[Hashable]:
        return ()

    def initial_keys(self) -> Iterable[Hashable]:
        """Keys to reconcile when the manager starts (objects seeded before it ran)."""
        return ()

    def sync(self, key: Any) -> None:
        raise NotImplementedError

    # helpers
    def enqueue(self, key: Hashable) -> None:
        self.cluster.manager.enqueue(self, key)

    def enqueue_after(self, key: Hashable, delay: float) -> None:
        self.cluster.manager.enqueue_after(self, key, delay)


class Manager:
    def __init__(self, cluster: "SandboxCluster") -> None:
        self.cluster = cluster
        self.controllers: list[Controller] = []
        self._by_type: dict[str, list[Controller]] = {}
        self._dirty: dict[str, dict[Hashable, None]] = {}
        self._timers: list[tuple[float, int, str, Hashable]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.errors: list[str] = []

    def register(self, controller: Controller) -> None:
        self.controllers.append(controller)
        self._dirty[controller.name] = {}
        for type_key in controller.watches:
            self._by_type.setdefault(type_key, []).append(controller)

    def controller(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    # Called by the store under its lock: only enqueue here.
    def on_change(self, type_key: str, event: str, old: "Obj | None", new: "Obj | None") -> None:
        for ctrl in self._by_type.get(type_key, ()):
            for key in ctrl.keys_for(type_key, event, old, new):
                self.enqueue(ctrl, key)

    def enqueue(self, controller: Controller, key: Hashable) -> None:
        with self._cond:
            self._dirty[controller.name][key] = None
            self._cond.notify()

    def enqueue_after(self, controller: Controller, key: Hashable, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), next(self._seq), controller.name, key))
            self._cond.notify()

    def start(self) -> None:
        for ctrl in self.controllers:
            for key in ctrl.initial_keys():
                self.enqueue(ctrl, key)
        self._thread = threading.Thread(target=self._run, name=f"controllers-{self.cluster.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=5)

    def idle(self) -> bool:
        """True when no key is queued and nothing is being reconciled (timers may be pending)."""
        with self._cond:
            return not self._busy and not any(self._dirty.values())

    def _pop_work(self) -> list[tuple[Controller, Hashable]]:
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, name, key = heapq.heappop(self._timers)
                    self._dirty[name][key] = None
                work = []
                for ctrl in self.controllers:
                    dirty = self._dirty[ctrl.name]
                    # Bounded batches keep every controller moving and API requests flowing.
                    for key in list(itertools.islice(dirty, 200)):
                        del dirty[key]
                        work.append((ctrl, key))
                if work:
                    self._busy = True
                    return work
                timeout = 0.5
                if self._timers:
                    timeout = min(timeout, max(0.001, self._timers[0][0] - now))
                self._cond.wait(timeout)
            return []

    def _run(self) -> None:
        store = self.cluster.store
        while not self._stop.is_set():
            work = self._pop_work()
            for ctrl, key in work:
                if self._stop.is_set():
                    break
                try:
                    with store.lock:
                        ctrl.sync(key)
                except Exception:  # noqa: BLE001 - a controller bug must not stop the others
                    message = f"{ctrl.name} sync {key!r} failed:\n{traceback.format_exc()}"
                    log.error(message)
                    self.errors.append(message)
                    self.enqueue_after(ctrl, key, 1.0)
            with self._cond:
                self._busy = False
