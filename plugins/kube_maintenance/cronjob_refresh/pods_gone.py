"""CronJob refresh's wait for the pods of deleted Jobs, as a deferrable task (``refresh.wait_for_pods_gone``).

Each look (``tasks.wait_for_pods_gone``) runs in a worker and returns quickly: one list per
namespace of the pods of the group's deleted Jobs. While some are left, the task defers to the
triggerer, holding no worker slot, with a ``JobPodsGoneTrigger`` that watches those pods (list then
watch) and resumes the task as soon as one goes, or at the next time it must look anyway: the
pods-gone timeout (``pods_gone_timeout_seconds`` after the deletion: the task's own deadline, as the
sensor's timeout was), at the latest ``poke_interval_seconds`` (which also keeps the cluster's lock
renewed). A triggerer restart loses nothing; a retry simply looks again.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.deferring import LookThenDeferOperator
from kube_maintenance.core.k8s import PODS
from kube_maintenance.cronjob_refresh.triggers import JobPodsGoneTrigger


class WaitForPodsGoneOperator(LookThenDeferOperator):
    """Until the pods of one group's deleted Jobs are gone (in the mapped ``refresh`` task group)."""

    template_fields = ("deletion",)
    ui_color = "#fdf3e8"

    def __init__(self, *, cluster_name: str, deletion: Any, poke_interval: float = 15.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.deletion = deletion
        self.poke_interval = poke_interval

    def look(self, context: Any, state: dict[str, Any]) -> Any:
        from kube_maintenance.cronjob_refresh import tasks as op

        outcome = op.wait_for_pods_gone(cluster_name=self.cluster_name, deletion=self.deletion, state=state, poke_interval=self.poke_interval, **context)
        if isinstance(outcome, op.PodsWait):
            trigger = JobPodsGoneTrigger.for_pods(self.cluster_name, PODS, outcome.waits, outcome.moment.isoformat(), outcome.state)
            self.defer(trigger=trigger, method_name="resume")
        return outcome
