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

    def groups(self, group_names: list[str]) -> dict[str, dict[str, Any]]:
        """The named Auto Scaling groups (capacity and instances), one call."""
        if not group_names:
            return {}
        self.calls += 1
        resp = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=group_names)
        return {g["AutoScalingGroupName"]: g for g in resp.get("AutoScalingGroups", [])}

    def group_instances(self, group_names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Instances (id, lifecycle and health state) of each named Auto Scaling group."""
        return {name: g.get("Instances", []) for name, g in self.groups(group_names).items()}

    def set_desired_capacity(self, group_name: str, desired: int) -> None:
        """An absolute value, so a retried call does not add capacity twice."""
        self.calls += 1
        self.autoscaling.set_desired_capacity(AutoScalingGroupName=group_name, DesiredCapacity=desired, HonorCooldown=False)

    def terminate_in_group(self, instance_id: str, decrement_desired: bool = False) -> dict[str, Any]:
        """Terminate an instance in its group: replaced (in place), or not (after a surge)."""
        self.calls += 1
        resp = self.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement_desired)
        return resp.get("Activity", {})
