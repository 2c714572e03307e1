"""Builds the rolling node replacement DAG of one cluster.

Kept cheap to import: Airflow's SDK and this package's light modules only; the Kubernetes client,
boto3 and the providers are imported inside tasks.
"""
from __future__ import annotations

from typing import Any

from kube_maintenance.core.dag_building import TasksOf, approval_gate, finish_run, operation_dag
from kube_maintenance.core.forms import (
    DRY_RUN,
    IGNORE_WINDOW,
    SECTION_PACE,
    SECTION_SAFETY,
    SECTION_TARGET,
    FormField,
    optional_names,
    optional_selector,
)
from kube_maintenance.core.registry import ClusterConfig
from kube_maintenance.core.runtime import MAP_LABEL_TEMPLATE
from kube_maintenance.node_replacement.plan import NodeReplacementParams


NODE_REPLACEMENT_FIELDS: tuple[FormField, ...] = (
    DRY_RUN,
    IGNORE_WINDOW,
    optional_selector("node_selector", "Node selector", "Replace only nodes with these labels (empty: every node).", "role=worker"),
    optional_names("node_names", "Node names", "Replace exactly these nodes (instead of the selector's choice)."),
    optional_names("exclude_nodes", "Nodes to leave alone", "Never replace these nodes."),
    FormField(
        "only_drifted",
        "Only drifted nodes",
        "Replace only nodes whose instance differs from what its Auto Scaling group launches now (launch template or its version, AMI, instance type), oldest first, within the other filters; the plan says what drifted for each.",
        {"type": "boolean"},
        SECTION_TARGET,
    ),
    FormField(
        "leave_eks_managed_nodes",
        "Leave EKS managed node groups to EKS",
        "Skip nodes of EKS managed node groups (label eks.amazonaws.com/nodegroup): their updates belong to EKS. Karpenter's nodes are always left to Karpenter.",
        {"type": "boolean"},
        SECTION_TARGET,
    ),
    FormField("min_node_age_hours", "Minimum node age (hours)", "Only nodes older than this many hours (0: any age).", {"type": "number", "minimum": 0}, SECTION_TARGET),
    FormField("max_nodes", "Most nodes", "Most nodes this run replaces, oldest first.", {"type": "integer", "minimum": 1, "maximum": 1000}, SECTION_TARGET),
    FormField("batch_size", "Batch size", "Most nodes out of service at once; batches run strictly one after another.", {"type": "integer", "minimum": 1, "maximum": 100}, SECTION_PACE),
    FormField("surge", "Surge", "Launch each batch's replacements before draining it, each in the zone of the node it replaces (the group grows by the batch, then shrinks back); off: replace in place.", {"type": "boolean"}, SECTION_PACE),
    FormField("drain_timeout_seconds", "Drain timeout (s)", "Give up on a drain after this long: the run stops and the cleanup uncordons the batch.", {"type": "integer", "minimum": 1, "maximum": 86400}, SECTION_PACE),
    FormField("replacement_timeout_seconds", "Replacement timeout (s)", "Fail if a replacement node is not Ready within this long of the termination.", {"type": "integer", "minimum": 1, "maximum": 86400}, SECTION_PACE),
    FormField(
        "validation_passes",
        "Healthy checks in a row",
        "After each batch the cluster must be healthy this many times in a row (Ready nodes, nothing stuck Pending, every workload that was available before the run available, kube-system's pods Ready).",
        {"type": "integer", "minimum": 1, "maximum": 10},
        SECTION_PACE,
    ),
    FormField("validation_interval_seconds", "Validation interval (s)", "Seconds between those health checks.", {"type": "integer", "minimum": 0, "maximum": 600}, SECTION_PACE),
    FormField(
        "validation_timeout_seconds",
        "Validation timeout (s)",
        "Fail the run, naming what is still unhealthy, if the cluster is not healthy this long after a batch's replacements joined.",
        {"type": "integer", "minimum": 1, "maximum": 86400},
        SECTION_PACE,
    ),
    FormField("pod_grace_period_seconds", "Pod grace period (s)", "Override each evicted pod's termination grace period (empty: the pod's own).", {"type": ["null", "integer"], "minimum": 0, "maximum": 3600}, SECTION_SAFETY),
    FormField(
        "skip_wait_for_delete_timeout_seconds",
        "Dead node: wait for pods (s)",
        "On a node that is not Ready (its kubelet gone), pods still terminating this long after their grace period are left to the "
        "pod garbage collector and the instance is terminated (kubectl drain --skip-wait-for-delete-timeout). A Ready node's drain "
        "always waits for every pod.",
        {"type": "integer", "minimum": 0, "maximum": 86400},
        SECTION_SAFETY,
    ),
    FormField(
        "protect_lone_workloads",
        "Scale up unprotected workloads first",
        "Before a batch drains, scale up by one each Deployment whose every Ready pod is on the batch's nodes and that no PodDisruptionBudget covers, and wait for the new pod to be Ready elsewhere; scale it back after the batch unless it was changed meanwhile. A dry run lists them.",
        {"type": "boolean"},
        SECTION_SAFETY,
    ),
    FormField(
        "include_control_plane",
        "Include control-plane nodes",
        "Replace control-plane nodes named in node_names (self-managed clusters); off: control-plane nodes are never selected.",
        {"type": "boolean"},
        SECTION_SAFETY,
    ),
    FormField("delete_emptydir_data", "Evict pods with emptyDir", "Evict pods with emptyDir volumes (their data is lost). Off: such pods stop the run before any cordon.", {"type": "boolean"}, SECTION_SAFETY),
    FormField("force_unmanaged_pods", "Evict unmanaged pods", "Evict pods no controller will recreate. Off: such pods stop the run before any cordon.", {"type": "boolean"}, SECTION_SAFETY),
)

NODE_REPLACEMENT_DRY_RUN = (
    "The `plan` task logs one `plan-replace` audit line per node it would replace (batch, instance, Auto "
    "Scaling group, age) and says in its log why every other node is left alone; `preflight` checks the "
    "cluster's health and that no pod would be lost by a drain, and logs a `preflight-stop` audit line with "
    "everything that would stop a real run there; then the run ends, its summary listing those blockers under "
    "`a_real_run_would_stop`: nothing is locked, cordoned, drained or terminated."
)

_NODE_TASK_DOCS = {
    "plan": "Reads the form, checks the maintenance window, picks the nodes (selector, names, age, oldest first) and splits them into batches; finds each node's EC2 instance and Auto Scaling group. Changes nothing.",
    "preflight": "Checks the cluster is healthy enough to disrupt and that no pod of the plan's nodes would be lost by a drain (unmanaged, emptyDir), then takes the cluster's maintenance lock. A dry run ends here.",
    "batch": (
        "One instance per batch of the plan, named by its nodes; batches run strictly one after another. Each walks its batch through the runbook, "
        "deferring to the triggerer (no worker slot held) whenever a step has to wait:\n\n"
        "1. **previous batch done**: starts once the batch before it succeeded and none of its nodes is left cordoned and not terminated; skipped when it did not complete.\n"
        "2. **launch surge**: starts no batch the maintenance window cannot fit. With surge, launches each replacement in the zone of the node it replaces, attaches it to the group and waits for its node to be Ready.\n"
        "3. **cordon**: marks the nodes unschedulable, recording on each node which run cordoned it and whether it was cordoned before; scales up by one each Deployment the drain would leave with no Ready pod (no PodDisruptionBudget covering it).\n"
        "4. **drain**: evicts the pods through the Eviction API (PodDisruptionBudgets respected; DaemonSet and mirror pods skipped) until the drain timeout. On a node that is not Ready, pods stuck terminating past the dead-node wait, and unready pods their budget will not let go, are left to the pod garbage collector.\n"
        "5. **terminate**: terminates each drained node's EC2 instance in its Auto Scaling group (desired capacity kept, or lowered back after a surge); refuses a node that still has pods a drain would evict.\n"
        "6. **wait for replacement**: until each affected group has as many Ready nodes as before the run.\n"
        "7. **validate**: the cluster healthy several times in a row (Ready nodes, nothing stuck Pending, workloads available before the run available again, kube-system's pods Ready); fails after the validation timeout, naming what is wrong."
    ),
}


def node_replacement_dag(cluster: ClusterConfig) -> Any:
    from airflow.sdk import chain, task

    op = TasksOf("kube_maintenance.node_replacement.tasks")

    settings = cluster.operation("node_replacement")
    max_batches = int(settings.get("max_batches", 10))
    poke = float(settings.get("poke_interval_seconds", 15))
    base = {f.name: getattr(NodeReplacementParams, f.name) for f in NODE_REPLACEMENT_FIELDS}
    base.update(node_selector=None, node_names=None, exclude_nodes=None)
    # The plan refuses more batches than the DAG has: the form's default must fit them.
    batch_size = int((settings.get("defaults") or {}).get("batch_size", base["batch_size"]))
    base["max_nodes"] = min(base["max_nodes"], max_batches * batch_size)
    with operation_dag(
        cluster,
        "node_replacement",
        "Rolling node replacement",
        "Picks nodes (selector, age, names), then batch by batch: cordon, drain through the Eviction API "
        "(PodDisruptionBudgets respected, DaemonSet and mirror pods skipped), terminate the EC2 instance in "
        "its Auto Scaling group without lowering desired capacity (or, with surge, after its replacement "
        "joined), wait for the replacement to join Ready, validate twice. A failed step stops the rollout; "
        "the cleanup then uncordons every node this run cordoned and did not terminate.",
        NODE_REPLACEMENT_FIELDS,
        base,
        NODE_REPLACEMENT_DRY_RUN,
    ) as dag:
        from kube_maintenance.node_replacement.batches import ReplaceBatchOperator

        kwargs = {"cluster_name": cluster.name, "max_batches": max_batches}
        docs = _NODE_TASK_DOCS
        plan = task(task_id="plan", doc_md=docs["plan"])(op.plan)(**kwargs)
        preflight = task(task_id="preflight", doc_md=docs["preflight"])(op.preflight)(**kwargs)
        # One mapped task instance per batch of the plan (however many max_batches allows), each
        # waiting for the one before it: the DAG's size does not grow with the registry.
        batches = ReplaceBatchOperator.partial(
            task_id="batch",
            cluster_name=cluster.name,
            max_batches=max_batches,
            poke_interval=poke,
            map_index_template=MAP_LABEL_TEMPLATE,
            doc_md=docs["batch"],
        ).expand(batch=plan)
        approval = approval_gate(cluster, "node_replacement")  # [] unless the cluster requires approval
        chain(plan, *approval, preflight, batches)
        finish_run([plan, *approval, preflight, batches], op.cleanup, **kwargs)
    return dag
