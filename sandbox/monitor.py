"""What tests judge a run by: the request log and the invariants monitor."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from . import podutil
from .resources import NODES, PDBS, PODS
from .selectors import labels_match, selector_from_object

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class RequestRecord:
    seq: int
    time: float
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    resource: str  # plural, with "/subresource" when there is one
    namespace: str
    name: str
    user_agent: str
    code: int
    user: str = ""  # the authenticated identity, on clusters that check tokens (sandbox.auth)
    group: str = ""  # the API group of the resource ("" is the core group)


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, **fields: Any) -> None:
        with self._lock:
            self._records.append(RequestRecord(seq=len(self._records), **fields))

    def since(self, seq: int = 0) -> list[RequestRecord]:
        with self._lock:
            return self._records[seq:]

    def __len__(self) -> int:
        return len(self._records)

    def as_dicts(self, seq: int = 0) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.since(seq)]


@dataclass
class Violation:
    time: float
    kind: str  # "pdb", "nodes", "protected-namespace"
    detail: str
    # For an eviction in a protected namespace: the node the pod ran on (a drain of that node
    # evicts it, as `kubectl drain` does; a judge may allow exactly that).
    node: str = ""


@dataclass
class Monitor:
    """Watches every change and records the moments a safety invariant broke.

    - nodes: the largest number of nodes unschedulable or NotReady at one moment;
    - pdb: any moment a PDB's healthy pods fell below what it requires, once it had been met;
    - protected-namespace: any API write inside a protected namespace (recorded by the server).
    """

    cluster: Any
    max_nodes_out_of_service: int = 0
    out_of_service: set[str] = field(default_factory=set)
    violations: list[Violation] = field(default_factory=list)
    _pdb_met: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.max_nodes_out_of_service = len(self.out_of_service)
            self.violations.clear()

    def on_change(self, type_key: str, event: str, old: Any, new: Any) -> None:
        if not self.cluster.config.monitor:
            return
        if type_key == NODES:
            self._on_node(event, new)
        elif type_key == PODS:
            obj = new or old
            self._check_pdbs(obj["metadata"].get("namespace", ""))
        elif type_key == PDBS:
            obj = new or old
            self._check_pdbs(obj["metadata"].get("namespace", ""))

    def _on_node(self, event: str, node: Any) -> None:
        name = node["metadata"]["name"]
        out = event != "DELETED" and (node.get("spec", {}).get("unschedulable") or not podutil.is_node_ready(node))
        # A node still booting (never yet Ready) is not "out of service": it was never in it.
        booting = not podutil.is_node_ready(node) and not node.get("spec", {}).get("unschedulable") and not any(
            c.get("type") == "Ready" and c.get("reason") == "NodeStatusUnknown"
            for c in node.get("status", {}).get("conditions") or ()
        )
        with self._lock:
            if out and not booting:
                self.out_of_service.add(name)
            else:
                self.out_of_service.discard(name)
            if len(self.out_of_service) > self.max_nodes_out_of_service:
                self.max_nodes_out_of_service = len(self.out_of_service)

    def _check_pdbs(self, namespace: str) -> None:
        # The same arithmetic as the disruption controller (expected pods from the owners' scale),
        # so a rollout's surge pod never counts as a violation.
        from .controllers.disruption import expected_pod_count

        store = self.cluster.store
        for pdb in store.iter(PDBS, namespace):
            selector = selector_from_object(pdb["spec"].get("selector"))
            pods = [p for p in store.iter(PODS, namespace) if labels_match(selector, p["metadata"].get("labels"))]
            healthy = sum(1 for p in pods if podutil.is_ready(p) and not podutil.is_terminating(p))
            try:
                _, required = expected_pod_count(store, pdb, pods)
            except Exception:  # noqa: BLE001 - the controller fails safe on such PDBs; so do we
                continue
            key = (namespace, pdb["metadata"]["name"])
            with self._lock:
                if healthy >= required:
                    self._pdb_met.add(key)
                elif key in self._pdb_met:
                    self._pdb_met.discard(key)
                    self.violations.append(
                        Violation(self.cluster.clock.time(), "pdb", f"{namespace}/{key[1]}: {healthy} healthy < {required} required")
                    )

    def protected_write(self, verb: str, resource: str, namespace: str, name: str, user_agent: str, node: str = "") -> None:
        on = f" on node {node}" if node else ""
        with self._lock:
            self.violations.append(
                Violation(self.cluster.clock.time(), "protected-namespace", f"{verb} {resource} {namespace}/{name}{on} by {user_agent}", node)
            )

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {
                "max_nodes_out_of_service": self.max_nodes_out_of_service,
                "nodes_out_of_service": sorted(self.out_of_service),
                "violations": [asdict(v) for v in self.violations],
            }
