"""The registry's lock_namespace: where a cluster's maintenance Lease lives, and where runs look for it."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from kube_maintenance.core.audit import AuditTrail
from kube_maintenance.core.lock import lock_target
from kube_maintenance.core.registry import RegistryError, parse_registry
from kube_maintenance.core.runtime import TaskRuntime

from .test_registry import GOOD


def with_lock_namespace(value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["clusters"][0]["lock_namespace"] = value
    return data


def test_the_lock_namespace_defaults_to_the_one_rbac_yaml_creates() -> None:
    assert parse_registry(GOOD).cluster("staging").lock_namespace == "kube-maintenance"
    assert parse_registry(with_lock_namespace("platform-ops")).cluster("staging").lock_namespace == "platform-ops"


@pytest.mark.parametrize("value", ["Kube_Maintenance", "", "-ops", "x" * 64, 7])
def test_a_lock_namespace_that_is_no_namespace_name_names_the_field(value: Any) -> None:
    with pytest.raises(RegistryError, match=r"clusters\[0\] \(staging\)\.lock_namespace: expected a namespace name"):
        parse_registry(with_lock_namespace(value))


def test_a_run_takes_its_lock_in_the_registry_namespace() -> None:
    cluster = parse_registry(with_lock_namespace("platform-ops")).cluster("staging")
    rt = TaskRuntime(cluster=cluster, audit=AuditTrail.from_context({}, cluster.name, dry_run=True))
    rt.__dict__["kube"] = object()  # no cluster is reached: only the lock's address is looked at
    assert (rt.lock.namespace, rt.lock.holder) == ("platform-ops", "?/?")
    assert lock_target(cluster.lock_namespace) == "lease/platform-ops/kube-maintenance-lock"
