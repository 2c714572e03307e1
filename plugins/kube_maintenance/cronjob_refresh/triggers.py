"""CronJob refresh's trigger: what a deferred wait for the pods of deleted Jobs waits on in the triggerer."""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.triggers import ListThenWatchTrigger
from kube_maintenance.core.watches import watch_target


class JobPodsGoneTrigger(ListThenWatchTrigger):
    """Fires as soon as one of the pods of the deleted Jobs goes (``watches``: per namespace, the
    pods labelled with those Jobs' controller uids, resumed from the resourceVersion of the task's
    own list; only the deletion of a pod it saw counts), or at ``moment``: the next time the task must look anyway (the
    pods-gone timeout, the longest sleep between looks)."""

    @classmethod
    def for_pods(cls, cluster_name: str, ref: Any, waits: list[dict[str, Any]], moment: str, state: dict[str, Any]) -> "JobPodsGoneTrigger":
        """``waits``: per namespace, ``{"namespace", "label_selector", "resource_version", "seen"}``."""
        watches = [watch_target(ref, w["namespace"], w["resource_version"], w["seen"], w["label_selector"], wake_on=("DELETED",), only_seen=True) for w in waits]
        return cls(cluster_name, watches, moment, state)
