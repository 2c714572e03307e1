"""Triggers every operation shares. Small and serialisable: the triggerer imports this module."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger("kube_maintenance")

# After a watch fails, a trigger still waits this long (or to its deadline, if sooner) before it
# wakes the task. An error that lasts (a watch the role does not grant, an API server down) would
# otherwise wake the task, which looks, defers and fails again at once: a loop that takes a worker
# slot each turn and floods the logs. A 410 Gone costs at most this much delay before the relist.
ERROR_BACKOFF_SECONDS = 10.0


async def back_off_after_error(deadline: dt.datetime) -> None:
    """Sleep ``ERROR_BACKOFF_SECONDS``, never past ``deadline``."""
    remaining = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
    await asyncio.sleep(max(0.0, min(ERROR_BACKOFF_SECONDS, remaining)))


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


# ------------------------------------------------------------------------------ list then watch
_WATCH_THREADS: Any = None


def _watch_threads() -> Any:
    """The threads blocking watches run in: their own pool, so that many deferred tasks waiting at
    once in one triggerer do not queue behind the event loop's small default executor."""
    global _WATCH_THREADS
    if _WATCH_THREADS is None:
        from concurrent.futures import ThreadPoolExecutor

        _WATCH_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="kube-maintenance-watch")
    return _WATCH_THREADS


class ListThenWatchTrigger(BaseTrigger):
    """Fires as soon as something the task waits on changes (``watches``: see
    ``core.watches.watch_target``; followed by ``core.watches.first_relevant_change``), or
    at ``moment`` at the latest (an absolute time: the next time the task must look anyway; a
    triggerer restart does not push it back), with the task's ``state`` in its event. The event
    also says what woke it: ``{"state": ..., "woke": "change" | "deadline" | "error", "why": ...}``.

    The cluster is reached as the tasks reach it (the registry's entry for ``cluster_name``); each
    watch blocks in a thread of its own pool, off the triggerer's event loop, for at most the time
    left. Any error just ends the wait early: the task looks at the cluster again anyway. The
    trigger decides nothing: the task, resumed, looks and decides; a subclass may only say which
    changes are worth waking it for (``relevant``), as each wake costs a worker slot for a look.
    """

    def __init__(self, cluster_name: str, watches: list[dict[str, Any]], moment: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.watches = watches
        self.moment = moment
        self.state = state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "cluster_name": self.cluster_name,
            "watches": self.watches,
            "moment": self.moment,
            "state": self.state,
        }

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.serialize() == self.serialize()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self.cluster_name, self.moment))

    def relevant(self, watch: dict[str, Any]) -> Any:
        """Which changes of ``watch``'s objects wake the task, beyond their having changed at all:
        a predicate on the object as changed, or None (any change). Deletions always count."""
        return None

    def describe(self) -> str:
        from kube_maintenance.core.watches import describe_watch

        return "; ".join(describe_watch(w) for w in self.watches) or "nothing"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.moment)
        remaining = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
        woke, why = "deadline", f"deadline {self.moment} reached"
        if remaining > 0 and self.watches:
            log.info("%s on %s: watching %s until %s", type(self).__name__, self.cluster_name, self.describe(), self.moment)
            try:
                what = await asyncio.wait_for(self._first_change(remaining), timeout=remaining)
                if what:
                    woke, why = "change", what
            except asyncio.TimeoutError:
                pass
            except Exception as exc:  # noqa: BLE001 - a wait cut short is harmless: the task looks again
                woke, why = "error", f"{type(exc).__name__}: {exc}"
                log.warning("%s on %s: watching %s ended early: %s", type(self).__name__, self.cluster_name, self.describe(), why)
                await back_off_after_error(deadline)
        log.info("%s on %s: woke by %s (%s)", type(self).__name__, self.cluster_name, woke, why)
        yield TriggerEvent({"state": self.state, "woke": woke, "why": why})

    async def _first_change(self, seconds: float) -> str | None:
        from asgiref.sync import sync_to_async

        from kube_maintenance.core.watches import first_relevant_change

        kube = await sync_to_async(self._client)()
        loop = asyncio.get_running_loop()
        pending = {loop.run_in_executor(_watch_threads(), first_relevant_change, kube, watch, seconds, self.relevant(watch)) for watch in self.watches}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                what = future.result()  # an error ends the wait early
                if what:
                    return what
        return None

    def _client(self) -> Any:
        from kube_maintenance.core.k8s import KubeClient
        from kube_maintenance.core.registry import load_registry

        return KubeClient.for_cluster(load_registry().cluster(self.cluster_name))
