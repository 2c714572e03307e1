"""Least privilege, proven from the calls, both ways (issue 11, items 1 and 2).

Real (not dry) runs of the three DAGs against a sandbox cluster that enforces RBAC, through a
``kubernetes`` connection whose only credential is the ``kube-maintenance`` ServiceAccount's token,
bound by nothing but deploy/kubernetes/rbac.yaml. Then the requests the runs sent (the sandbox's
request log) are compared with what the manifests grant, and the AWS actions node replacement called
(boto3 event hooks on its clients) with deploy/aws/iam-policy.json:

- every request was allowed (no 403, and the manifests' rules allow each one);
- every grant was used by some request: the manifests grant nothing the DAGs do not need.

The same comparison holds for each per-operation manifest (deploy/kubernetes/per-operation/) and
the requests of its DAG alone.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import boto3
import pytest
import yaml
from harness import DagRunner, fast_world_config, reach_cluster, registry_for

from sandbox.auth import StaticTokenAuthenticator
from sandbox.aws import NodeGroup
from sandbox.monitor import RequestRecord
from sandbox.rbac import RbacAuthorizer, Request, subject_matches
from sandbox.resources import DEPLOYMENTS, LEASES, NODES, PODS
from sandbox.scenario import ClusterPlan, World, start_world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"
PER_OPERATION = {
    "node_replacement": REPO / "deploy" / "kubernetes" / "per-operation" / "node-replacement.yaml",
    "cronjob_refresh": REPO / "deploy" / "kubernetes" / "per-operation" / "cronjob-refresh.yaml",
    "rollout_restart": REPO / "deploy" / "kubernetes" / "per-operation" / "rollout-restart.yaml",
}
IAM_POLICY = REPO / "deploy" / "aws" / "iam-policy.json"
SERVICE_ACCOUNT = "system:serviceaccount:kube-maintenance:kube-maintenance"
SERVICE_ACCOUNT_TOKEN = "sa-token-kube-maintenance"
LOCK_NAMESPACE = "kube-maintenance"  # the registry's default
AS_RUNBOOK = {"force_unmanaged_pods": True, "delete_emptydir_data": True}
DAY = 86400.0
RESTARTED = ("observability", "payments", "shop")  # the rollout restart's: a DaemonSet, a StatefulSet, Deployments


# ----------------------------------------------------------------------------------- Kubernetes side
def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@dataclass(frozen=True)
class Grant:
    """One verb on one resource in one API group, cluster-wide (namespace None) or in one namespace."""

    verb: str
    group: str
    resource: str  # with "/subresource"
    namespace: str | None
    names: tuple[str, ...] = ()

    def covers(self, record: RequestRecord) -> bool:
        return (
            (self.verb, self.group, self.resource) == (record.verb, record.group, record.resource)
            and (self.namespace is None or self.namespace == record.namespace)
            and (not self.names or record.name in self.names)
        )


def grants_of(documents: list[dict[str, Any]], user: str) -> set[Grant]:
    """Every (verb, group, resource, scope) the manifests grant ``user``; a wildcard fails the test
    (it would grant what no run can show to be needed)."""
    roles = {(d["kind"], d["metadata"].get("namespace", "") if d["kind"] == "Role" else "", d["metadata"]["name"]): d for d in documents if d["kind"] in ("Role", "ClusterRole")}
    grants: set[Grant] = set()
    for binding in documents:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding") or not any(subject_matches(s, user) for s in binding["subjects"]):
            continue
        namespace = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace or "" if ref["kind"] == "Role" else "", ref["name"])]
        for rule in role["rules"]:
            for field in ("verbs", "apiGroups", "resources"):
                assert not any("*" in value for value in rule[field]), f"{role['metadata']['name']}: a wildcard in {field}: {rule}"
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        grants.add(Grant(verb, group, resource, namespace, tuple(rule.get("resourceNames") or ())))
    return grants


def as_request(record: RequestRecord) -> Request:
    resource, _, subresource = record.resource.partition("/")
    return Request(record.user, record.verb, record.group, resource, subresource, record.namespace, record.name)


def compare(documents: list[dict[str, Any]], records: list[RequestRecord]) -> tuple[list[str], list[str]]:
    """(requests the manifests do not allow, grants no request used), each as readable lines."""
    authorizer = RbacAuthorizer.from_documents(documents, unrestricted=frozenset())
    denied = sorted({f"{r.verb} {r.resource} (group {r.group!r}) in {r.namespace or 'the cluster scope'} {r.name}".rstrip() for r in records if not authorizer.allows(as_request(r))})
    unused = sorted(
        f"{g.verb} {g.resource} (group {g.group!r}) {'cluster-wide' if g.namespace is None else 'in ' + g.namespace}{' named ' + ','.join(g.names) if g.names else ''}"
        for g in grants_of(documents, SERVICE_ACCOUNT)
        if not any(g.covers(r) for r in records)
    )
    return denied, unused


# ---------------------------------------------------------------------------------------- AWS side
@dataclass(frozen=True)
class AwsCall:
    action: str  # as IAM names it: "ec2:RunInstances"
    params: dict[str, Any]


def record_aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[AwsCall]:
    """Every API call node replacement's own clients make (an event hook on each client Cloud builds;
    the sandbox's poller and the test's clients are not counted)."""
    from kube_maintenance.core import cloud

    calls: list[AwsCall] = []
    original = cloud.Cloud.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for client in (self.autoscaling, self.ec2):
            prefix = client.meta.service_model.signing_name  # "ec2", "autoscaling": IAM's service prefixes

            def before_parameter_build(model: Any, params: dict[str, Any], _prefix: str = prefix, **_: Any) -> None:
                calls.append(AwsCall(f"{_prefix}:{model.name}", dict(params)))  # the call's own parameters

            client.meta.events.register("before-parameter-build.*.*", before_parameter_build)

    monkeypatch.setattr(cloud.Cloud, "__init__", init)
    return calls


def implied_actions(calls: list[AwsCall], ec2: Any) -> set[str]:
    """Actions IAM checks beside the one called: RunInstances with TagSpecifications also needs
    ec2:CreateTags (ec2:CreateAction=RunInstances), and iam:PassRole when its launch template gives the
    instance a profile (a role passed to EC2)."""
    implied: set[str] = set()
    for call in calls:
        if call.action != "ec2:RunInstances":
            continue
        if call.params.get("TagSpecifications"):
            implied.add("ec2:CreateTags")
        template = call.params["LaunchTemplate"]
        versions = ec2.describe_launch_template_versions(**{k: v for k, v in template.items() if k != "Version"}, Versions=[template["Version"]])
        if versions["LaunchTemplateVersions"][0]["LaunchTemplateData"].get("IamInstanceProfile"):
            implied.add("iam:PassRole")
    return implied


def policy_actions(policy: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement, statement
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in a for a in listed), f"a wildcard action in {statement.get('Sid')}"
        actions.update(listed)
    return actions


# ------------------------------------------------------------------------------------------- the runs
def start_staging(directory: Path) -> World:
    """Staging with three old general nodes (the drifted ones a run replaces) and two batch nodes."""
    staging = ClusterPlan(
        "staging",
        "eu-west-1",
        (
            NodeGroup("staging-general", "m5.large", desired=3, min_size=2, max_size=8, labels={"workload-type": "general"}, age_seconds=40 * DAY),
            NodeGroup("staging-batch", "c5.xlarge", desired=2, min_size=1, max_size=4, labels={"workload-type": "batch"}, age_seconds=3 * DAY),
        ),
    )
    # Pods take seconds to stop, as on a real node: a wait for deleted pods to go lists them still
    # terminating, then watches them go.
    return start_world(directory, (staging,), dataclasses.replace(fast_world_config(), pod_termination_seconds=3.0))


def enforce_rbac(world: World, documents: list[dict[str, Any]]) -> None:
    """Staging checks tokens and RBAC: the ServiceAccount's token is bound by ``documents`` alone; the
    admin kubeconfig (system:masters) is not subject to RBAC."""
    cluster = world.clusters["staging"].cluster
    admin_token = cluster.kubeconfig()["users"][0]["user"]["token"]
    cluster.authenticator = StaticTokenAuthenticator({SERVICE_ACCOUNT_TOKEN: SERVICE_ACCOUNT, admin_token: "sandbox-admin"})
    cluster.authorizer = RbacAuthorizer.from_documents(documents)


def service_account_connection(world: World, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kubernetes connection whose kubeconfig carries the ServiceAccount's token and nothing else."""
    kubeconfig = world.clusters["staging"].cluster.kubeconfig(user="kube-maintenance")
    kubeconfig["users"][0]["user"] = {"token": SERVICE_ACCOUNT_TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_K8S_STAGING_SA", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig)}}))
    return "k8s_staging_sa"


def aws_clients(world: World) -> tuple[Any, Any, Any]:
    aws = {"region_name": world.region("staging"), "endpoint_url": world.moto_url, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client("autoscaling", **aws), boto3.client("ec2", **aws), boto3.client("iam", **aws)


def publish_new_node_template(world: World) -> set[str]:
    """A new AMI as version 2 of the general group's launch template, with the nodes' instance
    profile as every EKS node template has it: the group's three nodes have drifted. Their names."""
    autoscaling, ec2, iam = aws_clients(world)
    iam.create_role(RoleName="staging-nodes", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    profile = iam.create_instance_profile(InstanceProfileName="staging-nodes")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="staging-nodes", RoleName="staging-nodes")
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["staging-general"])["AutoScalingGroups"][0]
    ec2.create_launch_template_version(
        LaunchTemplateId=group["LaunchTemplate"]["LaunchTemplateId"],
        SourceVersion="1",
        LaunchTemplateData={"ImageId": "ami-0aaaaaaaaaaaaaaa2", "IamInstanceProfile": {"Arn": profile["Arn"]}},
    )
    store = world.clusters["staging"].cluster.store
    return {n["metadata"]["name"] for n in store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "general"}


def add_lone_deployment(world: World) -> None:
    """A one-replica Deployment with no budget on the general nodes: node replacement scales it up
    before the drain (reading its ReplicaSet and the namespace's budgets) and back after."""
    store = world.clusters["staging"].cluster.store
    store.create(
        DEPLOYMENTS,
        {
            "metadata": {"name": "lonely", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "lonely"}},
                "template": {"metadata": {"labels": {"app": "lonely"}}, "spec": {"nodeSelector": {"workload-type": "general"}, "containers": [{"name": "app", "image": "lonely:1"}]}},
            },
        },
        namespace="default",
    )
    cluster = world.clusters["staging"].cluster
    assert cluster.wait_for(lambda: any(p.get("status", {}).get("phase") == "Running" for p in store.iter(PODS, "default") if p["metadata"]["labels"].get("app") == "lonely"), timeout=30)


def age_pods(world: World, namespaces: Iterable[str]) -> None:
    """The pods of these namespaces created a day ago, as the demo's long-installed workloads' pods
    would be (the world just started): a restart within the last hour did not replace them."""
    from sandbox.aws import _backdate

    cluster = world.clusters["staging"].cluster
    day_ago = cluster.clock.iso(cluster.clock.time() - DAY)
    for namespace in namespaces:
        for pod in list(cluster.store.iter(PODS, namespace)):
            _backdate(cluster.store, PODS, namespace, pod["metadata"]["name"], day_ago)


def prepare_cronjob_refresh(world: World) -> None:
    """The seeded stale Jobs stay running when judged, and settlement-export allows a fresh Job."""
    from test_cronjob_refresh import allow_concurrency, keep_fresh_jobs_running

    store = world.clusters["staging"].cluster.store
    keep_fresh_jobs_running(store)
    allow_concurrency(store, "payments/settlement-export")


@dataclass
class Runs:
    records: dict[str, list[RequestRecord]]  # per operation: the requests our client sent as the ServiceAccount
    all_records: list[RequestRecord]  # every request in the runs' time, whoever sent it
    aws_calls: list[AwsCall]
    implied: set[str]


def ours(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Every request made with the ServiceAccount's token (only the DAGs' connection holds it)."""
    return [r for r in records if r.user == SERVICE_ACCOUNT]


@pytest.fixture(scope="module")
def runs(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """One real run of each DAG (once for the module: every test below judges the same runs)."""
    tmp_path = tmp_path_factory.mktemp("least-privilege")
    world = start_staging(tmp_path / "sandbox")
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            yield run_the_three_dags(world, tmp_path, monkeypatch)
    finally:
        world.stop()


def run_the_three_dags(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runs:
    enforce_rbac(world, load(RBAC))
    runner = DagRunner(world, tmp_path, monkeypatch)
    conn_id = service_account_connection(world, monkeypatch)
    # The registry's default lock namespace (kube-maintenance), reached only through the ServiceAccount.
    runner.set_registry(reach_cluster(registry_for(world, lock_namespace=None), "staging", kubernetes_conn_id=conn_id))
    aws_calls = record_aws_calls(monkeypatch)
    cluster = world.clusters["staging"].cluster
    drifted = publish_new_node_template(world)
    add_lone_deployment(world)
    prepare_cronjob_refresh(world)
    age_pods(world, RESTARTED)
    windows: dict[str, list[tuple[float, float]]] = {}  # per operation: when its runs ran
    done: dict[str, set[str]] = {}
    start = len(cluster.requests)

    def run(operation: str, conf: dict[str, Any], state: str = "success") -> Any:
        began = time.time()
        result = runner.run(f"{operation}.py", f"{operation}__staging", conf)
        windows.setdefault(operation, []).append((began, time.time()))
        assert result.state == state, (operation, result.failed_tasks(), result.errors())
        done[operation] = done.get(operation, set()) | {line["action"] for line in result.audit if line["outcome"] == "done"}
        return result

    run("rollout_restart", {"dry_run": False, "namespaces": list(RESTARTED), "skip_if_restarted_within_minutes": 60})
    run("cronjob_refresh", {"dry_run": False, "create_fresh_job": True, "pods_gone_timeout_seconds": 60})
    run("node_replacement", {**AS_RUNBOOK, "dry_run": False, "only_drifted": True, "surge": True, "max_nodes": 3, "batch_size": 3})

    # Each run did real work (a dry run's requests would prove nothing about the writes).
    assert {"restart", "rolled-out"} <= done["rollout_restart"], done["rollout_restart"]
    assert {"delete-job", "create-job"} <= done["cronjob_refresh"], done["cronjob_refresh"]
    assert {"surge-launch", "cordon", "terminate", "scale-up", "scale-down"} <= done["node_replacement"], done["node_replacement"]
    store = cluster.store
    assert not drifted & {n["metadata"]["name"] for n in store.iter(NODES)}, "every drifted node was replaced"

    # The paths a successful run never takes, each needing a grant of its own:
    # - a rollout that fails writes a run-wide stop on the Lease (patch);
    from test_rollout_restart import break_template

    break_template(cluster, DEPLOYMENTS, "search", "search-api", progressDeadlineSeconds=5)
    failed = run("rollout_restart", {"dry_run": False, "namespaces": ["search"], "stuck_pod_seconds": 5}, state="failed")
    summary = [line for line in failed.audit if line["action"] == "summary"][-1]["after"]
    assert "exceeded its progress deadline" in summary["failed"]["deployment/search/search-api"], summary
    # - a run that fails between a surge launch and its attach (here Auto Scaling refuses the
    #   attach): its cleanup terminates the instance no group counts (ec2:TerminateInstances).
    from botocore.exceptions import ClientError
    from kube_maintenance.core import cloud

    def attach_refused(self: Any, group_name: str, instance_ids: list[str]) -> None:
        raise ClientError({"Error": {"Code": "ValidationError", "Message": "simulated: the group is at its maximum size"}}, "AttachInstances")

    monkeypatch.setattr(cloud.Cloud, "attach_to_group", attach_refused)
    batch_node = sorted(n["metadata"]["name"] for n in store.iter(NODES) if n["metadata"]["labels"].get("workload-type") == "batch")[0]
    run("node_replacement", {**AS_RUNBOOK, "dry_run": False, "surge": True, "node_names": [batch_node], "batch_size": 1}, state="failed")
    assert "surge-cancel" in done["node_replacement"]
    # - a drain a budget refuses waits on that budget (watch poddisruptionbudgets: it wakes when the
    #   budget allows again) and gives up at its timeout; the cleanup uncordons the node.
    from test_node_replacement import block_a_pdb

    victim = block_a_pdb(world)
    run("node_replacement", {**AS_RUNBOOK, "dry_run": False, "node_names": [victim], "drain_timeout_seconds": 20}, state="failed")
    cluster.faults.clear()
    assert not store.get(NODES, None, victim)["spec"].get("unschedulable"), "the node is uncordoned again"

    # A watch is logged when it ends: end those still open (the runs are over), then attribute each
    # request to the run during which it was sent.
    cluster.store.close_all_watches()
    time.sleep(0.5)
    sent = ours(cluster.requests.since(start))
    records = {op: [r for r in sent if any(began <= r.time < ended for began, ended in spans)] for op, spans in windows.items()}
    assert all(records.values()) and sum(map(len, records.values())) == len(sent), "every request belongs to one run"
    assert store.try_get(LEASES, LOCK_NAMESPACE, "kube-maintenance-lock") is None, "the lock, taken in its namespace, was released"
    _, ec2, _ = aws_clients(world)
    return Runs(records, cluster.requests.since(start), aws_calls, implied_actions(aws_calls, ec2))


# -------------------------------------------------------------------------------------------- tests
def test_the_three_dags_run_through_the_service_account_and_use_exactly_what_rbac_yaml_grants(runs: Runs) -> None:
    everything = [r for records in runs.records.values() for r in records]
    refused = sorted({(r.code, r.verb, r.resource, r.namespace) for r in runs.all_records if r.code in (401, 403)})
    assert not refused, f"requests refused during the runs: {refused}"
    assert {r.user for r in runs.all_records if "kube-maintenance" in r.user_agent} == {SERVICE_ACCOUNT}, "our client used the ServiceAccount's token and nothing else"
    assert all("kube-maintenance" in r.user_agent for r in everything), "and only our client used it"
    denied, unused = compare(load(RBAC), everything)
    assert not denied, f"requests rbac.yaml does not allow: {denied}"
    assert not unused, f"rbac.yaml grants what no run used: {unused}"
    lease_requests = {(r.verb, r.namespace) for r in everything if r.resource == "leases"}
    assert lease_requests and {ns for _, ns in lease_requests} == {LOCK_NAMESPACE}, lease_requests

    # The comparison would catch a missing rule and a needless one.
    documents = load(RBAC)
    cluster_role = next(d for d in documents if d["kind"] == "ClusterRole")
    cluster_role["rules"] = [rule for rule in cluster_role["rules"] if rule["resources"] != ["pods/eviction"]]
    cluster_role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    denied, unused = compare(documents, everything)
    assert denied and all(line.startswith("create pods/eviction") for line in denied), denied
    assert unused == ["get secrets (group '') cluster-wide"], unused


@pytest.mark.parametrize("operation", sorted(PER_OPERATION))
def test_each_per_operation_role_allows_exactly_what_its_dag_used(runs: Runs, operation: str) -> None:
    documents = load(PER_OPERATION[operation])
    denied, unused = compare(documents, runs.records[operation])
    assert not denied, f"{PER_OPERATION[operation].name} does not allow: {denied}"
    assert not unused, f"{PER_OPERATION[operation].name} grants what {operation} never used: {unused}"
    # The same namespace and ServiceAccount as rbac.yaml, and nothing rbac.yaml does not grant.
    shared = ("Namespace", "ServiceAccount")
    assert [d for d in documents if d["kind"] in shared] == [d for d in load(RBAC) if d["kind"] in shared]
    assert grants_of(documents, SERVICE_ACCOUNT) <= grants_of(load(RBAC), SERVICE_ACCOUNT)


def test_node_replacement_calls_exactly_the_aws_actions_iam_policy_json_allows(runs: Runs) -> None:
    called = {call.action for call in runs.aws_calls}
    needed = called | runs.implied
    granted = policy_actions(json.loads(IAM_POLICY.read_text()))
    assert "ec2:RunInstances" in called and "iam:PassRole" in runs.implied, "the surge launched from the new template version"
    assert not needed - granted, f"called but not in iam-policy.json: {sorted(needed - granted)}"
    assert not granted - needed, f"in iam-policy.json but never called: {sorted(granted - needed)}"
