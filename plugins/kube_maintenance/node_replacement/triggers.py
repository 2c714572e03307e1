"""Node replacement's triggers: what a deferred batch waits for on the triggerer."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger("kube_maintenance.node_replacement")


class PodsOnNodesChangeTrigger(BaseTrigger):
    """Fires as soon as a pod on one of ``nodes`` changes or goes (a drain has something to look at
    again), or at ``moment`` at the latest (a budget that refused an eviction may allow it by
    then), with the batch's state as its event. One list and one watch per node, resumed from the
    list's resourceVersion, run in threads off the triggerer's event loop; any error just ends the
    wait early: the task looks at the cluster again anyway."""

    def __init__(self, cluster_name: str, nodes: list[str], moment: str, state: dict[str, Any]) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.nodes = nodes
        self.moment = moment
        self.state = state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"cluster_name": self.cluster_name, "nodes": self.nodes, "moment": self.moment, "state": self.state}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.moment)
        remaining = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
        if remaining > 0 and self.nodes:
            try:
                await asyncio.wait_for(self._first_change(remaining), timeout=remaining)
            except asyncio.TimeoutError:
                pass
            except Exception as exc:  # noqa: BLE001 - a wait cut short is harmless: the task looks again
                log.warning("watching the pods of %s ended early: %s", ", ".join(self.nodes), exc)
        yield TriggerEvent({"state": self.state})

    async def _first_change(self, seconds: float) -> None:
        from asgiref.sync import sync_to_async

        kube = await sync_to_async(self._client)()
        watches = [asyncio.ensure_future(asyncio.to_thread(self._watch_node, kube, node, seconds)) for node in self.nodes]
        try:
            await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watch in watches:
                watch.cancel()  # the thread itself ends with its watch (bounded by ``seconds``)

    def _client(self) -> Any:
        from kube_maintenance.core.k8s import KubeClient
        from kube_maintenance.core.registry import load_registry

        return KubeClient.for_cluster(load_registry().cluster(self.cluster_name))

    @staticmethod
    def _watch_node(kube: Any, node: str, seconds: float) -> None:
        from kube_maintenance.core.k8s import PODS

        selector = f"spec.nodeName={node}"
        _, resource_version = kube.list(PODS, field_selector=selector)
        for event in kube.watch_events(PODS, None, resource_version, field_selector=selector, timeout_seconds=max(1, int(seconds))):
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED", "ERROR"):
                return
