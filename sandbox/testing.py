"""Helpers for tests that drive a sandbox cluster through its store (no HTTP server needed)."""
from __future__ import annotations

import hashlib
import uuid
from typing import Any

from .config import SandboxConfig
from .podutil import owner_reference
from .resources import NODES, PODS

Obj = dict[str, Any]

KUBELET_VERSION = "v1.31.4"


def fast_config(**overrides: Any) -> SandboxConfig:
    """A config whose delays keep unit tests to fractions of a second."""
    values: dict[str, Any] = {
        "pod_start_seconds": 0.05,
        "pod_termination_seconds": 0.05,
        "job_run_seconds": 0.2,
        "node_boot_seconds": 0.1,
        "node_notready_seconds": 0.05,
        "node_delete_seconds": 0.1,
        "asg_poll_seconds": 0.05,
        "cronjob_poll_seconds": 0.2,
    }
    values.update(overrides)
    return SandboxConfig(**values)


def _node_index(name: str) -> int:
    """A stable small number per node name, for addresses and pod CIDRs."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def node_manifest(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    ready: bool = True,
    zone: str = "us-east-1a",
    instance_type: str = "m5.large",
    cpu: str = "2",
    memory: str = "7934460Ki",
    pods: int = 110,
    provider_id: str | None = None,
    now_iso: str = "1970-01-01T00:00:00Z",
) -> Obj:
    """A Node as a kubelet registers it (and then posts its status).

    ``ready=False`` gives a node whose kubelet posts Ready False (KubeletNotReady), as one still
    starting up (or one that never gets its network plugin running) does.
    """
    index = _node_index(name)
    internal_ip = f"10.0.{(index >> 8) % 256}.{index % 254 + 1}"
    region = zone[:-1] if zone and zone[-1].isalpha() else zone
    node_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/os": "linux",
        "failure-domain.beta.kubernetes.io/region": region,
        "failure-domain.beta.kubernetes.io/zone": zone,
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
    }
    node_labels.update(labels or {})

    def pressure(cond_type: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": cond_type,
            "status": "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now_iso,
            "lastTransitionTime": now_iso,
        }

    ready_condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "kubelet is posting ready status"
        if ready
        else "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized",
        "lastHeartbeatTime": now_iso,
        "lastTransitionTime": now_iso,
    }
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "20959212Ki"}
    spec: dict[str, Any] = {"podCIDR": f"10.244.{index % 256}.0/24", "podCIDRs": [f"10.244.{index % 256}.0/24"]}
    if provider_id:
        spec["providerID"] = provider_id
    if not ready:
        # The kubelet registers a node not yet Ready with this taint so nothing lands on it early.
        spec["taints"] = [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]
    machine_id = uuid.UUID(int=index * 7919 + 1).hex
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                pressure("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                pressure("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                pressure("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready_condition,
            ],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid4()),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.112-122.189.amzn2023.x86_64",
                "kubeProxyVersion": KUBELET_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "machineID": machine_id,
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.6.20241010",
                "systemUUID": "ec2" + machine_id[3:],
            },
        },
    }


def add_ready_node(cluster: Any, name: str, labels: dict[str, str] | None = None, **options: Any) -> Obj:
    """Register a Ready, schedulable Node the way a kubelet does; returns the stored object.

    ``options`` go to ``node_manifest`` (zone, instance_type, cpu, memory, pods, provider_id, ready).
    """
    manifest = node_manifest(name, labels, now_iso=cluster.clock.iso(), **options)
    return cluster.store.create(NODES, manifest)


def add_pod(
    cluster: Any,
    name: str,
    namespace: str = "default",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    restart_policy: str = "Always",
    node_name: str | None = None,
    owner: Obj | None = None,
    **spec_fields: Any,
) -> Obj:
    """Create a one-container pod (spec extras such as nodeSelector or tolerations as keywords)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}],
        "restartPolicy": restart_policy,
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30,
    }
    spec.update(spec_fields)
    if node_name:
        spec["nodeName"] = node_name
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return cluster.store.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
