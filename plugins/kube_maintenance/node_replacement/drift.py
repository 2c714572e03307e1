"""Has a node's instance drifted from what its Auto Scaling group launches now? Pure.

What eks-rolling-update, kops' "NeedsUpdate" and EKS managed node group updates replace: an
instance launched from another launch template, or an older version of it, or whose AMI or
instance type is no longer the template's.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GroupTemplate:
    """What the group launches now: its launch template, the version it resolves to, and that
    version's AMI and instance type (None where the template leaves it open, or where the group
    mixes instance types)."""

    template_id: str | None
    version: str | None
    image_id: str | None
    instance_type: str | None


@dataclass(frozen=True)
class LaunchedInstance:
    """What an instance was launched from, as EC2 and Auto Scaling record it."""

    template_id: str | None
    version: str | None
    image_id: str | None
    instance_type: str | None


def drift_reasons(instance: LaunchedInstance, group: GroupTemplate) -> list[str]:
    """Every way the instance differs from what its group launches now (empty: up to date)."""
    reasons = []
    if group.template_id and instance.template_id != group.template_id:
        reasons.append(f"launch template {instance.template_id or 'none'}, the group now launches {group.template_id}")
    elif group.version and instance.version and instance.version != group.version:
        reasons.append(f"launch template version {instance.version}, the group now launches version {group.version}")
    if group.image_id and instance.image_id and instance.image_id != group.image_id:
        reasons.append(f"AMI {instance.image_id}, the template's is {group.image_id}")
    if group.instance_type and instance.instance_type and instance.instance_type != group.instance_type:
        reasons.append(f"instance type {instance.instance_type}, the template's is {group.instance_type}")
    return reasons
