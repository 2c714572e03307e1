"""Node replacement's batches as one mapped task: a task instance per batch, strictly one after
another, whatever ``max_batches`` says (the DAG no longer grows with it).

Each instance walks its batch through the runbook's steps, in order:

    previous batch done -> launch surge -> cordon -> drain -> terminate -> wait for replacement -> validate

A step either finishes (the next one runs at once) or says "not yet" (False); then the task defers
to the triggerer, holding no worker slot, and resumes at the same step: after a poke interval, or
for the drain as soon as a pod on the batch's nodes changes (a trigger that watches them). The
first step waits on the batch before (another task instance): that wait is a reschedule, which
hands the decision back to the scheduler. What
the steps hand to each other (the Deployments scaled up, the terminations, when replacements
joined) travels with the deferral, in the trigger's event, so a triggerer restart loses nothing.
A retry starts again from the first step: every step is idempotent (it reads the cluster and
EC2 before it changes anything).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger

from kube_maintenance.core.triggers import PokeLaterTrigger
from kube_maintenance.node_replacement.triggers import PodsOnNodesChangeTrigger

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
        return self._advance(context, dict((event or {}).get("state") or {"step": 0}))

    def _advance(self, context: Any, state: dict[str, Any]) -> Any:
        from kube_maintenance.node_replacement import tasks as op

        index = int(self.batch["index"])
        context["kube_maintenance_map_label"] = self.batch.get("label", f"batch {index + 1}")
        context["batch_state"] = state
        while state["step"] < len(STEPS):
            name = STEPS[state["step"]]
            step: Callable[..., Any] = getattr(op, name)
            done = step(cluster_name=self.cluster_name, index=index, max_batches=self.max_batches, **context)
            if done is False and name in WAITING_STEPS:
                moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.poke_interval)
                if name == "previous_batch_done":
                    # Waiting on another task instance, not on the cluster: give the slot back to
                    # the scheduler (a retry of the batch before may need it) and be rescheduled.
                    from airflow.sdk.exceptions import AirflowRescheduleException

                    raise AirflowRescheduleException(moment)
                watch_nodes = state.pop("watch_nodes", None) if name == "drain" else None
                if watch_nodes:
                    trigger: BaseTrigger = PodsOnNodesChangeTrigger(self.cluster_name, watch_nodes, moment.isoformat(), state)
                else:
                    trigger = PokeLaterTrigger(moment.isoformat(), state)
                self.defer(trigger=trigger, method_name="resume")
            log.info("batch %d: %s done", index + 1, name)
            state["step"] += 1
        return {"batch": index + 1, "terminated": (state.get("terminated") or {}).get("terminated", [])}
