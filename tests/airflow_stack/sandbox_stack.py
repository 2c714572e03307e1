"""What the browser and distributed tests' Airflow runs against: names, the registry, and a view of the staging sandbox cluster."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

_INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)
from harness import registry_for  # noqa: E402

from sandbox.monitor import WRITE_VERBS
from sandbox.resources import NODES
from sandbox.scenario import World

DAG_IDS = ("node_replacement__staging", "cronjob_refresh__staging", "rollout_restart__staging")
USERNAME = "admin"
LOCK = ("leases.coordination.k8s.io", "default", "kube-maintenance-lock")


def browser_registry(world: World) -> dict[str, Any]:
    """The integration tests' registry (windows always open), with small numbers so runs are fast
    (the browser and the distributed tests use it alike).

    The trigger forms' own defaults are left alone: the tests submit them as a person would.
    """
    return registry_for(
        world,
        node_replacement={
            "max_batches": 2,
            "poke_interval_seconds": 1,
            "retries": 0,
            "retry_delay_seconds": 1,
            "defaults": {"validation_interval_seconds": 1, "drain_timeout_seconds": 600, "replacement_timeout_seconds": 60},
        },
        # Their deferred waits wake at the first change of what they watch in the triggerer; the poke
        # interval is only the longest sleep between looks (a second would make them poll).
        cronjob_refresh={"poke_interval_seconds": 20, "retries": 0, "retry_delay_seconds": 1},
        rollout_restart={"poke_interval_seconds": 20, "retries": 0, "retry_delay_seconds": 1},
    )


@dataclass
class Staging:
    """What the tests read from (and set on) the staging sandbox cluster."""

    world: World

    @property
    def cluster(self) -> Any:
        return self.world.clusters["staging"].cluster

    @property
    def store(self) -> Any:
        return self.cluster.store

    def request_seq(self) -> int:
        return len(self.cluster.requests)

    def writes_since(self, seq: int) -> list[Any]:
        """Every request that changes something (any verb but get/list/watch) since ``seq``."""
        return [r for r in self.cluster.requests.since(seq) if r.verb in WRITE_VERBS]

    def node_names(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.store.iter(NODES))

    def node(self, name: str) -> dict[str, Any] | None:
        return self.store.try_get(NODES, None, name)

    def lease(self) -> dict[str, Any] | None:
        return self.store.try_get(*LOCK)

    def instance_states(self) -> dict[str, str]:
        ec2 = boto3.client(
            "ec2", region_name=self.world.region("staging"), endpoint_url=self.world.moto_url, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        return {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
