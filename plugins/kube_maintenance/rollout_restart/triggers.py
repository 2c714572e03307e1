"""Rollout restart's trigger: what a deferred shard waits on in the triggerer.

A shard waits only while what it may start is started and something it restarted is still
rolling: on those rollouts, of one kind in one namespace (namespaces go one after another, and in
each the kinds in order, so that is all a shard ever has in flight). Their status is what
``kubectl rollout status`` judges, so any change to one of them may be a rollout progressing,
completing (a slot for the next restart) or failing (a progress deadline): the shard looks again.
Changes to the kind's other workloads (done, skipped, or waiting for a slot) do not wake it, nor
does a rollout progressing without settling (each wake costs a worker slot for a look that would
decide nothing): it wakes when one of its rollouts is done or failed, as ``kubectl rollout status``
would stop waiting on it, or goes. What is time-bound (a rollout's timeout, a StatefulSet's or
DaemonSet's new pod turning stuck, a progress deadline the controller has not reported yet) is the
trigger's deadline.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.triggers import ListThenWatchTrigger
from kube_maintenance.core.watches import watch_target


class RolloutProgressTrigger(ListThenWatchTrigger):
    """Fires at the first change of the workloads a restart shard waits on (``watches``: its
    rollouts in flight, of one kind in one namespace, resumed from the resourceVersion of the
    shard's own list, its own patches not counting), or at ``moment``: the next time the shard must
    look anyway (a rollout's timeout,
    a Deployment's progress deadline, a StatefulSet's or DaemonSet's new pod turning stuck, the
    longest sleep between looks)."""

    def relevant(self, watch: dict[str, Any]) -> Any:
        """A rollout in flight progressing wakes nothing; one settling (done, or failed on its
        progress deadline) does, as does one deleted: only those change what the shard does next."""
        from kube_maintenance.rollout_restart.decisions import KINDS, rollout_settled

        kind = next((k for k in KINDS if f"{k.lower()}s" == watch.get("plural")), None)
        return None if kind is None else (lambda obj: rollout_settled(obj, kind))

    @classmethod
    def for_workloads(
        cls, cluster_name: str, ref: Any, namespace: str, resource_version: str, seen: dict[str, str], label_selector: str | None, moment: str, state: dict[str, Any]
    ) -> "RolloutProgressTrigger":
        return cls(cluster_name, [watch_target(ref, namespace, resource_version, seen, label_selector, only_seen=True)], moment, state)
