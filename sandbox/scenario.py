"""The seeded demo: what a small production EKS cluster runs, and the two-cluster world around it.

``seed_demo`` fills a cluster whose nodes exist with workloads a maintenance run meets in real life:
Helm-managed team namespaces, Deployments guarded by PodDisruptionBudgets, system and log-shipping
DaemonSets, a StatefulSet, CronJobs whose running Jobs still use the image the CronJob has since
moved on from, finished Jobs, and a stray unmanaged pod in a scratch namespace.

``start_world`` starts one moto server and N sandbox clusters on top of it (default: "staging" in
eu-west-1 and "production" in us-east-1), each with two Auto Scaling groups whose instances become
its Nodes, seeds the demo, and writes one kubeconfig per cluster.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import podutil
from .aws import CloudBridge, MotoServer, NodeGroup, ProvisionedNetwork, _backdate, attach_cloud
from .cluster import SandboxCluster
from .config import RUN_SECONDS_ANNOTATION, SandboxConfig
from .resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, JOBS, NAMESPACES, NODES, PDBS, PODS, STATEFULSETS

Obj = dict[str, Any]

DAY = 86_400.0
INSTALLED_AGE = 90 * DAY  # when the demo's namespaces and workloads were installed
HELM = "Helm"
CRONJOB_SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAINTENANCE_NAMESPACE = "kube-maintenance"
# Team namespaces installed by Helm, with the team that owns each.
HELM_NAMESPACES = {"shop": "storefront", "payments": "payments", "search": "search", "observability": "platform"}
SCRATCH_NAMESPACE = "scratch"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


# -------------------------------------------------------------------------------- manifest helpers
def _container(name: str, image: str, cpu: str = "100m", memory: str = "128Mi", port: int | None = None) -> Obj:
    container: Obj = {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
    }
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    return container


def _helm_labels(release: str, component: str, chart: str, version: str) -> dict[str, str]:
    """The labels Helm charts created by ``helm create`` put on every object they render."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/version": version,
        "app.kubernetes.io/managed-by": HELM,
        "helm.sh/chart": f"{chart}-{version}",
    }


def _helm_annotations(release: str, namespace: str) -> dict[str, str]:
    return {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}


@dataclass
class App:
    """One workload: its names, labels and pod template, rendered into whichever kind it is."""

    name: str
    namespace: str
    image: str
    labels: dict[str, str]  # pod labels beyond the selector (app, tier, role ...)
    selector: dict[str, str]
    helm_release: str | None = None
    version: str = "1.0.0"
    cpu: str = "100m"
    memory: str = "128Mi"
    port: int | None = 8080
    tolerations: list[Obj] = field(default_factory=list)
    priority_class: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # pod template annotations

    def metadata(self) -> Obj:
        labels = dict(self.selector)
        labels.update(self.labels)
        if self.helm_release:
            labels.update(_helm_labels(self.helm_release, self.selector.get("app.kubernetes.io/name", self.name), self.name, self.version))
        meta: Obj = {"name": self.name, "namespace": self.namespace, "labels": labels}
        if self.helm_release:
            meta["annotations"] = _helm_annotations(self.helm_release, self.namespace)
        return meta

    def template(self) -> Obj:
        labels = dict(self.selector)
        labels.update(self.labels)
        spec: Obj = {
            "containers": [_container(self.name, self.image, self.cpu, self.memory, self.port)],
            "terminationGracePeriodSeconds": 30,
        }
        if self.tolerations:
            spec["tolerations"] = list(self.tolerations)
        if self.priority_class:
            spec["priorityClassName"] = self.priority_class
        metadata: Obj = {"labels": labels}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {"metadata": metadata, "spec": spec}


def deployment(app: App, replicas: int) -> Obj:
    return {
        "metadata": app.metadata(),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": dict(app.selector)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": app.template(),
        },
    }


def daemonset(app: App, max_unavailable: int | str = 1) -> Obj:
    return {
        "metadata": app.metadata(),
        "spec": {
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": dict(app.selector)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": 0}},
            "template": app.template(),
        },
    }


def statefulset(app: App, replicas: int, service_name: str) -> Obj:
    return {
        "metadata": app.metadata(),
        "spec": {
            "replicas": replicas,
            "serviceName": service_name,
            "podManagementPolicy": "OrderedReady",
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": dict(app.selector)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": app.template(),
        },
    }


def headless_service(app: App) -> Obj:
    return {
        "metadata": app.metadata(),
        "spec": {
            "clusterIP": "None",
            "selector": dict(app.selector),
            "ports": [{"name": "db", "port": app.port or 5432, "targetPort": app.port or 5432, "protocol": "TCP"}],
        },
    }


def pdb(name: str, namespace: str, selector: dict[str, str], *, min_available: int | str | None = None, max_unavailable: int | str | None = None) -> Obj:
    spec: Obj = {"selector": {"matchLabels": dict(selector)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": HELM}}, "spec": spec}


def job_spec(app: App, restart_policy: str = "OnFailure") -> Obj:
    template = app.template()
    template["spec"]["restartPolicy"] = restart_policy
    return {"backoffLimit": 2, "completions": 1, "parallelism": 1, "template": template}


def cronjob(app: App, schedule: str, concurrency_policy: str = "Forbid") -> Obj:
    job_labels = dict(app.selector)
    job_labels.update(app.labels)
    return {
        "metadata": app.metadata(),
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": concurrency_policy,
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "suspend": False,
            "jobTemplate": {"metadata": {"labels": job_labels}, "spec": job_spec(app)},
        },
    }


def job_of_cronjob(cron: Obj, scheduled_at: float, template_spec: Obj, clock: Any) -> Obj:
    """A Job as the CronJob controller creates it for one scheduled time.

    Named ``<cronjob>-<scheduled time in minutes since the epoch>``, labelled and annotated from the
    jobTemplate, with the scheduled-timestamp annotation and a controller reference to the CronJob.
    """
    job_template = cron["spec"]["jobTemplate"]
    annotations = dict(job_template.get("metadata", {}).get("annotations") or {})
    annotations[CRONJOB_SCHEDULED_ANNOTATION] = clock.iso(scheduled_at)
    return {
        "metadata": {
            "name": f"{cron['metadata']['name']}-{int(scheduled_at // 60)}",
            "namespace": cron["metadata"]["namespace"],
            "labels": dict(job_template.get("metadata", {}).get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [podutil.owner_reference(cron)],
        },
        "spec": template_spec,
    }


def last_slots(now: float, period_seconds: int, count: int) -> list[float]:
    """The ``count`` most recent fire times of a schedule firing every ``period_seconds`` on the
    UTC clock ("0 * * * *" is 3600, "*/30 * * * *" is 1800), newest first."""
    latest = now // period_seconds * period_seconds
    return [latest - i * period_seconds for i in range(count)]


# ------------------------------------------------------------------------------------------ seeding
@dataclass
class Demo:
    """What ``seed_demo`` created, by kind, as (namespace, name)."""

    namespaces: list[str] = field(default_factory=list)
    deployments: list[tuple[str, str]] = field(default_factory=list)
    daemonsets: list[tuple[str, str]] = field(default_factory=list)
    statefulsets: list[tuple[str, str]] = field(default_factory=list)
    pdbs: list[tuple[str, str]] = field(default_factory=list)
    cronjobs: list[tuple[str, str]] = field(default_factory=list)
    running_jobs: list[tuple[str, str]] = field(default_factory=list)  # run forever, on an old image
    finished_jobs: list[tuple[str, str]] = field(default_factory=list)  # complete after one short run
    bare_pods: list[tuple[str, str]] = field(default_factory=list)


class _Seeder:
    def __init__(self, cluster: SandboxCluster, region: str) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.region = region
        self.demo = Demo()
        self.now = cluster.clock.time()
        self.installed_at = self.now - INSTALLED_AGE

    def create(self, key: str, obj: Obj, created_at: float | None = None) -> Obj:
        """Create an object as installed ``INSTALLED_AGE`` ago (or at ``created_at``); bare pods are new."""
        created = self.store.create(key, obj)
        ref = (created["metadata"].get("namespace", ""), created["metadata"]["name"])
        if key != PODS:
            created = _backdate(self.store, key, ref[0] or None, ref[1], self.cluster.clock.iso(created_at or self.installed_at))
        bucket = {
            DEPLOYMENTS: self.demo.deployments,
            DAEMONSETS: self.demo.daemonsets,
            STATEFULSETS: self.demo.statefulsets,
            PDBS: self.demo.pdbs,
            CRONJOBS: self.demo.cronjobs,
            PODS: self.demo.bare_pods,
        }.get(key)
        if bucket is not None:
            bucket.append(ref)
        return created

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        if self.store.try_get(NAMESPACES, None, name) is None:
            self.create(NAMESPACES, {"metadata": {"name": name, "labels": dict(labels)}})
        self.demo.namespaces.append(name)

    # ------------------------------------------------------------------------------------- parts
    def namespaces(self) -> None:
        for name, team in HELM_NAMESPACES.items():
            self.namespace(name, {"app.kubernetes.io/managed-by": HELM, "team": team})
        self.namespace(SCRATCH_NAMESPACE, {})
        # What applying deploy/kubernetes/rbac.yaml creates: the namespace of kube-maintenance's
        # ServiceAccount and of the clusters' maintenance Lease (the registry's lock_namespace).
        self.namespace(MAINTENANCE_NAMESPACE, {"app.kubernetes.io/name": "kube-maintenance"})

    def kube_system(self) -> None:
        ecr = f"602401143452.dkr.ecr.{self.region}.amazonaws.com"
        everywhere = [{"operator": "Exists"}]  # node agents run on every node, tainted or not
        aws_node = App(
            "aws-node",
            "kube-system",
            f"{ecr}/amazon-k8s-cni:v1.18.5-eksbuild.1",
            labels={"app.kubernetes.io/name": "aws-node", "app.kubernetes.io/instance": "aws-vpc-cni"},
            selector={"k8s-app": "aws-node"},
            cpu="25m",
            port=None,
            tolerations=everywhere,
            priority_class="system-node-critical",
        )
        self.create(DAEMONSETS, daemonset(aws_node, "10%"))
        kube_proxy = App(
            "kube-proxy",
            "kube-system",
            f"{ecr}/eks/kube-proxy:v1.31.2-minimal-eksbuild.3",
            labels={"eks.amazonaws.com/component": "kube-proxy"},
            selector={"k8s-app": "kube-proxy"},
            port=None,
            tolerations=everywhere,
            priority_class="system-node-critical",
        )
        self.create(DAEMONSETS, daemonset(kube_proxy, "10%"))
        coredns = App(
            "coredns",
            "kube-system",
            f"{ecr}/eks/coredns:v1.11.3-eksbuild.2",
            labels={"eks.amazonaws.com/component": "coredns"},
            selector={"k8s-app": "kube-dns"},
            memory="70Mi",
            port=53,
            tolerations=[{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            priority_class="system-cluster-critical",
        )
        self.create(DEPLOYMENTS, deployment(coredns, 2))
        coredns_pdb = pdb("coredns", "kube-system", coredns.selector, max_unavailable=1)
        coredns_pdb["metadata"]["labels"] = {"eks.amazonaws.com/component": "coredns", "k8s-app": "kube-dns"}
        self.create(PDBS, coredns_pdb)

    def observability(self) -> None:
        fluent_bit = App(
            "fluent-bit",
            "observability",
            "cr.fluentbit.io/fluent/fluent-bit:3.1.9",
            labels={"app": "fluent-bit", "role": "log-shipper"},
            selector={"app.kubernetes.io/name": "fluent-bit", "app.kubernetes.io/instance": "fluent-bit"},
            helm_release="fluent-bit",
            version="0.47.10",
            memory="64Mi",
            port=2020,
            tolerations=[{"operator": "Exists"}],
        )
        self.create(DAEMONSETS, daemonset(fluent_bit))

    def shop(self) -> None:
        web = self._service_app("storefront-web", "shop", f"{REGISTRY}/shop/storefront-web:2.14.1", tier="frontend", role="web", version="2.14.1")
        self.create(DEPLOYMENTS, deployment(web, 3))
        self.create(PDBS, pdb("storefront-web", "shop", web.selector, min_available=2))
        cart = self._service_app("cart-api", "shop", f"{REGISTRY}/shop/cart-api:1.9.3", tier="backend", role="api", version="1.9.3")
        self.create(DEPLOYMENTS, deployment(cart, 2))
        self.create(PDBS, pdb("cart-api", "shop", cart.selector, max_unavailable=1))
        # One replica and no budget: a drain may take it down, as it would on a real cluster.
        recommendations = self._service_app(
            "recommendations", "shop", f"{REGISTRY}/shop/recommendations:0.8.0", tier="backend", role="worker", version="0.8.0"
        )
        self.create(DEPLOYMENTS, deployment(recommendations, 1))

    def payments(self) -> None:
        api = self._service_app("payments-api", "payments", f"{REGISTRY}/payments/payments-api:5.2.0", tier="backend", role="api", version="5.2.0")
        self.create(DEPLOYMENTS, deployment(api, 3))
        self.create(PDBS, pdb("payments-api", "payments", api.selector, max_unavailable=1))
        ledger = self._service_app(
            "ledger-db", "payments", "docker.io/library/postgres:16.4", tier="data", role="database", version="16.4", port=5432
        )
        ledger.memory = "512Mi"
        self.create("services", headless_service(ledger))
        self.create(STATEFULSETS, statefulset(ledger, 3, "ledger-db"))
        self.create(PDBS, pdb("ledger-db", "payments", ledger.selector, min_available=2))
        export = self._batch_app("settlement-export", "payments", f"{REGISTRY}/payments/settlement-export:3.3.0", "3.3.0")
        self._cronjob_with_history(export, "0 * * * *", 3600, old_image=f"{REGISTRY}/payments/settlement-export:3.2.0", finished=0)
        # A Helm pre-upgrade hook that ran to completion and stays around.
        migrate = self._batch_app("ledger-db-migrate", "payments", f"{REGISTRY}/payments/ledger-migrations:42", "42")
        migrate_job = {
            "metadata": {
                "name": "ledger-db-migrate-42",
                "namespace": "payments",
                "labels": dict(migrate.metadata()["labels"]),
                "annotations": {**_helm_annotations("ledger-db", "payments"), "helm.sh/hook": "pre-upgrade", "helm.sh/hook-weight": "-5"},
            },
            "spec": job_spec(migrate, restart_policy="Never"),
        }
        hook_ran_at = self.now - 3 * DAY
        self._finished_job(migrate_job, started_at=hook_ran_at + 2, completed_at=hook_ran_at + 47)

    def search(self) -> None:
        api = self._service_app("search-api", "search", f"{REGISTRY}/search/search-api:7.0.4", tier="backend", role="api", version="7.0.4")
        self.create(DEPLOYMENTS, deployment(api, 2))
        self.create(PDBS, pdb("search-api", "search", api.selector, min_available=1))
        reindex = self._batch_app("catalog-reindex", "search", f"{REGISTRY}/search/catalog-reindex:2.1.0", "2.1.0")
        self._cronjob_with_history(reindex, "*/30 * * * *", 1800, old_image=f"{REGISTRY}/search/catalog-reindex:2.0.7", finished=1)

    def scratch(self) -> None:
        nginx = App(
            "tmp-nginx",
            SCRATCH_NAMESPACE,
            "docker.io/library/nginx:1.27",
            labels={"app": "tmp-nginx"},
            selector={"app": "tmp-nginx"},
            port=80,
        )
        self.create(DEPLOYMENTS, deployment(nginx, 1))
        # Someone's `kubectl run`: no controller, so a drain must decide what to do with it.
        self.create(
            PODS,
            {
                "metadata": {"name": "debug-shell", "namespace": SCRATCH_NAMESPACE, "labels": {"run": "debug-shell"}},
                "spec": {
                    "containers": [{"name": "debug-shell", "image": "docker.io/library/busybox:1.36", "command": ["sleep", "86400"]}],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                },
            },
        )

    # ----------------------------------------------------------------------------------- helpers
    @staticmethod
    def _service_app(name: str, namespace: str, image: str, *, tier: str, role: str, version: str, port: int = 8080) -> App:
        return App(
            name,
            namespace,
            image,
            labels={"app": name, "tier": tier, "role": role},
            selector={"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name},
            helm_release=name,
            version=version,
            port=port,
        )

    @staticmethod
    def _batch_app(name: str, namespace: str, image: str, version: str) -> App:
        return App(
            name,
            namespace,
            image,
            labels={"app": name, "tier": "batch", "role": "job"},
            selector={"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name},
            helm_release=name,
            version=version,
            cpu="250m",
            memory="256Mi",
            port=None,
        )

    def _cronjob_with_history(self, app: App, schedule: str, period_seconds: int, old_image: str, finished: int) -> None:
        """A CronJob on its new image whose latest Job still runs (for ever) on ``old_image``,
        after ``finished`` earlier Jobs that ran on ``old_image`` too and completed."""
        cron = self.create(CRONJOBS, cronjob(app, schedule))
        slots = last_slots(self.now, period_seconds, finished + 1)

        def old_spec(forever: bool) -> Obj:
            spec = copy.deepcopy(cron["spec"]["jobTemplate"]["spec"])
            spec["template"]["spec"]["containers"][0]["image"] = old_image
            if forever:
                spec["template"].setdefault("metadata", {}).setdefault("annotations", {})[RUN_SECONDS_ANNOTATION] = "forever"
            return spec

        status: Obj = {}
        for slot in reversed(slots[1:]):
            done = self._finished_job(job_of_cronjob(cron, slot, old_spec(forever=False), self.cluster.clock), started_at=slot + 1, completed_at=slot + 240)
            status["lastSuccessfulTime"] = done["status"]["completionTime"]
        running = self.create(JOBS, job_of_cronjob(cron, slots[0], old_spec(forever=True), self.cluster.clock), created_at=slots[0])
        started = self.cluster.clock.iso(slots[0] + 1)
        self.store.mutate(JOBS, running["metadata"]["namespace"], running["metadata"]["name"], lambda job: job.setdefault("status", {}).setdefault("startTime", started), subresource="status")
        self.demo.running_jobs.append((running["metadata"]["namespace"], running["metadata"]["name"]))
        status["active"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": running["metadata"]["name"],
                "namespace": running["metadata"]["namespace"],
                "uid": running["metadata"]["uid"],
                "resourceVersion": running["metadata"]["resourceVersion"],
            }
        ]
        status["lastScheduleTime"] = self.cluster.clock.iso(slots[0])
        self.store.mutate(CRONJOBS, cron["metadata"]["namespace"], cron["metadata"]["name"], lambda obj: obj.update(status=status), subresource="status")

    def _finished_job(self, job: Obj, started_at: float, completed_at: float) -> Obj:
        """A Job that ran to completion back then: created, started and completed at those times.

        Its status is what the job controller leaves on a Job whose one pod succeeded; the pod itself
        is long gone (the sandbox does not seed pod history), so the controller has nothing to do.
        """
        created = self.create(JOBS, job, created_at=started_at - 1)
        start_iso, done_iso = self.cluster.clock.iso(started_at), self.cluster.clock.iso(completed_at)
        finished_conditions = [
            {
                "type": cond_type,
                "status": "True",
                "reason": "CompletionsReached",
                "message": "Reached expected number of succeeded pods",
                "lastProbeTime": done_iso,
                "lastTransitionTime": done_iso,
            }
            for cond_type in ("SuccessCriteriaMet", "Complete")
        ]
        status = {
            "startTime": start_iso,
            "completionTime": done_iso,
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": finished_conditions,
        }
        finished = self.store.mutate(JOBS, created["metadata"]["namespace"], created["metadata"]["name"], lambda obj: obj.update(status=status), subresource="status")
        self.demo.finished_jobs.append((finished["metadata"]["namespace"], finished["metadata"]["name"]))
        return finished


def seed_demo(cluster: SandboxCluster, region: str = "us-east-1") -> Demo:
    """Create the demo workloads (see the module docstring) in a cluster whose nodes exist.

    ``region`` only picks the EKS add-on images' registry. Everything is created through the store
    as ``kubectl apply`` / Helm would; the cluster's controllers then create and run the pods.
    """
    seeder = _Seeder(cluster, region)
    with cluster.store.lock:
        seeder.namespaces()
        seeder.kube_system()
        seeder.observability()
        seeder.shop()
        seeder.payments()
        seeder.search()
        seeder.scratch()
    return seeder.demo


def demo_pending(cluster: SandboxCluster, demo: Demo) -> list[str]:
    """What of the demo has not settled yet (empty once every workload is up and jobs ran)."""
    store = cluster.store
    waiting: list[str] = []
    with store.lock:
        for ns, name in demo.deployments:
            obj = store.try_get(DEPLOYMENTS, ns, name)
            want = (obj or {}).get("spec", {}).get("replicas", 1)
            if obj is None or obj.get("status", {}).get("availableReplicas", 0) < want:
                waiting.append(f"deployment {ns}/{name}")
        for ns, name in demo.statefulsets:
            obj = store.try_get(STATEFULSETS, ns, name)
            want = (obj or {}).get("spec", {}).get("replicas", 1)
            if obj is None or obj.get("status", {}).get("readyReplicas", 0) < want:
                waiting.append(f"statefulset {ns}/{name}")
        for ns, name in demo.daemonsets:
            status = (store.try_get(DAEMONSETS, ns, name) or {}).get("status", {})
            if not status.get("desiredNumberScheduled") or status.get("numberReady", 0) < status["desiredNumberScheduled"]:
                waiting.append(f"daemonset {ns}/{name}")
        for ns, name in demo.running_jobs:
            if not (store.try_get(JOBS, ns, name) or {}).get("status", {}).get("active"):
                waiting.append(f"running job {ns}/{name}")
        for ns, name in demo.finished_jobs:
            if podutil.condition(store.try_get(JOBS, ns, name) or {}, "Complete") is None:
                waiting.append(f"finished job {ns}/{name}")
        for ns, name in demo.bare_pods:
            if not podutil.is_ready(store.try_get(PODS, ns, name) or {}):
                waiting.append(f"pod {ns}/{name}")
    return waiting


# -------------------------------------------------------------------------------------------- world
DEFAULT_REGIONS = {"staging": "eu-west-1", "production": "us-east-1"}
GENERAL_NODE_AGE = 40 * DAY  # past a 30-day rotation policy: the demo has nodes to roll
BATCH_NODE_AGE = 3 * DAY


@dataclass(frozen=True)
class ClusterPlan:
    """One cluster of a world: its name, AWS region and Auto Scaling groups."""

    name: str
    region: str
    node_groups: tuple[NodeGroup, ...]

    @classmethod
    def default(cls, name: str, region: str | None = None) -> "ClusterPlan":
        return cls(
            name,
            region or DEFAULT_REGIONS.get(name, "eu-west-1"),
            (
                NodeGroup(f"{name}-general", "m5.large", desired=3, min_size=3, max_size=6, labels={"workload-type": "general"}, age_seconds=GENERAL_NODE_AGE),
                NodeGroup(f"{name}-batch", "c5.xlarge", desired=2, min_size=1, max_size=4, labels={"workload-type": "batch"}, age_seconds=BATCH_NODE_AGE),
            ),
        )

    @property
    def node_count(self) -> int:
        return sum(g.desired for g in self.node_groups)


@dataclass
class WorldCluster:
    plan: ClusterPlan
    cluster: SandboxCluster
    bridge: CloudBridge
    network: ProvisionedNetwork
    kubeconfig: Path | None  # None when the cluster serves no HTTP
    demo: Demo | None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def region(self) -> str:
        return self.plan.region

    @property
    def url(self) -> str:
        return self.cluster.url


@dataclass
class World:
    """A running moto server and the sandbox clusters on it; ``stop()`` ends them all."""

    directory: Path
    moto: MotoServer
    clusters: dict[str, WorldCluster] = field(default_factory=dict)

    @property
    def moto_url(self) -> str:
        return self.moto.url

    def kubeconfig(self, name: str) -> Path:
        path = self.clusters[name].kubeconfig
        if path is None:
            raise ValueError(f"cluster {name} serves no HTTP API, so it has no kubeconfig")
        return path

    def region(self, name: str) -> str:
        return self.clusters[name].region

    def stop(self) -> None:
        for member in self.clusters.values():
            member.cluster.stop()  # stops its cloud bridge too
        self.moto.stop()

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready_nodes(cluster: SandboxCluster) -> int:
    return sum(1 for node in cluster.store.iter(NODES) if podutil.is_node_ready(node))


def start_world(
    directory: str | Path,
    clusters: Iterable[str | ClusterPlan] = ("staging", "production"),
    config: SandboxConfig | None = None,
    *,
    seed: bool = True,
    serve_http: bool = True,
    timeout: float = 60.0,
    tls: bool = False,
    eks: Iterable[str] = (),
) -> World:
    """Start moto and one sandbox cluster per plan, wait for their nodes, seed the demo, write kubeconfigs.

    Kubeconfigs go to ``<directory>/<cluster>.kubeconfig``. ``config`` is shared by every cluster
    (each gets its own copy). Waits for the demo to settle when seeding; on any failure, everything
    started so far is stopped before the error propagates.

    ``tls`` serves every cluster over HTTPS (its kubeconfig trusting the cluster's own CA). The clusters
    named in ``eks`` are EKS clusters: HTTPS, EKS tokens only (``sandbox.eks``), and a cluster of that
    name in moto's EKS whose DescribeCluster leads to them.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    plans = [p if isinstance(p, ClusterPlan) else ClusterPlan.default(p) for p in clusters]
    eks_names = set(eks)
    if unknown := eks_names - {p.name for p in plans}:
        raise ValueError(f"eks names clusters the world does not have: {', '.join(sorted(unknown))}")
    if eks_names and not serve_http:
        raise ValueError("an EKS cluster needs its HTTP API (serve_http=True)")
    world = World(target, MotoServer().start())
    try:
        for plan in plans:
            cluster = SandboxCluster(plan.name, _copy_config(config))
            if tls or plan.name in eks_names:
                from .tls import make_tls

                cluster.tls = make_tls(plan.name)
            if plan.name in eks_names:
                from .eks import EksAuthenticator

                cluster.authenticator = EksAuthenticator(plan.name, plan.region, world.moto_url)
            if serve_http:
                cluster.start()
            else:
                cluster.bootstrap()
                cluster.manager.start()
            try:
                bridge, network = attach_cloud(cluster, world.moto_url, plan.region, plan.node_groups)
                if plan.name in eks_names:
                    from .eks import register_eks_cluster

                    register_eks_cluster(world.moto_url, plan.region, plan.name, cluster.url, cluster.tls.ca_data, list(network.subnets.values()))
            except BaseException:
                cluster.stop()
                raise
            kubeconfig = cluster.write_kubeconfig(target / f"{plan.name}.kubeconfig") if serve_http else None
            world.clusters[plan.name] = WorldCluster(plan, cluster, bridge, network, kubeconfig, None)
        for member in world.clusters.values():
            if not member.cluster.wait_for(lambda c=member.cluster, n=member.plan.node_count: _ready_nodes(c) >= n, timeout):
                raise TimeoutError(f"cluster {member.name}: {_ready_nodes(member.cluster)} of {member.plan.node_count} nodes Ready after {timeout:.0f}s")
        if seed:
            for member in world.clusters.values():
                member.demo = seed_demo(member.cluster, member.region)
            deadline = time.monotonic() + timeout
            for member in world.clusters.values():
                assert member.demo is not None
                while demo_pending(member.cluster, member.demo) and time.monotonic() < deadline:
                    time.sleep(0.1)
                pending = demo_pending(member.cluster, member.demo)
                if pending:
                    raise TimeoutError(f"cluster {member.name}: demo not settled after {timeout:.0f}s: {', '.join(pending)}")
    except BaseException:
        world.stop()
        raise
    return world


def two_clusters(directory: str | Path, config: SandboxConfig | None = None, **options: Any) -> World:
    """The default world: "staging" in eu-west-1 and "production" in us-east-1."""
    return start_world(directory, ("staging", "production"), config, **options)


def _copy_config(config: SandboxConfig | None) -> SandboxConfig:
    return dataclasses.replace(config) if config is not None else SandboxConfig()
