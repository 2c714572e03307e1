"""EC2 and Auto Scaling through the amazon provider's hooks (one ``aws`` connection per cluster).

Only what node replacement needs: which group an instance belongs to, its state, and terminating
it *in its group without lowering desired capacity* (so the group launches a replacement).
Botocore retries throttling and 5xx itself (standard mode); we add nothing on top.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GONE_STATES = frozenset({"shutting-down", "terminated"})


@dataclass(frozen=True)
class InstanceState:
    instance_id: str
    state: str  # EC2 state name, or "missing" when EC2 no longer knows it
    asg: str | None
    lifecycle: str | None  # the Auto Scaling lifecycle state (InService, Terminating, ...)

    @property
    def gone(self) -> bool:
        return self.state in GONE_STATES or self.state == "missing" or (self.lifecycle or "").startswith("Terminat")


class Cloud:
    def __init__(self, aws_conn_id: str, region: str | None) -> None:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

        self.autoscaling = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="autoscaling", region_name=region).get_conn()
        self.ec2 = EC2Hook(aws_conn_id=aws_conn_id, api_type="client_type", region_name=region).get_conn()
        self.calls = 0

    def instance_states(self, instance_ids: list[str]) -> dict[str, InstanceState]:
        """EC2 state and Auto Scaling group of each instance (two calls, whatever the count)."""
        if not instance_ids:
            return {}
        groups: dict[str, tuple[str, str]] = {}
        for i in range(0, len(instance_ids), 50):  # DescribeAutoScalingInstances takes at most 50 ids
            self.calls += 1
            resp = self.autoscaling.describe_auto_scaling_instances(InstanceIds=instance_ids[i : i + 50])
            for inst in resp.get("AutoScalingInstances", []):
                groups[inst["InstanceId"]] = (inst["AutoScalingGroupName"], inst.get("LifecycleState", ""))
        states: dict[str, str] = {}
        self.calls += 1
        paginator = self.ec2.get_paginator("describe_instances")
        try:
            for page in paginator.paginate(InstanceIds=instance_ids):
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        states[inst["InstanceId"]] = inst["State"]["Name"]
        except Exception as exc:  # noqa: BLE001 - an id EC2 has forgotten makes the whole call fail
            if "InvalidInstanceID" not in str(exc):
                raise
            for iid in instance_ids:
                try:
                    for reservation in self.ec2.describe_instances(InstanceIds=[iid]).get("Reservations", []):
                        for inst in reservation.get("Instances", []):
                            states[inst["InstanceId"]] = inst["State"]["Name"]
                except Exception as inner:  # noqa: BLE001
                    if "InvalidInstanceID" not in str(inner):
                        raise
        return {
            iid: InstanceState(iid, states.get(iid, "missing"), groups.get(iid, (None, None))[0], groups.get(iid, (None, None))[1])
            for iid in instance_ids
        }

    def group_instances(self, group_names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Instances (id, lifecycle and health state) of each named Auto Scaling group."""
        if not group_names:
            return {}
        self.calls += 1
        resp = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=group_names)
        return {g["AutoScalingGroupName"]: g.get("Instances", []) for g in resp.get("AutoScalingGroups", [])}

    def group_capacity(self, group_name: str) -> tuple[int, int, int]:
        """(min, desired, max) of a group."""
        self.calls += 1
        resp = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])
        groups = resp.get("AutoScalingGroups", [])
        if not groups:
            raise LookupError(f"Auto Scaling group {group_name} does not exist")
        g = groups[0]
        return g["MinSize"], g["DesiredCapacity"], g["MaxSize"]

    def terminate_in_group(self, instance_id: str) -> dict[str, Any]:
        """Terminate an instance and let its group replace it (desired capacity unchanged)."""
        self.calls += 1
        resp = self.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=False)
        return resp.get("Activity", {})
