"""Node replacement's batches as one mapped task: a task instance per batch, strictly one after
another, whatever ``max_batches`` says (the DAG no longer grows with it).

Each instance walks its batch through the runbook's steps, in order:

    previous batch done -> launch surge -> cordon -> drain -> terminate -> wait for replacement -> validate

A step either finishes (the next one runs at once) or says "not yet" (False); then the task defers
to the triggerer, holding no worker slot, and resumes at the same step as soon as something the
step judges changes, or after a poke interval at the latest: the drain as soon as the pods it
waits for on the batch's nodes are gone, a new one lands there, or a budget that refused an
eviction allows one (``PodsOnNodesChangeTrigger``), the waits for surge and replacement nodes as
soon as a Node joins or its readiness, taints or cordon change (``NodesChangeTrigger``), the
validation between its spaced checks, woken early by a regression (``HealthChangeTrigger``). The
last two watch from the step's view of the cluster (``views``: what its first look listed, reduced
to what it judges) and hand it back kept current, so a resumed step does not list the cluster again. A
step says what to watch in the batch's state (``watch_nodes``, ``watch_pods``, ``watch_budgets``,
``wait_for_nodes``, ``wait_for_health``, and ``wake_at`` for a deadline of its own); without any,
a plain timer (``PokeLaterTrigger``). What woke the task (``woken_by``) is handed to the step it
resumes. The first step waits on the batch before (another task instance): that wait is a
reschedule, which hands the decision back to the scheduler. What the steps hand to each other
(the Deployments scaled up, the terminations, when replacements joined, the validation's count)
travels with the deferral, in the trigger's event, so a triggerer restart loses nothing. A retry
starts again from the first step: every step is idempotent (it reads the cluster and EC2 before
it changes anything).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger

from kube_maintenance.core.lock import LEASE_DURATION_SECONDS
from kube_maintenance.core.triggers import PokeLaterTrigger
from kube_maintenance.node_replacement.triggers import HealthChangeTrigger, NodesChangeTrigger, PodsOnNodesChangeTrigger

log = logging.getLogger("kube_maintenance.node_replacement")

STEPS = ("previous_batch_done", "launch_surge", "cordon", "drain", "terminate", "wait_for_replacement", "validate")
# Steps whose False means "not yet, look again": every other step finishes in one go.
WAITING_STEPS = frozenset({"previous_batch_done", "launch_surge", "drain", "wait_for_replacement", "validate"})


class ReplaceBatchOperator(BaseOperator):
    """One batch of a node replacement (mapped over the plan's batches: ``batch``)."""

    ui_color = "#e8f4fd"

    def __init__(self, *, cluster_name: str, batch: dict[str, Any], max_batches: int, poke_interval: float = 15.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.batch = batch
        self.max_batches = max_batches
        self.poke_interval = poke_interval

    def execute(self, context: Any) -> Any:
        return self._advance(context, {"step": 0})

    def resume(self, context: Any, event: dict[str, Any] | None = None, **_: Any) -> Any:
        event = event or {}
        return self._advance(context, dict(event.get("state") or {"step": 0}), event.get("woken_by"))

    def _advance(self, context: Any, state: dict[str, Any], woken_by: dict[str, Any] | None = None) -> Any:
        from kube_maintenance.node_replacement import tasks as op

        index = int(self.batch["index"])
        context["kube_maintenance_map_label"] = self.batch.get("label", f"batch {index + 1}")
        context["batch_state"] = state
        while state["step"] < len(STEPS):
            name = STEPS[state["step"]]
            step: Callable[..., Any] = getattr(op, name)
            if woken_by:
                state["woken_by"] = woken_by  # for the step that waited, and only for it
                woken_by = None
            try:
                done = step(cluster_name=self.cluster_name, index=index, max_batches=self.max_batches, **context)
            finally:
                state.pop("woken_by", None)
            if done is False and name in WAITING_STEPS:
                moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.poke_interval)
                if name == "previous_batch_done":
                    # Waiting on another task instance, not on the cluster: give the slot back to
                    # the scheduler (a retry of the batch before may need it) and be rescheduled.
                    from airflow.sdk.exceptions import AirflowRescheduleException

                    raise AirflowRescheduleException(moment)
                self.defer(trigger=self.trigger_for(state, moment), method_name="resume")
            log.info("batch %d: %s done", index + 1, name)
            state["step"] += 1
        return {"batch": index + 1, "terminated": (state.get("terminated") or {}).get("terminated", [])}

    def trigger_for(self, state: dict[str, Any], moment: dt.datetime) -> BaseTrigger:
        """The trigger a waiting step asked for in the batch's state (the hints are taken out of the
        state it carries): by default ``moment``, a poke interval away; a step's ``wake_at`` instead."""
        watch_nodes = state.pop("watch_nodes", None)
        watch_budgets = state.pop("watch_budgets", None)
        watch_pods = state.pop("watch_pods", None)
        wait_for_nodes = state.pop("wait_for_nodes", None)
        wait_for_health = state.pop("wait_for_health", None)
        wake_at = state.pop("wake_at", None)
        # Never wait past a third of the lock's lease: each look renews it, and a step that finds it
        # lapsed stops (a validation interval may be as long as the lease itself).
        latest = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=LEASE_DURATION_SECONDS / 3)
        when = min(dt.datetime.fromisoformat(wake_at) if wake_at else moment, latest).isoformat()
        if watch_nodes or watch_budgets:
            return PodsOnNodesChangeTrigger(self.cluster_name, watch_nodes or [], when, state, budgets=watch_budgets, pods=watch_pods)
        if wait_for_nodes:
            return NodesChangeTrigger(self.cluster_name, when, state, seen=wait_for_nodes.get("seen"))
        if wait_for_health:
            return HealthChangeTrigger(
                self.cluster_name, when, state, problems=wait_for_health.get("problems"), fire_on=wait_for_health.get("fire_on", "any"), waiting_for=wait_for_health.get("waiting_for"),
            )
        return PokeLaterTrigger(when, state)
