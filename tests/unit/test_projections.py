"""Projections (node_replacement/projections.py): every judgement gives the same answer on the
projected object as on the whole one, the projection is much smaller, and KubeClient.list applies
it page by page.

The whole objects are what an API server returns (tests/unit/fixtures/k8s: an EKS Node with its
images and managedFields, a Deployment applied with kubectl, EKS's kube-proxy DaemonSet and one of
its pods, a Helm StatefulSet, a Deployment's pod, a Pending pod), varied into the cases the
judgements tell apart.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from kube_maintenance.core.cloud import InstanceState
from kube_maintenance.core.k8s import NODES, KubeClient
from kube_maintenance.node_replacement import drain, projections, views
from kube_maintenance.node_replacement import tasks as op
from kube_maintenance.node_replacement.health import preflight_report, stuck_pending_pods, unavailable_workloads, unready_pods, validation_report
from kube_maintenance.node_replacement.plan import CORDONED_BY_ANNOTATION, NodeReplacementParams, ParamError, instance_of, is_node_ready, plan_replacement
from kube_maintenance.node_replacement.protect import REPLICAS_BEFORE_ANNOTATION, SCALED_BY_ANNOTATION, needs_a_spare, ready_pods_elsewhere, scale_back_to
from kube_maintenance.node_replacement.triggers import health_judgement, health_problems, node_judgement, nodes_seen

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
NOW = dt.datetime(2026, 11, 30, 9, 10, tzinfo=dt.timezone.utc)
HOLDER = "node_replacement__prod/manual__2026-11-30T09:00:00+00:00"
OTHER = "node_replacement__prod/manual__2026-11-02T09:00:00+00:00"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def ago(**delta: float) -> str:
    return (NOW - dt.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ whole objects
def a_node(i: int, *, ready: str = "True", labels: dict[str, str] | None = None, drop_labels: tuple[str, ...] = (), annotations: dict[str, str] | None = None,
           unschedulable: bool = False, taints: list[dict[str, str]] | None = None, created: str | None = None, provider: str | None = None) -> dict[str, Any]:
    node = load("node")
    name = f"ip-10-0-12-{i}.eu-west-1.compute.internal"
    meta = node["metadata"]
    meta["name"] = name
    meta["uid"] = f"9c2f6a3e-1b7d-4e0a-8f55-{i:012d}"
    meta["labels"]["kubernetes.io/hostname"] = name
    meta["labels"].update(labels or {})
    for label in drop_labels:
        meta["labels"].pop(label)
    meta["annotations"].update(annotations or {})
    if created:
        meta["creationTimestamp"] = created
    node["spec"]["providerID"] = provider if provider is not None else f"aws:///eu-west-1a/i-0a1b2c3d4e5f{i:05x}"
    if unschedulable:
        node["spec"]["unschedulable"] = True
    if taints:
        node["spec"]["taints"] = taints
    ready_condition = node["status"]["conditions"][-1]
    ready_condition["status"] = ready
    if ready != "True":
        ready_condition.update(reason="NodeStatusUnknown", message="Kubelet stopped posting node status.", lastTransitionTime=ago(minutes=3))
    return node


UNREACHABLE = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": "2026-11-30T09:07:00Z"},
               {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-11-30T09:07:05Z"}]
CORDONED = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": "2026-11-30T09:01:00Z"}]
OURS = {CORDONED_BY_ANNOTATION: HOLDER, op.CORDONED_AT_ANNOTATION: "2026-11-30T09:01:00+00:00", op.UNSCHEDULABLE_BEFORE_ANNOTATION: "false"}


def nodes() -> list[dict[str, Any]]:
    """Nodes in every case a run tells apart."""
    return [
        a_node(1),
        a_node(2, created=ago(days=90)),
        a_node(3, ready="Unknown", taints=UNREACHABLE),
        a_node(4, unschedulable=True, taints=CORDONED, annotations=OURS),  # cordoned by this run
        a_node(5, unschedulable=True, taints=CORDONED),  # cordoned by hand
        a_node(6, unschedulable=True, taints=CORDONED, annotations={**OURS, op.TERMINATING_ANNOTATION: "i-0a1b2c3d4e5f00006"}),
        a_node(7, unschedulable=True, taints=CORDONED, annotations={**OURS, CORDONED_BY_ANNOTATION: OTHER, op.UNSCHEDULABLE_BEFORE_ANNOTATION: "true"}),
        a_node(8, annotations={op.SCALE_DOWN_DISABLED_ANNOTATION: "true", op.SCALE_DOWN_MARKED_BY_ANNOTATION: HOLDER}),
        a_node(9, annotations={op.SCALE_DOWN_DISABLED_ANNOTATION: "true"}),  # someone else's mark
        a_node(10, annotations={op.SCALE_DOWN_DISABLED_ANNOTATION: "true", op.SCALE_DOWN_MARKED_BY_ANNOTATION: OTHER}),
        a_node(11, labels={"karpenter.sh/nodepool": "default", "karpenter.sh/registered": "true"}, drop_labels=("eks.amazonaws.com/nodegroup",)),
        a_node(12, labels={"node-role.kubernetes.io/control-plane": ""}),
        a_node(13, created=ago(hours=2)),
        a_node(14, labels={"role": "db"}),
        a_node(15, provider="kind://docker/kind/kind-worker"),
        a_node(16, ready="False", taints=[{"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"}], created=ago(minutes=1)),
        a_node(17, annotations={projections.LAST_APPLIED_ANNOTATION: json.dumps({"metadata": {"labels": {"role": "worker"}}})}),
    ]


def a_deployment(name: str, *, replicas: int | None = 3, available: int | None = 3, annotations: dict[str, str] | None = None, status: bool = True) -> dict[str, Any]:
    d = load("deployment")
    d["metadata"]["name"] = name
    d["metadata"]["annotations"].update(annotations or {})
    if replicas is None:
        del d["spec"]["replicas"]
    else:
        d["spec"]["replicas"] = replicas
    if not status:
        del d["status"]
    elif available is None:
        del d["status"]["availableReplicas"]
    else:
        d["status"]["availableReplicas"] = available
        if available < (replicas or 1):
            d["status"]["conditions"][0].update(status="False", reason="MinimumReplicasUnavailable", message="Deployment does not have minimum availability.")
    return d


def deployments() -> list[dict[str, Any]]:
    return [
        a_deployment("checkout"),
        a_deployment("cart", available=1),
        a_deployment("search", replicas=None, available=None),
        a_deployment("new", status=False),
        a_deployment("ours", replicas=3, annotations={SCALED_BY_ANNOTATION: HOLDER, REPLICAS_BEFORE_ANNOTATION: "2"}),
        a_deployment("changed", replicas=5, annotations={SCALED_BY_ANNOTATION: HOLDER, REPLICAS_BEFORE_ANNOTATION: "2"}),
        a_deployment("theirs", replicas=2, annotations={SCALED_BY_ANNOTATION: OTHER, REPLICAS_BEFORE_ANNOTATION: "1"}),
        a_deployment("off", replicas=0, available=None),
    ]


def daemonsets() -> list[dict[str, Any]]:
    short = load("daemonset")
    short["metadata"]["name"] = "aws-node"
    short["status"].update(numberAvailable=4990, numberUnavailable=10, numberReady=4990)
    return [load("daemonset"), short]


def statefulsets() -> list[dict[str, Any]]:
    ready_only = load("statefulset")  # a status without availableReplicas: readyReplicas counts
    ready_only["metadata"]["name"] = "legacy"
    del ready_only["status"]["availableReplicas"]
    short = load("statefulset")
    short["metadata"]["name"] = "queue"
    short["spec"]["replicas"] = 3
    short["status"].update(availableReplicas=2, readyReplicas=2)
    return [load("statefulset"), ready_only, short]


def a_pod(fixture: str, name: str, *, ready: str | None = None, since: str | None = None, node: str | None = None, deleted: str | None = None,
          phase: str | None = None, owner: bool = True, annotations: dict[str, str] | None = None, created: str | None = None, emptydir: bool = True) -> dict[str, Any]:
    pod = load(fixture)
    meta = pod["metadata"]
    meta["name"] = name
    meta["uid"] = f"uid-{name}"
    if created:
        meta["creationTimestamp"] = created
    if deleted:
        meta["deletionTimestamp"] = deleted
        meta["deletionGracePeriodSeconds"] = 30
    if not owner:
        del meta["ownerReferences"]
    if annotations:
        meta.setdefault("annotations", {}).update(annotations)
    if node:
        pod["spec"]["nodeName"] = node
    if not emptydir:
        pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if "emptyDir" not in v]
    if phase:
        pod["status"]["phase"] = phase
    if ready is not None:
        for condition in pod["status"]["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status=ready, lastTransitionTime=since or condition["lastTransitionTime"])
    return pod


NODE_A = "ip-10-0-12-34.eu-west-1.compute.internal"
NODE_B = "ip-10-0-13-77.eu-west-1.compute.internal"


def pods() -> list[dict[str, Any]]:
    """kube-system's pods, a Deployment's pods and Pending ones, in every case a drain or a health
    check tells apart."""
    return [
        a_pod("pod_kube_proxy", "kube-proxy-ready"),
        a_pod("pod_kube_proxy", "kube-proxy-unready-long", ready="False", since=ago(minutes=20)),
        a_pod("pod_kube_proxy", "kube-proxy-unready-briefly", ready="False", since=ago(seconds=30)),
        a_pod("pod_kube_proxy", "kube-proxy-going", ready="False", since=ago(minutes=20), deleted=ago(minutes=1)),
        a_pod("pod_kube_proxy", "etcd-static", owner=False, annotations={drain.MIRROR_ANNOTATION: "0f1e2d3c"}),
        a_pod("pod_app", "checkout-on-a", node=NODE_A),
        a_pod("pod_app", "checkout-on-b"),
        a_pod("pod_app", "checkout-no-scratch", node=NODE_A, emptydir=False),
        a_pod("pod_app", "checkout-unready-on-a", node=NODE_A, ready="False", since=ago(minutes=2)),
        a_pod("pod_app", "bare", node=NODE_A, owner=False, emptydir=False),
        a_pod("pod_app", "done", node=NODE_A, phase="Succeeded", ready="False"),
        a_pod("pod_app", "terminating-long-ago", node=NODE_A, deleted=ago(minutes=30)),
        a_pod("pod_app", "terminating-now", node=NODE_A, deleted=ago(seconds=10)),
        a_pod("pod_pending", "pending-stuck", created=ago(minutes=20)),
        a_pod("pod_pending", "pending-fresh", created=ago(seconds=20)),
        a_pod("pod_pending", "pending-deleted", created=ago(minutes=20), deleted=ago(seconds=5)),
    ]


def projected(project: Callable[[dict[str, Any]], dict[str, Any]], objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Projections of copies (a projection keeps parts of its object: the whole one stays intact)."""
    return [project(o) for o in copy.deepcopy(objs)]


def report(r: Any) -> tuple[list[str], list[str]]:
    return r.problems, r.notes


# ------------------------------------------------------------------------------------------ nodes
@pytest.mark.parametrize("project", [projections.node, projections.node_health, projections.node_joining])
def test_a_node_is_judged_ready_or_not_alike(project: Callable[..., Any]) -> None:
    whole = nodes()
    assert [is_node_ready(n) for n in projected(project, whole)] == [is_node_ready(n) for n in whole]
    assert sum(map(is_node_ready, whole)) == len(whole) - 2


@pytest.mark.parametrize(
    "raw",
    [
        {"node_selector": "role=worker", "min_node_age_hours": 24, "max_nodes": 20, "batch_size": 2},
        {"max_nodes": 3, "batch_size": 1},
        {"node_selector": "eks.amazonaws.com/capacityType=ON_DEMAND,role!=db", "exclude_nodes": ["ip-10-0-12-1.eu-west-1.compute.internal"], "leave_eks_managed_nodes": True},
        {"node_names": ["ip-10-0-12-12.eu-west-1.compute.internal", "ip-10-0-12-5.eu-west-1.compute.internal"], "include_control_plane": True},
        {"node_names": ["ip-10-0-12-11.eu-west-1.compute.internal"]},  # Karpenter's: refused
        {"node_names": ["ip-10-0-12-15.eu-west-1.compute.internal"]},  # not an EC2 instance: refused
        {"node_names": ["ip-10-0-12-99.eu-west-1.compute.internal"]},  # no such node
    ],
)
def test_the_plan_is_the_same_from_projected_nodes(raw: dict[str, Any]) -> None:
    params = NodeReplacementParams.from_mapping(raw)
    unreplaceable = {"ip-10-0-12-2.eu-west-1.compute.internal": "instance i-0... is not running in an Auto Scaling group: nothing would replace it"}

    def plan(listed: list[dict[str, Any]]) -> Any:
        try:
            return plan_replacement(listed, params, NOW, 10, unreplaceable)
        except ParamError as exc:
            return f"ParamError: {exc}"

    whole = nodes()
    expected = plan(whole)
    assert plan(projected(projections.node, whole)) == expected
    assert isinstance(expected, str) or expected.nodes or raw.get("leave_eks_managed_nodes")  # the cases plan something


def test_a_node_is_matched_to_its_instance_and_judged_by_a_waiting_step_alike() -> None:
    whole = nodes()
    small = projected(projections.node, whole)
    assert [instance_of(n) for n in small] == [instance_of(n) for n in whole] == [instance_of(n) for n in projected(projections.node_joining, whole)]
    assert [node_judgement(n) for n in small] == [node_judgement(n) for n in whole]
    assert nodes_seen(small) == nodes_seen(whole), "a trigger compares its own list with the step's digest"
    assert node_judgement(whole[15]) == "NotReady, tainted node.cloudprovider.kubernetes.io/uninitialized=true:NoSchedule"


def test_the_views_a_waiting_step_keeps_are_the_same_from_projected_lists() -> None:
    """What wait_for_replacement and launch_surge (joining nodes) and validate (health) keep between
    looks, built from their projected lists; their triggers then apply whole objects' events to it."""
    whole = nodes()
    instances = {"i-0a1b2c3d4e5f00001", "i-0a1b2c3d4e5f00004"}
    for since in (None, NOW - dt.timedelta(hours=3)):
        expected = views.joining_nodes_view(whole, "42", instances, since)
        for project in (projections.node_joining, projections.node):
            assert views.joining_nodes_view(projected(project, whole), "42", instances, since) == expected
    assert len(expected["nodes"]) == 5, "two of the instances, two NotReady, one created since"
    listed = {"node": whole, "deployment": deployments(), "daemonset": daemonsets(), "statefulset": statefulsets()}
    replaced = ["ip-10-0-12-3.eu-west-1.compute.internal", "ip-10-0-12-4.eu-west-1.compute.internal"]
    expected = views.health_view({kind: (objs, "42") for kind, objs in listed.items()}, replaced)
    assert views.health_view({kind: (projected(projections.FOR_HEALTH[kind], objs), "42") for kind, objs in listed.items()}, replaced) == expected
    assert expected["node"]["unusual"] and expected["deployment"]["unusual"] and expected["statefulset"]["unusual"]


def test_preflight_judges_projected_nodes_and_pods_alike() -> None:
    whole_nodes, whole_pods = nodes(), pods()
    small_nodes, small_pods = projected(projections.node, whole_nodes), projected(projections.pod, whole_pods)
    for planned in (set(), {"ip-10-0-12-3.eu-west-1.compute.internal", "ip-10-0-12-16.eu-west-1.compute.internal"}):
        expected = report(preflight_report(whole_nodes, whole_pods, planned, NOW, 300))
        assert report(preflight_report(small_nodes, small_pods, planned, NOW, 300)) == expected
    assert expected == ([f"pods Pending for over 300s: shop/pending-stuck"], [expected[1][0]]) and "ip-10-0-12-5" in expected[1][0]


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, Any, str | None]] = []

    def patch(self, ref: Any, name: str, patch: Any, namespace: str | None = None, content_type: str | None = None) -> dict[str, Any]:
        self.patches.append((ref.plural, name, patch, namespace))
        return {}


class FakeCloud:
    def instance_states(self, ids: list[str]) -> dict[str, InstanceState]:
        return {i: InstanceState(i, "shutting-down", "general", "Terminating") for i in ids}


def fake_runtime() -> SimpleNamespace:
    audit = SimpleNamespace(lines=[])
    audit.record = lambda action, target, **kw: audit.lines.append((action, target, kw))
    return SimpleNamespace(kube=FakeKube(), cloud=FakeCloud(), audit=audit, holder=HOLDER)


def test_the_cleanup_finds_and_undoes_the_same_marks_on_projected_objects() -> None:
    def undo(listed_nodes: list[dict[str, Any]], listed_deployments: list[dict[str, Any]]) -> tuple[Any, ...]:
        rt = fake_runtime()
        restored = op._restore_cordoned_nodes(rt, op.Plan(batches=[]), listed_nodes)
        unmarked = op._remove_scale_down_marks(rt, listed_nodes)
        scaled_back = op._scale_back(rt, listed_deployments)
        return restored, unmarked, scaled_back, rt.kube.patches, rt.audit.lines

    whole_nodes, whole_deployments = nodes(), deployments()
    expected = undo(whole_nodes, whole_deployments)
    assert undo(projected(projections.node, whole_nodes), projected(projections.workload, whole_deployments)) == expected
    restored, unmarked, scaled_back = expected[:3]
    assert restored == ["ip-10-0-12-4.eu-west-1.compute.internal"] and unmarked == ["ip-10-0-12-8.eu-west-1.compute.internal"]
    assert scaled_back == ["deployment/shop/ours", "deployment/shop/changed"]


def test_preflight_marks_the_same_nodes_against_scale_down() -> None:
    def mark(listed: list[dict[str, Any]]) -> tuple[Any, ...]:
        rt = fake_runtime()
        op._disable_scale_down(rt, listed)
        return rt.kube.patches, rt.audit.lines

    whole = nodes()
    assert mark(projected(projections.node, whole)) == mark(whole)


# ---------------------------------------------------------------------------------------- workloads
def test_workloads_are_judged_available_or_not_alike() -> None:
    whole = deployments(), daemonsets(), statefulsets()
    small = tuple(projected(projections.workload, objs) for objs in whole)
    assert unavailable_workloads(*small) == unavailable_workloads(*whole)
    assert list(unavailable_workloads(*whole)) == [
        "daemonset/kube-system/aws-node", "deployment/shop/cart", "deployment/shop/changed", "deployment/shop/new", "deployment/shop/search", "statefulset/shop/queue",
    ]
    for kind, objs, kept in zip(("deployment", "daemonset", "statefulset"), whole, small):
        assert [health_judgement(kind, o) for o in kept] == [health_judgement(kind, o) for o in objs]
    health_nodes = projected(projections.node_health, nodes())
    assert health_problems(health_nodes, *small) == health_problems(nodes(), *whole)
    assert [scale_back_to(d, HOLDER) for d in small[0]] == [scale_back_to(d, HOLDER) for d in whole[0]]


def test_the_validation_report_is_the_same_from_projected_objects() -> None:
    whole_nodes, whole_pods = nodes(), pods()
    pending = [p for p in whole_pods if p["status"]["phase"] == "Pending"]
    system = [p for p in whole_pods if p["metadata"]["namespace"] == "kube-system"]
    whole = deployments(), daemonsets(), statefulsets()

    def validate(listed_nodes: list[Any], listed_pending: list[Any], listed_system: list[Any], workloads: tuple[list[Any], ...], **kw: Any) -> Any:
        return report(validation_report(
            listed_nodes, listed_pending, workloads[0], 14, {"ip-10-0-12-6.eu-west-1.compute.internal"}, NOW, 300,
            daemonsets=workloads[1], statefulsets=workloads[2], system_pods=listed_system, **kw,
        ))

    small = tuple(projected(projections.workload, objs) for objs in whole)
    for kw in ({}, {"unavailable_before": frozenset({"deployment/shop/cart"})}):
        expected = validate(whole_nodes, pending, system, whole, **kw)
        for project in (projections.node_health, projections.node):
            assert validate(projected(project, whole_nodes), projected(projections.pod, pending), projected(projections.pod, system), small, **kw) == expected
    problems = " ".join(expected[0])
    assert "kube-system/kube-proxy-unready-long" in problems and "unready-briefly" not in problems and "shop/pending-stuck" in problems
    assert stuck_pending_pods(projected(projections.pod, pending), NOW, 300) == ["shop/pending-stuck"]
    assert unready_pods(projected(projections.pod, system), NOW, 300) == ["kube-system/kube-proxy-unready-long"]


# --------------------------------------------------------------------------------------------- pods
@pytest.mark.parametrize(
    "opts",
    [
        drain.DrainOptions(),
        drain.DrainOptions(delete_emptydir_data=True),
        drain.DrainOptions(delete_emptydir_data=True, force_unmanaged_pods=True),
        drain.DrainOptions(True, True, skip_wait_for_delete_timeout_seconds=120, node_unreachable=True, now=NOW),
    ],
)
def test_a_drain_decides_the_same_for_projected_pods(opts: drain.DrainOptions) -> None:
    whole = pods()
    decisions = drain.decide_all(whole, opts)
    assert drain.decide_all(projected(projections.pod, whole), opts) == decisions
    assert drain.refusal_message(NODE_A, drain.decide_all(projected(projections.pod, whole), opts)) == drain.refusal_message(NODE_A, decisions)
    assert len({d.action for d in decisions}) >= 3  # the cases are told apart


def test_the_pods_a_spare_is_counted_from_are_judged_alike() -> None:
    whole = [p for p in pods() if p["metadata"]["name"].startswith("checkout")]
    small = projected(projections.pod, whole)
    deployment = load("deployment")
    for batch in ({NODE_A}, {NODE_A, NODE_B}, set()):
        assert ready_pods_elsewhere(small, batch) == ready_pods_elsewhere(whole, batch)
        assert needs_a_spare(deployment, small, batch, []) == needs_a_spare(deployment, whole, batch, [])
    assert needs_a_spare(deployment, whole, {NODE_A, NODE_B}, []) and not needs_a_spare(deployment, whole, {NODE_A}, [])


# ------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    "fixture, project, at_least",
    [
        ("node", projections.node, 5),
        ("node", projections.node_health, 20),
        ("node", projections.node_joining, 15),
        ("deployment", projections.workload, 20),
        ("daemonset", projections.workload, 10),
        ("statefulset", projections.workload, 10),
        ("pod_kube_proxy", projections.pod, 10),
        ("pod_app", projections.pod, 8),
        ("pod_pending", projections.pod, 8),
    ],
)
def test_a_projection_is_much_smaller(fixture: str, project: Callable[..., Any], at_least: int) -> None:
    whole = load(fixture)
    small = project(copy.deepcopy(whole))
    assert len(json.dumps(small)) * at_least <= len(json.dumps(whole))
    assert projections.MANAGED_FIELDS not in small["metadata"] and "template" not in small.get("spec", {})
    assert not {"images", "nodeInfo", "capacity", "containerStatuses"} & set(small.get("status", {}))


def test_a_projection_leaves_absent_parts_absent() -> None:
    assert projections.node({"metadata": {"name": "n"}}) == {"metadata": {"name": "n"}}
    assert projections.workload({"metadata": {"name": "d", "namespace": "ns"}, "spec": {"paused": True}}) == {"metadata": {"name": "d", "namespace": "ns"}, "spec": {}}
    assert projections.pod({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}) == {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}


# -------------------------------------------------------------------------------- KubeClient.list
class FakeApiClient:
    """Serves a list in pages (``limit``/``continue``), logging each request."""

    def __init__(self, pages: list[list[dict[str, Any]]], log: list[Any], expire_once_at: int | None = None) -> None:
        self.pages = pages
        self.log = log
        self.expire_once_at = expire_once_at
        self.user_agent = None

    def call_api(self, path: str, method: str, query_params: list[tuple[str, Any]], **_: Any) -> Any:
        from kubernetes.client.rest import ApiException

        query = dict(query_params)
        index = int(query.get("continue") or 0)
        self.log.append(("request", path, index, query["limit"]))
        if index == self.expire_once_at:
            self.expire_once_at = None
            raise ApiException(status=410, reason="Gone")
        meta: dict[str, Any] = {"resourceVersion": "4711"}
        if index + 1 < len(self.pages):
            meta["continue"] = str(index + 1)
        return SimpleNamespace(data=json.dumps({"kind": "NodeList", "metadata": meta, "items": self.pages[index]}).encode())


def test_list_projects_each_page_as_it_arrives() -> None:
    log: list[Any] = []
    pages = [[a_node(1), a_node(2)], [a_node(3)]]

    def project(node: dict[str, Any]) -> dict[str, Any]:
        log.append(("project", node["metadata"]["name"]))
        return projections.node(node)

    items, rv = KubeClient(FakeApiClient(pages, log), "prod").list(NODES, page_size=2, project=project)
    assert [step[:3] if step[0] == "request" else step for step in log] == [
        ("request", "/api/v1/nodes", 0),
        ("project", "ip-10-0-12-1.eu-west-1.compute.internal"),
        ("project", "ip-10-0-12-2.eu-west-1.compute.internal"),
        ("request", "/api/v1/nodes", 1),
        ("project", "ip-10-0-12-3.eu-west-1.compute.internal"),
    ], "each page is projected before the next is asked for"
    assert items == [projections.node(n) for page in pages for n in page] and rv == "4711"
    assert all(step[3] == 2 for step in log if step[0] == "request")

    log.clear()
    items, _ = KubeClient(FakeApiClient(pages, log, expire_once_at=1), "prod").list(NODES, page_size=2, project=project)
    assert [n["metadata"]["name"] for n in items] == [f"ip-10-0-12-{i}.eu-west-1.compute.internal" for i in (1, 2, 3)], "a 410 starts the list again, nothing twice"
    plain, _ = KubeClient(FakeApiClient(pages, []), "prod").list(NODES, page_size=2)
    assert plain == [n for page in pages for n in page], "without a projection, the objects as the API sent them"


def test_list_holds_one_page_of_whole_objects_not_the_collection() -> None:
    """Ten pages of objects of about 200 KB each (a Node's images, say): with a projection the list
    never holds more than a few pages' worth, where the whole collection is ten."""
    big = "x" * 200_000
    pages = [[{"metadata": {"name": f"n{p}-{i}"}, "status": {"images": [big + f"{p}-{i}"]}} for i in range(5)] for p in range(10)]
    page_bytes = 5 * 200_000
    kube = KubeClient(FakeApiClient(pages, []), "prod")
    tracemalloc.start()
    try:
        items, _ = kube.list(NODES, page_size=5, project=projections.node)
        projected_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        whole, _ = kube.list(NODES, page_size=5)
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(items) == len(whole) == 50
    assert whole_peak > 10 * page_bytes
    assert projected_peak < 4 * page_bytes
