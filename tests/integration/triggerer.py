"""A triggerer beside ``dag.test``: deferred tasks wait in threads, as they wait in a real triggerer.

``dag.test`` runs a deferred task's trigger inline: the task instance blocks the run loop until its
trigger fires, so mapped tasks that wait at the same time (a rollout restart's shards) take turns
one whole task at a time instead of running side by side, as they do on a real Airflow. Installed
(``BackgroundTriggerer().install(monkeypatch)``), a task that defers is left deferred, its trigger
runs in a thread of its own, and when it fires the event is submitted as the triggerer submits it
(``handle_event_submit``: the event is added to the task's ``next_kwargs`` and the task instance
is scheduled again); ``dag.test``'s loop then resumes it. Each trigger's run is recorded
(``runs``), so a test can tell what a task waited on, what woke it and when.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class TriggerRun:
    task: str  # task_id[map_index]
    classpath: str
    kwargs: dict[str, Any]
    started: float  # time.time()
    ended: float | None = None
    payload: Any = None
    error: str | None = None

    @property
    def moment(self) -> float | None:
        """The trigger's deadline (``moment``), as a timestamp, when it has one."""
        import datetime as dt

        value = self.kwargs.get("moment")
        return dt.datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None


@dataclass
class BackgroundTriggerer:
    runs: list[TriggerRun] = field(default_factory=list)
    reschedules: list[str] = field(default_factory=list)  # task_id[map_index] of every reschedule seen
    _fired: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "BackgroundTriggerer":
        import airflow.sdk.definitions.dag as dag_module

        original_run_task = dag_module._run_task
        original_sleep = time.sleep

        def run_task(*, ti: Any, task: Any, run_triggerer: bool = False) -> Any:
            from airflow.sdk.execution_time.comms import DeferTask
            from airflow.utils.state import TaskInstanceState

            result = original_run_task(ti=ti, task=task, run_triggerer=False)
            name = f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id
            if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE:
                self.reschedules.append(name)
            msg = getattr(result, "msg", None)
            if ti.state == TaskInstanceState.DEFERRED and isinstance(msg, DeferTask):
                self._start(ti, name, msg)
            return result

        def sleep(seconds: float) -> None:
            # dag.test's loop sleeps a second when every unfinished task waits: wake it as soon as
            # a trigger fired instead (only that call: every other sleep is left alone).
            caller = sys._getframe(1)
            if seconds == 1 and caller.f_code.co_name == "test" and caller.f_code.co_filename == dag_module.__file__:
                self._fired.wait(1)
                self._fired.clear()
                return
            original_sleep(seconds)

        monkeypatch.setattr(dag_module, "_run_task", run_task)
        monkeypatch.setattr(time, "sleep", sleep)
        return self

    def _start(self, ti: Any, name: str, msg: Any) -> None:
        from airflow.sdk._shared.module_loading import import_string
        from airflow.sdk.serde import deserialize

        kwargs = deserialize(msg.trigger_kwargs)
        run = TriggerRun(name, msg.classpath, dict(kwargs), time.time())
        with self._lock:
            self.runs.append(run)
        trigger = import_string(msg.classpath)(**kwargs)
        ti_id = ti.id

        def fire() -> None:
            event = None
            try:

                async def first_event() -> Any:
                    return await anext(trigger.run(), None)

                event = asyncio.run(first_event())
            except Exception as exc:  # noqa: BLE001 - recorded; the task then resumes without an event
                run.error = f"{type(exc).__name__}: {exc}"
            run.ended = time.time()
            run.payload = getattr(event, "payload", None)
            self._submit(ti_id, event)
            self._fired.set()

        threading.Thread(target=fire, name=f"triggerer-{name}", daemon=True).start()

    @staticmethod
    def _submit(ti_id: Any, event: Any) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session

        for attempt in range(20):
            try:
                with create_session() as session:
                    ti = session.get(TaskInstance, ti_id)
                    if ti is None:
                        return
                    handle_event_submit(event or TriggerEvent(None), task_instance=ti, session=session)
                return
            except Exception:  # noqa: BLE001 - SQLite busy with dag.test's own writes: try again
                if attempt == 19:
                    raise
                time.sleep(0.1)

    def of(self, task_prefix: str) -> list[TriggerRun]:
        with self._lock:
            return [r for r in self.runs if r.task.startswith(task_prefix)]
