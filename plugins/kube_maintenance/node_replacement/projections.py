"""What node replacement's judgements read of each object, kept as a list's pages arrive. Pure.

A node replacement lists whole collections: every Node, Deployment, DaemonSet and StatefulSet,
every kube-system and Pending pod. Decoded whole, at 5,000 nodes and 8,200 Deployments, they
are hundreds of megabytes, almost all of it what no judgement here reads: ``managedFields``, a
kubectl last-applied-configuration, a workload's pod template, a Node's images, nodeInfo,
capacity and addresses, a pod's containers, container statuses and projected volumes.
``KubeClient.list(..., project=<one of these>)`` applies a projection to each object as its
page arrives, so one page of whole objects is held at a time, and the collection only as its
projections.

Each projection keeps what its readers read, and says who they are; the unit test
``tests/unit/test_projections.py`` holds each reader to the same answer on the projection as on
the whole object. A new reader of a field a projection drops must add it here (and to the test).
Keys absent from the object stay absent: readers see ``.get()`` defaults exactly as before.

Where the readers read much of a sub-object it is kept whole, less its heavy parts: a Node's
metadata without managedFields, its spec, the Ready condition, a workload's status without its
conditions. Where they read a few fields of a big object (a pod; a workload's metadata and
spec), those fields are picked. Keeping instead every condition, a workload's whole metadata
and its spec less the template, and a pod's whole metadata and status costs about twice the
memory (a sandbox Node 5.8 KB instead of 3.8 KB held, a Deployment 4.1 KB instead of 1.1 KB, a
pod 4.4 KB instead of 2.3 KB): at 5,000 nodes, 5,000 kube-system pods and 8,200 Deployments,
some 85 MB instead of 40 MB, against a target of about 70 MB per task with boto3's 40 MB in it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

Obj = dict[str, Any]

MANAGED_FIELDS = "managedFields"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"


def _pick(source: Mapping[str, Any] | None, keys: Iterable[str]) -> Obj:
    source = source or {}
    return {k: source[k] for k in keys if k in source}


def _metadata(obj: Mapping[str, Any], keys: Iterable[str] | None = None) -> Obj:
    """``metadata`` without managedFields and a kubectl last-applied-configuration (a copy of the
    whole object as last applied, pod template included); only ``keys`` if given."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in meta.items() if k != MANAGED_FIELDS} if keys is None else _pick(meta, keys)
    annotations = out.get("annotations")
    if annotations and LAST_APPLIED_ANNOTATION in annotations:
        out["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED_ANNOTATION}
    return out


def _ready_condition(status: Any) -> Any:
    """``status`` with only its Ready condition, whole (the only condition the readers look at)."""
    if not isinstance(status, Mapping) or "conditions" not in status:
        return {} if isinstance(status, Mapping) else status
    return {"conditions": [c for c in status.get("conditions") or () if c.get("type") == "Ready"]}


def _keep(obj: Mapping[str, Any], **parts: Any) -> Obj:
    """``metadata`` and those of ``parts`` whose key the object has (absent stays absent)."""
    return {"metadata": parts.pop("metadata"), **{k: v for k, v in parts.items() if k in obj}}


def node(obj: Mapping[str, Any]) -> Obj:
    """A Node as a run judges, plans and marks it.

    Keeps ``metadata`` (name, labels, annotations, creationTimestamp: ``plan.plan_replacement``
    with its selector and the control-plane, Karpenter and EKS labels, the run's marks read by
    ``tasks``), the whole ``spec`` (providerID: ``plan.instance_of``;
    unschedulable; taints: ``triggers.node_judgement``), and the Ready condition
    (``plan.is_node_ready``). Drops managedFields and the rest of ``status``: images, nodeInfo,
    capacity, allocatable, addresses, volumes, the other conditions.
    """
    return _keep(obj, metadata=_metadata(obj), spec=obj.get("spec"), status=_ready_condition(obj.get("status")))


def node_health(obj: Mapping[str, Any]) -> Obj:
    """A Node as a validation judges it: its name and Ready condition (``views.health_view``,
    ``health.validation_report``, ``triggers.health_problems``), nothing else."""
    return _keep(obj, metadata=_metadata(obj, ("name",)), status=_ready_condition(obj.get("status")))


def node_joining(obj: Mapping[str, Any]) -> Obj:
    """A Node as a wait for joining nodes judges it (``views.joining_nodes_view``, for
    ``launch_surge`` and ``wait_for_replacement``): its name and creationTimestamp, spec.providerID
    (its instance) and the Ready condition. A wait lists every Node at its first look, with the
    boto3 models of the step before still held: labels and annotations it never reads would be
    about 12 MB of 5,000 nodes."""
    spec = obj.get("spec")
    kept_spec = _pick(spec, ("providerID",)) if isinstance(spec, Mapping) else spec
    return _keep(obj, metadata=_metadata(obj, ("name", "creationTimestamp")), spec=kept_spec, status=_ready_condition(obj.get("status")))


def workload(obj: Mapping[str, Any]) -> Obj:
    """A Deployment, DaemonSet or StatefulSet as a run judges its availability and finds its marks.

    Keeps name, namespace and annotations (``health.unavailable_workloads``, ``views.health_view``
    and ``triggers.health_judgement`` name it; ``protect.scale_back_to`` and ``tasks._scale_back`` read
    the run's scaled-up-by and replicas-before marks), ``spec.replicas`` (what it asks for), and
    ``status`` without its conditions (the counts: availableReplicas, readyReplicas,
    numberAvailable, desiredNumberScheduled, ...). Drops the pod template, volumeClaimTemplates,
    selector and strategy, managedFields, labels: not for ``protect.needs_a_spare``, which reads
    the template's labels of Deployments fetched one by one.
    """
    status = obj.get("status")
    counts = {k: v for k, v in status.items() if k != "conditions"} if isinstance(status, Mapping) else status
    return _keep(obj, metadata=_metadata(obj, ("name", "namespace", "annotations")), spec=_pick(obj.get("spec"), ("replicas",)), status=counts)


POD_METADATA = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "annotations", "ownerReferences")


def pod(obj: Mapping[str, Any]) -> Obj:
    """A pod as the health checks and a drain judge it.

    Keeps name, namespace, uid (the eviction's precondition), creation and deletion timestamps,
    annotations (a mirror pod's) and ownerReferences (its controller) (``drain.decide``,
    ``health.stuck_pending_pods``, ``health.unready_pods``, ``protect.ready_pods_elsewhere``),
    ``spec.nodeName``, the emptyDir volumes whole (``drain.refuse_emptydir_pods`` names them; no
    other volume changes a decision), ``status.phase`` and the Ready condition. Drops
    containers, the other volumes, tolerations, affinity, container statuses, IPs, labels.
    """
    spec = obj.get("spec") or {}
    kept_spec = _pick(spec, ("nodeName",))
    if "volumes" in spec:
        kept_spec["volumes"] = [v for v in spec.get("volumes") or () if "emptyDir" in v]
    status = obj.get("status") or {}
    kept_status = {**_pick(status, ("phase",)), **_ready_condition(status)}
    return _keep(obj, metadata=_metadata(obj, POD_METADATA), spec=kept_spec, status=kept_status)


# What a validation judges each kind by (``tasks._health``): a Node by its readiness, a workload by its counts.
FOR_HEALTH = {"node": node_health, "deployment": workload, "daemonset": workload, "statefulset": workload}
