"""Fault injection: API errors, latency, cut watches, blocked evictions, nodes that never get Ready."""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorRule:
    code: int  # 500, 429, 409, 503 ...
    rate: float = 1.0  # share of matching requests that fail
    verb: str = "*"  # get, list, watch, create, update, patch, delete, eviction ("create" on pods/eviction)
    resource: str = "*"  # plural, e.g. "pods", "deployments"; subresource as "pods/eviction"
    namespace: str = "*"
    name: str = "*"
    remaining: int | None = None  # fail at most this many times

    def applies(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", resource)
            and self.namespace in ("*", namespace or "")
            and self.name in ("*", name or "")
        )


@dataclass
class Faults:
    seed: int = 7
    errors: list[ErrorRule] = field(default_factory=list)
    latency_seconds: float = 0.0
    watch_cut_after_events: int | None = None  # close every watch stream after this many events
    watch_cut_after_seconds: float | None = None
    blocked_pdbs: set[tuple[str, str]] = field(default_factory=set)  # evictions always 429
    never_ready_nodes: int = 0  # the next N nodes that join never become Ready
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def error_for(self, verb: str, resource: str, namespace: str | None, name: str | None) -> int | None:
        with self._lock:
            for rule in self.errors:
                if rule.remaining == 0 or not rule.applies(verb, resource, namespace, name):
                    continue
                if self._rng.random() < rule.rate:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.code
        return None

    def take_never_ready_node(self) -> bool:
        with self._lock:
            if self.never_ready_nodes > 0:
                self.never_ready_nodes -= 1
                return True
            return False

    def configure(self, spec: dict[str, Any]) -> None:
        """Apply a JSON fault spec (the admin endpoint's body); keys left out are unchanged."""
        with self._lock:
            if "seed" in spec:
                self._rng.seed(int(spec["seed"]))
            if "errors" in spec:
                self.errors = [ErrorRule(**rule) for rule in spec["errors"]]
            if "latency_seconds" in spec:
                self.latency_seconds = float(spec["latency_seconds"])
            if "watch_cut_after_events" in spec:
                self.watch_cut_after_events = spec["watch_cut_after_events"]
            if "watch_cut_after_seconds" in spec:
                self.watch_cut_after_seconds = spec["watch_cut_after_seconds"]
            if "blocked_pdbs" in spec:
                self.blocked_pdbs = {tuple(x.split("/", 1)) for x in spec["blocked_pdbs"]}  # type: ignore[misc]
            if "never_ready_nodes" in spec:
                self.never_ready_nodes = int(spec["never_ready_nodes"])

    def clear(self) -> None:
        self.configure(
            {"errors": [], "latency_seconds": 0, "watch_cut_after_events": None, "watch_cut_after_seconds": None,
             "blocked_pdbs": [], "never_ready_nodes": 0}
        )

    def describe(self) -> dict[str, Any]:
        return {
            "errors": [vars(r) for r in self.errors],
            "latency_seconds": self.latency_seconds,
            "watch_cut_after_events": self.watch_cut_after_events,
            "watch_cut_after_seconds": self.watch_cut_after_seconds,
            "blocked_pdbs": sorted("/".join(p) for p in self.blocked_pdbs),
            "never_ready_nodes": self.never_ready_nodes,
        }
