"""A task that looks at the cluster in a worker, then waits on the triggerer until there is
something to look at again: the shape of rollout restart's shards and CronJob refresh's wait for
pods. Each look returns quickly; the trigger's event carries the task's state back to the next look,
so a triggerer restart loses nothing and a retry simply looks again from the start."""
from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperator

log = logging.getLogger("kube_maintenance")


class LookThenDeferOperator(BaseOperator):
    """Subclasses define ``look(context, state)``: it finishes the task (returns its result) or calls
    ``self.defer(..., method_name="resume")`` with a trigger whose event holds ``{"state": ...}``."""

    def execute(self, context: Any) -> Any:
        return self.look(context, {})

    def resume(self, context: Any, event: dict[str, Any] | None = None, **_: Any) -> Any:
        event = event or {}
        log.info("resumed: woke by %s (%s)", event.get("woke", "?"), event.get("why", ""))
        return self.look(context, dict(event.get("state") or {}))

    def look(self, context: Any, state: dict[str, Any]) -> Any:
        raise NotImplementedError
