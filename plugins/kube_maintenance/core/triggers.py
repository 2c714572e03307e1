"""Triggers every operation shares. Small and serialisable: the triggerer imports this module."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger("kube_maintenance")


class PokeLaterTrigger(BaseTrigger):
    """Fires at ``moment`` (an absolute time, so a triggerer restart does not push it back) with the
    batch's state as its event: all the task needs to resume where it stopped."""

    def __init__(self, moment: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.moment = moment
        self.state = state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"moment": self.moment, "state": self.state}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        delay = (dt.datetime.fromisoformat(self.moment) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        yield TriggerEvent({"state": self.state})
