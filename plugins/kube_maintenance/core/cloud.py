"""EC2 and Auto Scaling through the amazon provider's hooks (one ``aws`` connection per cluster).

Only what node replacement needs: which group an instance belongs to, its state, terminating it
*in its group without lowering desired capacity* (so the group launches a replacement), and for a
surge, launching one instance as the group would, in a chosen zone, and attaching it to the group.
Botocore retries throttling and 5xx itself (standard mode); we add nothing on top.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GONE_STATES = frozenset({"shutting-down", "terminated"})
# Tags on an instance launched ahead of a surge: the instance it stands in for, and the run.
SURGE_REPLACES_TAG = "kube-maintenance.io/replaces"
SURGE_RUN_TAG = "kube-maintenance.io/launched-by"


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

    def instances_by_dns_name(self, names: list[str]) -> dict[str, tuple[str, str]]:
        """(instance id, state) of the latest instance EC2 knows by each private DNS name (a node's
        name); names EC2 does not know are left out."""
        if not names:
            return {}
        self.calls += 1
        found: dict[str, tuple[str, str, Any]] = {}
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "private-dns-name", "Values": names}]):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    name = inst.get("PrivateDnsName")
                    if name and (name not in found or inst["LaunchTime"] > found[name][2]):
                        found[name] = (inst["InstanceId"], inst["State"]["Name"], inst["LaunchTime"])
        return {name: (iid, state) for name, (iid, state, _) in found.items()}

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

    def drift(self, instance_ids: list[str]) -> dict[str, list[str]]:
        """For each instance in an Auto Scaling group: how it differs from what the group launches
        now (empty: up to date). Instances outside any group are left out."""
        from kube_maintenance.node_replacement.drift import GroupTemplate, LaunchedInstance, drift_reasons

        launched: dict[str, dict[str, Any]] = {}
        for i in range(0, len(instance_ids), 50):  # DescribeAutoScalingInstances takes at most 50 ids
            self.calls += 1
            for inst in self.autoscaling.describe_auto_scaling_instances(InstanceIds=instance_ids[i : i + 50]).get("AutoScalingInstances", []):
                launched[inst["InstanceId"]] = inst
        if not launched:
            return {}
        ec2_facts: dict[str, dict[str, Any]] = {}
        self.calls += 1
        for page in self.ec2.get_paginator("describe_instances").paginate(InstanceIds=sorted(launched)):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    ec2_facts[inst["InstanceId"]] = inst
        groups = {name: self._group_template(info) for name, info in self.groups(sorted({i["AutoScalingGroupName"] for i in launched.values()})).items()}
        out = {}
        for instance_id, inst in launched.items():
            template = inst.get("LaunchTemplate") or {}
            facts = ec2_facts.get(instance_id, {})
            instance = LaunchedInstance(template.get("LaunchTemplateId"), template.get("Version"), facts.get("ImageId"), facts.get("InstanceType"))
            out[instance_id] = drift_reasons(instance, groups.get(inst["AutoScalingGroupName"], GroupTemplate(None, None, None, None)))
        return out

    def _group_template(self, group: dict[str, Any]) -> Any:
        """What a group launches now: its template, the version "$Latest"/"$Default" resolve to, and
        that version's AMI and instance type (none when the group mixes instance types)."""
        from kube_maintenance.node_replacement.drift import GroupTemplate

        mixed = group.get("MixedInstancesPolicy") or {}
        spec = group.get("LaunchTemplate") or (mixed.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification") or {}
        template_id = spec.get("LaunchTemplateId")
        if not template_id:
            return GroupTemplate(None, None, None, None)  # a launch configuration, or nothing to compare
        self.calls += 2
        template = self.ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
        wanted = str(spec.get("Version") or "$Default")
        number = {"$latest": template["LatestVersionNumber"], "$default": template["DefaultVersionNumber"]}.get(wanted.lower(), wanted)
        data = self.ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[str(number)])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        overrides = (mixed.get("LaunchTemplate") or {}).get("Overrides")
        return GroupTemplate(template_id, str(number), data.get("ImageId"), None if overrides else data.get("InstanceType"))

    def suspend_processes(self, group_name: str, processes: list[str]) -> None:
        self.calls += 1
        self.autoscaling.suspend_processes(AutoScalingGroupName=group_name, ScalingProcesses=processes)

    def resume_processes(self, group_name: str, processes: list[str]) -> None:
        self.calls += 1
        self.autoscaling.resume_processes(AutoScalingGroupName=group_name, ScalingProcesses=processes)

    def tag_group(self, group_name: str, key: str, value: str) -> None:
        self.calls += 1
        tag = {"ResourceId": group_name, "ResourceType": "auto-scaling-group", "Key": key, "Value": value, "PropagateAtLaunch": False}
        self.autoscaling.create_or_update_tags(Tags=[tag])

    def untag_group(self, group_name: str, key: str) -> None:
        self.calls += 1
        self.autoscaling.delete_tags(Tags=[{"ResourceId": group_name, "ResourceType": "auto-scaling-group", "Key": key}])

    def terminate_in_group(self, instance_id: str, decrement_desired: bool = False) -> dict[str, Any]:
        """Terminate an instance in its group: replaced (in place), or not (after a surge)."""
        self.calls += 1
        resp = self.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement_desired)
        return resp.get("Activity", {})

    # ------------------------------------------------------------------------------ surge per zone
    def launch_template_of(self, group: dict[str, Any]) -> tuple[dict[str, str] | None, str]:
        """The launch template (id and version) a group launches with, or why one instance cannot
        be launched as the group would (a launch configuration, a mix of instance types)."""
        if group.get("MixedInstancesPolicy"):
            return None, "it mixes instance types and purchase options (MixedInstancesPolicy): Auto Scaling alone chooses what to launch"
        spec = group.get("LaunchTemplate") or {}
        if not spec.get("LaunchTemplateId") and not spec.get("LaunchTemplateName"):
            return None, "it launches from a launch configuration, not a launch template"
        template = {"LaunchTemplateId": spec["LaunchTemplateId"]} if spec.get("LaunchTemplateId") else {"LaunchTemplateName": spec["LaunchTemplateName"]}
        template["Version"] = str(spec.get("Version") or "$Default")
        return template, ""

    def zone_subnets(self, groups: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
        """For each group: Availability Zone -> the first of its subnets in that zone (one call)."""
        by_group = {g["AutoScalingGroupName"]: [s.strip() for s in (g.get("VPCZoneIdentifier") or "").split(",") if s.strip()] for g in groups}
        subnet_ids = sorted({s for subnets in by_group.values() for s in subnets})
        zone_of: dict[str, str] = {}
        if subnet_ids:
            self.calls += 1
            for subnet in self.ec2.describe_subnets(SubnetIds=subnet_ids).get("Subnets", []):
                zone_of[subnet["SubnetId"]] = subnet["AvailabilityZone"]
        out: dict[str, dict[str, str]] = {}
        for name, subnets in by_group.items():
            out[name] = {}
            for subnet in subnets:
                if subnet in zone_of:
                    out[name].setdefault(zone_of[subnet], subnet)
        return out

    def surge_instances(self, replaced_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Instances launched to stand in for each of ``replaced_ids`` (any run, any state)."""
        if not replaced_ids:
            return {}
        self.calls += 1
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in replaced_ids}
        filters = [{"Name": f"tag:{SURGE_REPLACES_TAG}", "Values": replaced_ids}]
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or ()}
                    out.setdefault(tags.get(SURGE_REPLACES_TAG, ""), []).append(inst)
        return out

    def launch_like_group(self, group: dict[str, Any], subnet_id: str, replaces: str, run: str, attempt: int) -> str:
        """Launch one instance as ``group`` would (its launch template and version, its
        propagated tags) into ``subnet_id``. The client token makes a retried call return the
        instance the first call launched instead of launching another."""
        template, why = self.launch_template_of(group)
        if template is None:
            raise ValueError(f"cannot launch for {group['AutoScalingGroupName']}: {why}")
        tags = [
            {"Key": t["Key"], "Value": t["Value"]}
            for t in group.get("Tags") or ()
            if t.get("PropagateAtLaunch") and not t["Key"].startswith("aws:")
        ]
        tags += [{"Key": SURGE_REPLACES_TAG, "Value": replaces}, {"Key": SURGE_RUN_TAG, "Value": run[:256]}]
        token = hashlib.sha256(f"{run}/{replaces}/{attempt}".encode()).hexdigest()[:64]
        self.calls += 1
        resp = self.ec2.run_instances(
            LaunchTemplate=template,
            SubnetId=subnet_id,
            MinCount=1,
            MaxCount=1,
            ClientToken=token,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        return resp["Instances"][0]["InstanceId"]

    def attach_to_group(self, group_name: str, instance_ids: list[str]) -> None:
        """Attach running instances to a group; Auto Scaling raises desired capacity by their count."""
        self.calls += 1
        self.autoscaling.attach_instances(AutoScalingGroupName=group_name, InstanceIds=instance_ids)

    def terminate_unattached(self, instance_ids: list[str]) -> None:
        """Terminate instances that belong to no group (a surge launch the run never attached)."""
        if instance_ids:
            self.calls += 1
            self.ec2.terminate_instances(InstanceIds=instance_ids)
