"""The resource types the simulator serves, as discovery describes them."""
from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CLUSTER_VERBS = ALL_VERBS


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" is the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "eviction"
    singular: str = field(default="")

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def key(self) -> str:
        """Unique name, e.g. ``deployments.apps`` or ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def base_path(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"


def _rt(group, version, kind, plural, namespaced, short=(), cats=(), sub=()):
    return ResourceType(group, version, kind, plural, namespaced, tuple(short), tuple(cats), tuple(sub), kind.lower())


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    _rt("", "v1", "Namespace", "namespaces", False, ["ns"], sub=["status"]),
    _rt("", "v1", "Node", "nodes", False, ["no"], sub=["status"]),
    _rt("", "v1", "Pod", "pods", True, ["po"], ["all"], sub=["status", "eviction"]),
    _rt("", "v1", "Event", "events", True, ["ev"]),
    _rt("", "v1", "Service", "services", True, ["svc"], ["all"], sub=["status"]),
    _rt("", "v1", "ConfigMap", "configmaps", True, ["cm"]),
    _rt("", "v1", "ReplicationController", "replicationcontrollers", True, ["rc"], ["all"], sub=["status", "scale"]),
    _rt("apps", "v1", "Deployment", "deployments", True, ["deploy"], ["all"], sub=["status", "scale"]),
    _rt("apps", "v1", "ReplicaSet", "replicasets", True, ["rs"], ["all"], sub=["status", "scale"]),
    _rt("apps", "v1", "DaemonSet", "daemonsets", True, ["ds"], ["all"], sub=["status"]),
    _rt("apps", "v1", "StatefulSet", "statefulsets", True, ["sts"], ["all"], sub=["status", "scale"]),
    _rt("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    _rt("batch", "v1", "Job", "jobs", True, cats=["all"], sub=["status"]),
    _rt("batch", "v1", "CronJob", "cronjobs", True, ["cj"], ["all"], sub=["status"]),
    _rt("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["pdb"], sub=["status"]),
    _rt("coordination.k8s.io", "v1", "Lease", "leases", True),
    _rt("events.k8s.io", "v1", "Event", "events", True, ["ev"]),
)

BY_KEY: dict[str, ResourceType] = {rt.key: rt for rt in RESOURCE_TYPES}
BY_GVR: dict[tuple[str, str, str], ResourceType] = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCE_TYPES}
BY_KIND: dict[tuple[str, str], ResourceType] = {}
for _rt_ in RESOURCE_TYPES:
    BY_KIND.setdefault((_rt_.group_version, _rt_.kind), _rt_)

# Store keys used throughout the simulator and its controllers.
NAMESPACES = "namespaces"
NODES = "nodes"
PODS = "pods"
EVENTS = "events"
DEPLOYMENTS = "deployments.apps"
REPLICASETS = "replicasets.apps"
DAEMONSETS = "daemonsets.apps"
STATEFULSETS = "statefulsets.apps"
CONTROLLERREVISIONS = "controllerrevisions.apps"
JOBS = "jobs.batch"
CRONJOBS = "cronjobs.batch"
PDBS = "poddisruptionbudgets.policy"
LEASES = "leases.coordination.k8s.io"


def groups() -> dict[str, list[str]]:
    """Named API groups and their versions (core excluded)."""
    out: dict[str, list[str]] = {}
    for rt in RESOURCE_TYPES:
        if rt.group:
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
    return out


def kind_for_key(key: str) -> ResourceType:
    return BY_KEY[key]
