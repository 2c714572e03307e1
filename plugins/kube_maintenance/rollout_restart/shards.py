"""Rollout restart's shards as one mapped, deferrable task: a task instance per shard of namespaces.

Each look (``tasks.restart``) runs in a worker and returns quickly: it reads the cluster, restarts
what may start now (at most the shard's share of ``max_concurrent_rollouts`` rolling), judges each
rollout as ``kubectl rollout status`` does and marks the ones seen complete. While something it
restarted is still rolling, the task defers to the triggerer, holding no worker slot, with a
``RolloutProgressTrigger`` that watches those workloads (list then watch) and resumes the task as
soon as one of them settles (done, or failed: what ``kubectl rollout status`` stops waiting on; a
rollout merely progressing wakes nothing, since each wake costs a worker slot for a look that would
decide nothing), or at the next time it must look anyway: a rollout's timeout, a Deployment's
progress deadline, a StatefulSet's or DaemonSet's new pod turning stuck, at the latest
``poke_interval_seconds`` (which also keeps the cluster's lock renewed). Where the shard stands (its
namespace and kind, the generations its patches produced, when it began) travels in the trigger's
event, so a triggerer restart loses nothing; a retry starts from the first look, and the cluster says
what was already restarted (a restartedAt at or after the run's start is never patched again).
The shard's own deadline replaces the sensor's timeout: 48 hours from its first look.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.deferring import LookThenDeferOperator
from kube_maintenance.rollout_restart.triggers import RolloutProgressTrigger


class RestartShardOperator(LookThenDeferOperator):
    """One shard of a rollout restart (mapped over the plan's shards: ``restart``)."""

    ui_color = "#eef7e8"

    def __init__(self, *, cluster_name: str, shard: dict[str, Any], poke_interval: float = 15.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.shard = shard
        self.poke_interval = poke_interval

    def look(self, context: Any, state: dict[str, Any]) -> Any:
        from kube_maintenance.rollout_restart import tasks as op

        outcome = op.restart(cluster_name=self.cluster_name, shard=self.shard, state=state, poke_interval=self.poke_interval, **context)
        if isinstance(outcome, op.ShardWaits):
            wait = outcome.wait
            trigger = RolloutProgressTrigger.for_workloads(
                self.cluster_name, wait.ref, wait.namespace, wait.resource_version, wait.seen, wait.label_selector, outcome.moment.isoformat(), outcome.state
            )
            self.defer(trigger=trigger, method_name="resume")
        return outcome
