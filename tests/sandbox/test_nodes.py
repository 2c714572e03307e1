"""Scheduler, kubelet, node lifecycle and pod GC of the sandbox, driven through its store."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from sandbox import podutil
from sandbox.cluster import SandboxCluster
from sandbox.config import EXIT_CODE_ANNOTATION, NEVER_READY_ANNOTATION, RUN_SECONDS_ANNOTATION
from sandbox.controllers.nodes import mark_node_not_ready, mark_node_ready
from sandbox.resources import EVENTS, NODES, PODS
from sandbox.testing import add_pod, add_ready_node

pytestmark = pytest.mark.timeout(30)

TOLERATE_ALL = [{"operator": "Exists"}]


def wait(cluster: SandboxCluster, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    assert cluster.wait_for(predicate, timeout), f"timed out waiting for {what}"


def pod(cluster: SandboxCluster, name: str, namespace: str = "default") -> dict[str, Any]:
    return cluster.store.get(PODS, namespace, name)


def phase(cluster: SandboxCluster, name: str) -> str | None:
    obj = cluster.store.try_get(PODS, "default", name)
    return obj.get("status", {}).get("phase") if obj else None


def node_taints(cluster: SandboxCluster, name: str) -> set[tuple[str, str]]:
    node = cluster.store.get(NODES, None, name)
    return {(t["key"], t["effect"]) for t in node.get("spec", {}).get("taints") or ()}


def cordon(cluster: SandboxCluster, name: str, unschedulable: bool = True) -> None:
    def set_flag(node: dict[str, Any]) -> None:
        node["spec"]["unschedulable"] = unschedulable

    cluster.store.mutate(NODES, None, name, set_flag)


def no_controller_errors(cluster: SandboxCluster) -> None:
    assert cluster.manager.errors == []


# ------------------------------------------------------------------------------------- scheduling
def test_pods_are_spread_bound_and_run_ready(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "node-a")
    add_ready_node(bare_cluster, "node-b")
    for i in range(6):
        add_pod(bare_cluster, f"web-{i}", labels={"app": "web"})
    names = [f"web-{i}" for i in range(6)]
    wait(bare_cluster, lambda: all(podutil.is_ready(pod(bare_cluster, n)) for n in names), "pods Ready")

    placements = [pod(bare_cluster, n)["spec"]["nodeName"] for n in names]
    assert sorted(placements.count(n) for n in ("node-a", "node-b")) == [3, 3]
    sample = pod(bare_cluster, "web-0")
    status = sample["status"]
    assert status["phase"] == "Running"
    node = bare_cluster.store.get(NODES, None, sample["spec"]["nodeName"])
    internal_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert status["hostIP"] == internal_ip
    assert status["podIP"] and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["startTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    (container,) = status["containerStatuses"]
    assert container["name"] == "main" and container["image"] == "registry.k8s.io/pause:3.9"
    assert container["imageID"].startswith("registry.k8s.io/pause@sha256:")
    assert container["ready"] is True and container["started"] is True and container["restartCount"] == 0
    assert "startedAt" in container["state"]["running"]
    assert len({pod(bare_cluster, n)["status"]["podIP"] for n in names}) == 6
    reasons = {e["reason"] for e in bare_cluster.store.iter(EVENTS, "default") if e["involvedObject"]["name"] == "web-0"}
    assert {"Scheduled", "Started"} <= reasons
    no_controller_errors(bare_cluster)


def test_pod_waits_for_a_node_then_is_scheduled(bare_cluster: SandboxCluster) -> None:
    add_pod(bare_cluster, "early")
    wait(
        bare_cluster,
        lambda: (podutil.condition(pod(bare_cluster, "early"), "PodScheduled") or {}).get("reason") == "Unschedulable",
        "Unschedulable condition",
    )
    assert pod(bare_cluster, "early")["status"]["phase"] == "Pending"
    assert "no nodes available" in podutil.condition(pod(bare_cluster, "early"), "PodScheduled")["message"]
    add_ready_node(bare_cluster, "late-node")
    wait(bare_cluster, lambda: podutil.is_ready(pod(bare_cluster, "early")), "pod Ready once a node joined")
    assert pod(bare_cluster, "early")["spec"]["nodeName"] == "late-node"
    scheduled = podutil.condition(pod(bare_cluster, "early"), "PodScheduled")
    assert scheduled["status"] == "True" and "reason" not in scheduled


def test_cordon_taints_the_node_and_keeps_pods_off_until_uncordoned(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "only")
    cordon(bare_cluster, "only")
    wait(bare_cluster, lambda: ("node.kubernetes.io/unschedulable", "NoSchedule") in node_taints(bare_cluster, "only"), "cordon taint")
    add_pod(bare_cluster, "blocked")
    add_pod(bare_cluster, "daemon-like", tolerations=TOLERATE_ALL)
    wait(bare_cluster, lambda: phase(bare_cluster, "daemon-like") == "Running", "tolerate-all pod running on cordoned node")
    cond = podutil.condition(pod(bare_cluster, "blocked"), "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available: 1 node(s) were unschedulable.")
    assert not pod(bare_cluster, "blocked")["spec"].get("nodeName")

    cordon(bare_cluster, "only", unschedulable=False)
    wait(bare_cluster, lambda: phase(bare_cluster, "blocked") == "Running", "pod scheduled after uncordon")
    assert node_taints(bare_cluster, "only") == set()


def test_untolerated_taints_block_and_tolerations_admit(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "gpu")

    def taint(node: dict[str, Any]) -> None:
        node["spec"]["taints"] = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]

    bare_cluster.store.mutate(NODES, None, "gpu", taint)
    add_pod(bare_cluster, "plain")
    add_pod(bare_cluster, "wrong-value", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}])
    add_pod(bare_cluster, "matching", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
    add_pod(bare_cluster, "exists-any-effect", tolerations=[{"key": "dedicated", "operator": "Exists"}])
    wait(bare_cluster, lambda: phase(bare_cluster, "matching") == "Running", "tolerating pod running")
    wait(bare_cluster, lambda: phase(bare_cluster, "exists-any-effect") == "Running", "Exists toleration pod running")
    for name in ("plain", "wrong-value"):
        wait(bare_cluster, lambda: podutil.condition(pod(bare_cluster, name), "PodScheduled") is not None, "scheduling attempt")
        cond = podutil.condition(pod(bare_cluster, name), "PodScheduled")
        assert cond["status"] == "False"
        assert "1 node(s) had untolerated taint {dedicated: gpu}" in cond["message"]


def test_node_selector_and_required_node_affinity(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "zone-a", zone="us-east-1a")
    add_ready_node(bare_cluster, "zone-b", zone="us-east-1b", labels={"pool": "batch"})
    add_ready_node(bare_cluster, "zone-c", zone="us-east-1c")
    add_pod(bare_cluster, "selected", nodeSelector={"pool": "batch"})
    add_pod(
        bare_cluster,
        "pinned",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["zone-c"]}]}]
                }
            }
        },
    )
    add_pod(
        bare_cluster,
        "not-in-a-or-b",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["us-east-1a", "us-east-1b"]}]}
                    ]
                }
            }
        },
    )
    add_pod(bare_cluster, "impossible", nodeSelector={"pool": "nonexistent"})
    wait(bare_cluster, lambda: all(phase(bare_cluster, n) == "Running" for n in ("selected", "pinned", "not-in-a-or-b")), "pods running")
    assert pod(bare_cluster, "selected")["spec"]["nodeName"] == "zone-b"
    assert pod(bare_cluster, "pinned")["spec"]["nodeName"] == "zone-c"
    assert pod(bare_cluster, "not-in-a-or-b")["spec"]["nodeName"] == "zone-c"
    cond = podutil.condition(pod(bare_cluster, "impossible"), "PodScheduled")
    assert cond["status"] == "False"
    assert "3 node(s) didn't match Pod's node affinity/selector" in cond["message"]


def test_pinned_pod_to_missing_node_is_unschedulable(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "present")
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["absent"]}]}]
            }
        }
    }
    add_pod(bare_cluster, "ds-pod", affinity=affinity, tolerations=TOLERATE_ALL)
    wait(bare_cluster, lambda: podutil.condition(pod(bare_cluster, "ds-pod"), "PodScheduled") is not None, "scheduling attempt")
    assert podutil.condition(pod(bare_cluster, "ds-pod"), "PodScheduled")["status"] == "False"
    add_ready_node(bare_cluster, "absent")
    wait(bare_cluster, lambda: phase(bare_cluster, "ds-pod") == "Running", "pinned pod running on its node")
    assert pod(bare_cluster, "ds-pod")["spec"]["nodeName"] == "absent"


def test_pod_capacity_is_respected_and_freed_capacity_is_reused(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "small", pods=2)
    for name in ("one", "two", "three"):
        add_pod(bare_cluster, name)
    wait(bare_cluster, lambda: sum(phase(bare_cluster, n) == "Running" for n in ("one", "two", "three")) == 2, "two pods running")
    waiting = next(n for n in ("one", "two", "three") if not pod(bare_cluster, n)["spec"].get("nodeName"))
    wait(bare_cluster, lambda: podutil.condition(pod(bare_cluster, waiting), "PodScheduled") is not None, "scheduling attempt")
    assert "1 Too many pods" in podutil.condition(pod(bare_cluster, waiting), "PodScheduled")["message"]
    running = next(n for n in ("one", "two", "three") if n != waiting)
    bare_cluster.store.delete(PODS, "default", running, grace_period=0)
    wait(bare_cluster, lambda: phase(bare_cluster, waiting) == "Running", "pending pod takes the freed slot")


def test_not_ready_node_is_tainted_skipped_and_retried_when_ready(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "booting", ready=False)
    wait(
        bare_cluster,
        lambda: {("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")}
        <= node_taints(bare_cluster, "booting"),
        "not-ready taints",
    )
    no_execute = next(t for t in bare_cluster.store.get(NODES, None, "booting")["spec"]["taints"] if t["effect"] == "NoExecute")
    assert no_execute.get("timeAdded")
    add_pod(bare_cluster, "waiter")
    wait(bare_cluster, lambda: podutil.condition(pod(bare_cluster, "waiter"), "PodScheduled") is not None, "scheduling attempt")
    assert "untolerated taint {node.kubernetes.io/not-ready: }" in podutil.condition(pod(bare_cluster, "waiter"), "PodScheduled")["message"]

    mark_node_ready(bare_cluster, "booting")
    wait(bare_cluster, lambda: phase(bare_cluster, "waiter") == "Running", "pod running once the node is Ready")
    assert node_taints(bare_cluster, "booting") == set()


def test_not_scheduled_for_another_scheduler(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "custom", schedulerName="my-scheduler")
    add_pod(bare_cluster, "normal")
    wait(bare_cluster, lambda: phase(bare_cluster, "normal") == "Running", "default pod running")
    time.sleep(0.1)
    assert not pod(bare_cluster, "custom")["spec"].get("nodeName")
    assert podutil.condition(pod(bare_cluster, "custom"), "PodScheduled") is None


# ---------------------------------------------------------------------------------------- kubelet
def test_pod_start_takes_pod_start_seconds_and_shows_container_creating(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_start_seconds = 0.4
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "slow")
    wait(bare_cluster, lambda: pod(bare_cluster, "slow")["status"].get("hostIP"), "pending status with hostIP")
    status = pod(bare_cluster, "slow")["status"]
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert podutil.condition(pod(bare_cluster, "slow"), "Ready")["status"] == "False"
    wait(bare_cluster, lambda: phase(bare_cluster, "slow") == "Running", "running after the start delay")


def test_never_ready_pod_runs_but_is_not_ready(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "broken", annotations={NEVER_READY_ANNOTATION: "true"})
    wait(bare_cluster, lambda: phase(bare_cluster, "broken") == "Running", "running")
    time.sleep(0.2)
    obj = pod(bare_cluster, "broken")
    assert podutil.condition(obj, "Ready")["status"] == "False"
    assert podutil.condition(obj, "ContainersReady")["status"] == "False"
    assert podutil.condition(obj, "Ready")["reason"] == "ContainersNotReady"
    assert obj["status"]["containerStatuses"][0]["ready"] is False
    assert obj["status"]["containerStatuses"][0]["state"].get("running")


def test_init_containers_complete_before_the_pod_runs(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(
        bare_cluster,
        "with-init",
        initContainers=[{"name": "migrate", "image": "busybox:1.36"}, {"name": "proxy", "image": "envoy:v1", "restartPolicy": "Always"}],
    )
    wait(bare_cluster, lambda: podutil.is_ready(pod(bare_cluster, "with-init")), "Ready")
    init = {c["name"]: c for c in pod(bare_cluster, "with-init")["status"]["initContainerStatuses"]}
    assert init["migrate"]["state"]["terminated"]["reason"] == "Completed"
    assert init["migrate"]["state"]["terminated"]["exitCode"] == 0
    assert init["proxy"]["state"].get("running")


def test_job_pods_succeed_or_fail_after_their_run_time(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "ok", restart_policy="Never", annotations={RUN_SECONDS_ANNOTATION: "0.2"})
    add_pod(bare_cluster, "bad", restart_policy="OnFailure", annotations={RUN_SECONDS_ANNOTATION: "0.2", EXIT_CODE_ANNOTATION: "3"})
    add_pod(bare_cluster, "forever", restart_policy="Never", annotations={RUN_SECONDS_ANNOTATION: "forever"})
    add_pod(bare_cluster, "default-run", restart_policy="Never")
    wait(bare_cluster, lambda: phase(bare_cluster, "ok") == "Succeeded", "ok Succeeded")
    wait(bare_cluster, lambda: phase(bare_cluster, "bad") == "Failed", "bad Failed")
    wait(bare_cluster, lambda: phase(bare_cluster, "default-run") == "Succeeded", "default run Succeeded")

    ok = pod(bare_cluster, "ok")
    terminated = ok["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["startedAt"] and terminated["finishedAt"]
    assert podutil.condition(ok, "Ready")["reason"] == "PodCompleted"
    bad_terminated = pod(bare_cluster, "bad")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert bad_terminated["exitCode"] == 3 and bad_terminated["reason"] == "Error"
    assert phase(bare_cluster, "forever") == "Running"


def test_graceful_deletion_goes_not_ready_then_removes_the_pod(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 0.5
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "victim")
    wait(bare_cluster, lambda: podutil.is_ready(pod(bare_cluster, "victim")), "Ready")
    obj, removed = bare_cluster.store.delete(PODS, "default", "victim")
    assert not removed and obj["metadata"]["deletionTimestamp"]
    wait(bare_cluster, lambda: not podutil.is_ready(pod(bare_cluster, "victim")), "not Ready while terminating")
    assert podutil.is_terminating(pod(bare_cluster, "victim"))
    wait(bare_cluster, lambda: bare_cluster.store.try_get(PODS, "default", "victim") is None, "removed after termination")


def test_short_grace_period_bounds_termination(bare_cluster: SandboxCluster) -> None:
    bare_cluster.config.pod_termination_seconds = 30
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "quick", terminationGracePeriodSeconds=1)
    wait(bare_cluster, lambda: phase(bare_cluster, "quick") == "Running", "running")
    started = time.monotonic()
    bare_cluster.store.delete(PODS, "default", "quick")
    wait(bare_cluster, lambda: bare_cluster.store.try_get(PODS, "default", "quick") is None, "removed after its grace period")
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------------------------- node lifecycle
def test_node_not_ready_taints_unreachable_and_freezes_its_pods(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "lost")
    add_pod(bare_cluster, "running-there")
    wait(bare_cluster, lambda: podutil.is_ready(pod(bare_cluster, "running-there")), "Ready")

    mark_node_not_ready(bare_cluster, "lost")
    node = bare_cluster.store.get(NODES, None, "lost")
    ready = podutil.condition(node, "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    assert ready["message"] == "Kubelet stopped posting node status."
    assert podutil.condition(node, "MemoryPressure")["status"] == "Unknown"
    wait(
        bare_cluster,
        lambda: {("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule")}
        <= node_taints(bare_cluster, "lost"),
        "unreachable taints",
    )
    wait(bare_cluster, lambda: not podutil.is_ready(pod(bare_cluster, "running-there")), "pod marked not ready")

    # Nothing moves on the lost node: a new pod bound there does not start, a deleted one stays.
    add_pod(bare_cluster, "bound-there", node_name="lost")
    bare_cluster.store.delete(PODS, "default", "running-there")
    time.sleep(0.4)
    assert phase(bare_cluster, "bound-there") == "Pending"
    assert podutil.is_terminating(pod(bare_cluster, "running-there"))
    # The default 300 s not-ready/unreachable tolerations keep the pods from being evicted.
    assert phase(bare_cluster, "running-there") == "Running"


def test_no_execute_taint_evicts_pods_that_do_not_tolerate_it(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "intolerant")
    add_pod(bare_cluster, "brief", tolerations=[{"key": "maintenance", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}])
    add_pod(bare_cluster, "stays", tolerations=[{"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}])
    wait(bare_cluster, lambda: all(phase(bare_cluster, n) == "Running" for n in ("intolerant", "brief", "stays")), "running")

    def taint(node: dict[str, Any]) -> None:
        node["spec"]["taints"] = [{"key": "maintenance", "effect": "NoExecute", "timeAdded": bare_cluster.clock.iso()}]

    bare_cluster.store.mutate(NODES, None, "n1", taint)
    wait(bare_cluster, lambda: bare_cluster.store.try_get(PODS, "default", "intolerant") is None, "intolerant pod evicted")
    assert bare_cluster.store.try_get(PODS, "default", "brief") is not None
    bare_cluster.clock.advance(61)
    wait(bare_cluster, lambda: bare_cluster.store.try_get(PODS, "default", "brief") is None, "pod evicted after tolerationSeconds", timeout=4)
    assert phase(bare_cluster, "stays") == "Running"


def test_deleting_a_node_force_deletes_its_pods(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "doomed")
    add_ready_node(bare_cluster, "survivor")
    cordon(bare_cluster, "survivor")
    for i in range(3):
        add_pod(bare_cluster, f"p{i}")
    wait(bare_cluster, lambda: all(phase(bare_cluster, f"p{i}") == "Running" for i in range(3)), "running on doomed")
    cordon(bare_cluster, "survivor", unschedulable=False)
    add_pod(bare_cluster, "elsewhere", node_name="survivor")
    mark_node_not_ready(bare_cluster, "doomed")
    bare_cluster.store.delete(PODS, "default", "p0")  # stuck terminating: the node is gone
    time.sleep(0.1)
    assert bare_cluster.store.try_get(PODS, "default", "p0") is not None

    _, removed = bare_cluster.store.delete(NODES, None, "doomed")
    assert removed
    wait(bare_cluster, lambda: not bare_cluster.store.pods_on_node("doomed"), "pods of the deleted node gone")
    assert all(bare_cluster.store.try_get(PODS, "default", f"p{i}") is None for i in range(3))
    assert bare_cluster.store.try_get(PODS, "default", "elsewhere") is not None
    no_controller_errors(bare_cluster)


def test_scheduling_many_pods_on_many_nodes_stays_fast(bare_cluster: SandboxCluster) -> None:
    for i in range(300):
        add_ready_node(bare_cluster, f"node-{i:03d}")
    started = time.monotonic()
    for i in range(1500):
        add_pod(bare_cluster, f"bulk-{i}")
    wait(bare_cluster, lambda: sum(1 for p in bare_cluster.store.iter(PODS, "default") if p["spec"].get("nodeName")) == 1500, "all bound", 20)
    elapsed = time.monotonic() - started
    per_node = [len(bare_cluster.store.pods_on_node(f"node-{i:03d}")) for i in range(300)]
    # Sampling 100+ feasible nodes per pod, least loaded first, keeps the spread tight.
    assert max(per_node) - min(per_node) <= 2, (min(per_node), max(per_node))
    assert elapsed < 15, elapsed
    no_controller_errors(bare_cluster)


def test_cpu_and_memory_requests_must_fit_allocatable(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1", cpu="2", memory="4Gi")

    def container(cpu: str, memory: str) -> list[dict[str, Any]]:
        return [{"name": "main", "image": "nginx:1.27", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]

    add_pod(bare_cluster, "big", containers=container("1500m", "1Gi"))
    wait(bare_cluster, lambda: phase(bare_cluster, "big") == "Running", "big pod running")
    add_pod(bare_cluster, "too-much-cpu", containers=container("600m", "1Gi"))
    add_pod(bare_cluster, "too-much-memory", containers=container("100m", "3500Mi"))
    add_pod(bare_cluster, "fits", containers=container("400m", "2Gi"))
    wait(bare_cluster, lambda: phase(bare_cluster, "fits") == "Running", "fitting pod running")
    for name, resource in (("too-much-cpu", "cpu"), ("too-much-memory", "memory")):
        wait(bare_cluster, lambda: podutil.condition(pod(bare_cluster, name), "PodScheduled") is not None, "attempt")
        assert f"1 Insufficient {resource}" in podutil.condition(pod(bare_cluster, name), "PodScheduled")["message"]
    bare_cluster.store.delete(PODS, "default", "big", grace_period=0)
    wait(bare_cluster, lambda: phase(bare_cluster, "too-much-cpu") == "Running", "cpu freed")


def test_scheduling_gates_hold_a_pod_until_removed(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_pod(bare_cluster, "gated", schedulingGates=[{"name": "example.com/wait"}])
    wait(
        bare_cluster,
        lambda: (podutil.condition(pod(bare_cluster, "gated"), "PodScheduled") or {}).get("reason") == "SchedulingGated",
        "SchedulingGated condition",
    )

    def ungate(obj: dict[str, Any]) -> None:
        obj["spec"]["schedulingGates"] = []

    bare_cluster.store.mutate(PODS, "default", "gated", ungate)
    wait(bare_cluster, lambda: phase(bare_cluster, "gated") == "Running", "running once ungated")


def test_advancing_the_clock_ends_long_waits(bare_cluster: SandboxCluster) -> None:
    add_ready_node(bare_cluster, "n1")
    add_ready_node(bare_cluster, "n2")
    add_pod(bare_cluster, "long-job", restart_policy="Never", annotations={RUN_SECONDS_ANNOTATION: "600"}, nodeSelector={"kubernetes.io/hostname": "n1"})
    add_pod(bare_cluster, "stranded", nodeSelector={"kubernetes.io/hostname": "n2"})
    wait(bare_cluster, lambda: phase(bare_cluster, "long-job") == "Running" and phase(bare_cluster, "stranded") == "Running", "running")
    mark_node_not_ready(bare_cluster, "n2")
    wait(bare_cluster, lambda: ("node.kubernetes.io/unreachable", "NoExecute") in node_taints(bare_cluster, "n2"), "unreachable taint")
    time.sleep(0.2)
    assert phase(bare_cluster, "long-job") == "Running" and not podutil.is_terminating(pod(bare_cluster, "stranded"))

    bare_cluster.clock.advance(601)
    wait(bare_cluster, lambda: phase(bare_cluster, "long-job") == "Succeeded", "job pod done after the clock jump", timeout=4)
    # Past the default 300 s unreachable toleration, the taint eviction controller deletes the pod.
    wait(bare_cluster, lambda: podutil.is_terminating(pod(bare_cluster, "stranded")), "stranded pod evicted", timeout=4)
    assert podutil.condition(pod(bare_cluster, "stranded"), "DisruptionTarget")["reason"] == "DeletionByTaintManager"
