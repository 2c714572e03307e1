"""One disruptive operation per cluster at a time: a Lease object in the cluster is the lock.

A pool alone does not hold while a task is deferred, and two Airflow deployments could point at
the same cluster; a Lease does both. It records the holder (DAG and run), is renewed as work
progresses, and expires on its own if a run dies without releasing it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kube_maintenance.core.k8s import LEASES, KubeApiError, KubeClient

LOCK_NAME = "kube-maintenance-lock"
# Runs put the Lease in the registry's ``lock_namespace`` (default ``kube-maintenance``, where
# deploy/kubernetes/rbac.yaml's Role allows it); a ClusterLock made without one uses ``default``.
LOCK_NAMESPACE = "default"


def lock_target(namespace: str) -> str:
    """The Lease as audit lines name it."""
    return f"lease/{namespace}/{LOCK_NAME}"


# Short: a run that dies frees its cluster within minutes. Every poke and every step that changes
# something renews it (each look of a deferred wait, at most a poke interval apart), and a step that finds it lapsed stops.
LEASE_DURATION_SECONDS = 600
# A run-wide stop signal on the Lease: the first mapped task to fail writes why, and the run's other
# tasks start no new change (what they already started is still followed). Cleared when a run
# (re)takes the lock.
STOP_ANNOTATION = "kube-maintenance.io/stop"


class ClusterBusy(RuntimeError):
    """Another operation holds the cluster's lock."""


def _micro(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def lease_expired(lease: dict[str, Any], now: dt.datetime) -> bool:
    spec = lease.get("spec") or {}
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    if renewed is None or not spec.get("holderIdentity"):
        return True
    return renewed + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)) <= now


@dataclass
class ClusterLock:
    client: KubeClient
    holder: str  # "<dag_id>/<run_id>": a re-run of the same run finds its own lock
    namespace: str = LOCK_NAMESPACE
    duration_seconds: int = LEASE_DURATION_SECONDS

    def _spec(self, now: dt.datetime, acquire: str | None = None) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": acquire or _micro(now),
            "renewTime": _micro(now),
        }

    def current(self) -> dict[str, Any] | None:
        return self.client.get_or_none(LEASES, LOCK_NAME, self.namespace)

    def acquire(self) -> str:
        """Take the lock (or confirm we hold it). Returns "acquired", "renewed" or "taken-over"."""
        now = dt.datetime.now(dt.timezone.utc)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LOCK_NAME, "namespace": self.namespace, "labels": {"app.kubernetes.io/managed-by": "kube-maintenance"}},
            "spec": self._spec(now),
        }
        try:
            self.client.create(LEASES, body, self.namespace)
            return "acquired"
        except KubeApiError as err:
            if err.status != 409:
                raise
        lease = self.current()
        if lease is None:  # released in between: try once more
            self.client.create(LEASES, body, self.namespace)
            return "acquired"
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") == self.holder:
            self._write(lease, self._spec(now, spec.get("acquireTime")), clear_stop=True)
            return "renewed"
        if not lease_expired(lease, now):
            raise ClusterBusy(
                f"cluster is busy: {spec.get('holderIdentity')} holds the maintenance lock "
                f"(Lease {self.namespace}/{LOCK_NAME}, renewed {spec.get('renewTime')}, "
                f"lasts {spec.get('leaseDurationSeconds')}s); try again when it is done"
            )
        self._write(lease, self._spec(now), clear_stop=True)
        return "taken-over"

    def _write(self, lease: dict[str, Any], spec: dict[str, Any], clear_stop: bool = False) -> None:
        updated = dict(lease)
        updated["spec"] = spec
        if clear_stop and STOP_ANNOTATION in (lease["metadata"].get("annotations") or {}):
            annotations = {k: v for k, v in lease["metadata"]["annotations"].items() if k != STOP_ANNOTATION}
            updated["metadata"] = {**lease["metadata"], "annotations": annotations}
        # PUT with the resourceVersion we read: if someone else wrote it meanwhile, we get 409.
        self.client.request("PUT", LEASES.path(self.namespace, LOCK_NAME), body=updated)

    def _ours_or_busy(self) -> dict[str, Any]:
        lease = self.current()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            raise ClusterBusy(f"lost the maintenance lock on {self.client.cluster}: now {lease and lease['spec'].get('holderIdentity')}")
        return lease

    def renew(self) -> None:
        """Before a change: still ours and still alive, or ClusterBusy. A lapsed lease is not taken
        back: between its expiry and now another operation may have believed the cluster free."""
        lease = self._ours_or_busy()
        if lease_expired(lease, dt.datetime.now(dt.timezone.utc)):
            spec = lease.get("spec") or {}
            raise ClusterBusy(
                f"the maintenance lock on {self.client.cluster} lapsed (renewed {spec.get('renewTime')}, lasts "
                f"{spec.get('leaseDurationSeconds')}s): stopping before any further change; run again to take it anew"
            )
        try:
            self._write(lease, self._spec(dt.datetime.now(dt.timezone.utc), lease["spec"].get("acquireTime")))
        except KubeApiError as err:
            if err.status != 409:
                raise
            # Mapped tasks of one run renew in parallel: a conflict with ourselves is fine, as long
            # as the lock is still ours.
            self._ours_or_busy()

    def request_stop(self, reason: str) -> None:
        """Tell the run's other tasks to start nothing new (the lock must be ours)."""
        self._ours_or_busy()
        self.client.patch(LEASES, LOCK_NAME, {"metadata": {"annotations": {STOP_ANNOTATION: reason[:1000]}}}, self.namespace)

    def stop_requested(self) -> str | None:
        """Why the run was told to stop, if it was (the lock must still be ours)."""
        lease = self._ours_or_busy()
        return (lease["metadata"].get("annotations") or {}).get(STOP_ANNOTATION)

    def release(self) -> bool:
        """Drop the lock if we hold it; True if something was released."""
        lease = self.current()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return False
        try:
            self.client.delete(LEASES, LOCK_NAME, self.namespace, preconditions={"uid": lease["metadata"]["uid"], "resourceVersion": lease["metadata"]["resourceVersion"]})
        except KubeApiError as err:
            if err.status in (404, 409):
                return False
            raise
        return True
