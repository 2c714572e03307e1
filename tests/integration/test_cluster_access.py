"""Cluster access through real Airflow connections: isolation, retries, paging, watches."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from harness import SERVICE_ACCOUNT, DagRunner, fake_service_account, fast_world_config, kubernetes_connections, reach_cluster, registry_for
from sandbox.__main__ import airflow_connections
from sandbox.resources import NODES, PODS
from sandbox.scenario import World, start_world

from kube_maintenance.core.k8s import NODES as NODE_REF
from kube_maintenance.core.k8s import PODS as POD_REF
from kube_maintenance.core.k8s import KubeApiError, KubeClient, RetryPolicy
from kube_maintenance.core.registry import ClusterConfig, parse_registry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def connections(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    for var, conn in airflow_connections(world).items():
        monkeypatch.setenv(var, json.dumps(conn))
    return world


def test_two_clusters_in_one_process_never_cross(connections: World) -> None:
    from kubernetes import client

    default_host_before = client.Configuration.get_default_copy().host
    staging = KubeClient.from_connection("k8s_staging", "staging")
    production = KubeClient.from_connection("k8s_production", "production")
    staging_nodes = {n["metadata"]["name"] for n in staging.list(NODE_REF)[0]}
    production_nodes = {n["metadata"]["name"] for n in production.list(NODE_REF)[0]}
    assert staging_nodes == {n["metadata"]["name"] for n in connections.clusters["staging"].cluster.store.iter(NODES)}
    assert production_nodes == {n["metadata"]["name"] for n in connections.clusters["production"].cluster.store.iter(NODES)}
    assert staging.list(NODE_REF)[0] and not staging_nodes & production_nodes
    assert client.Configuration.get_default_copy().host == default_host_before, "the global default is untouched"


def test_transient_errors_are_retried_and_lists_page(connections: World) -> None:
    cluster = connections.clusters["staging"].cluster
    kube = KubeClient.from_connection("k8s_staging", "staging", RetryPolicy(attempts=6, base_delay=0.01))
    cluster.faults.configure({"errors": [{"code": 503, "verb": "list", "resource": "pods", "remaining": 2}, {"code": 429, "verb": "list", "resource": "pods", "remaining": 1}]})
    items, rv = kube.list(POD_REF, page_size=5)
    assert len(items) == cluster.store.count(PODS) and rv
    pages = [r for r in cluster.requests.since(0) if r.verb == "list" and r.resource == "pods" and r.code == 200]
    assert len(pages) >= -(-len(items) // 5), "paged with limit/continue"
    cluster.faults.configure({"errors": [{"code": 403, "verb": "get", "resource": "nodes"}]})
    with pytest.raises(KubeApiError) as err:
        kube.get(NODE_REF, "anything")
    assert err.value.status == 403  # not transient: no retry, a clear error
    cluster.faults.clear()


def test_wait_until_follows_a_watch_across_cut_streams(connections: World) -> None:
    cluster = connections.clusters["staging"].cluster
    kube = KubeClient.from_connection("k8s_staging", "staging")
    cluster.faults.configure({"watch_cut_after_events": 1})
    pod = {"metadata": {"name": "late", "labels": {"wait": "me"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    threading.Timer(0.5, lambda: cluster.store.create(PODS, pod, namespace="default")).start()
    objects = kube.wait_until(POD_REF, lambda objs: any(o["status"].get("phase") == "Running" for o in objs.values()), timeout=30, namespace="default", label_selector="wait=me")
    assert [o["metadata"]["name"] for o in objects.values()] == ["late"]
    watches = [r for r in cluster.requests.since(0) if r.verb == "watch" and r.resource == "pods" and "kube-maintenance" in r.user_agent]
    assert len(watches) >= 2, "the cut stream was resumed"
    cluster.faults.clear()


# ------------------------------------------------------------------------------- every way in
# A world over HTTPS where "staging" is an EKS cluster (EKS tokens only; moto's DescribeCluster leads
# to it) and "production" is reached through each form of kubernetes connection.
@pytest.fixture
def secure_world(tmp_path: Path) -> Iterator[World]:
    w = start_world(tmp_path / "sandbox", ("staging", "production"), fast_world_config(), tls=True, eks=["staging"])
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def ways_in(secure_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    connections = {**airflow_connections(secure_world), **kubernetes_connections(secure_world, "production", tmp_path)}
    for var, conn in connections.items():
        monkeypatch.setenv(var, json.dumps(conn))
    fake_service_account(secure_world, "production", tmp_path, monkeypatch)
    return secure_world


def registry_entry(world: World, form: str) -> ClusterConfig:
    registry = registry_for(world)
    if form == "eks":
        reach_cluster(registry, "staging", eks_cluster_name="staging")
    else:
        reach_cluster(registry, "production", kubernetes_conn_id=f"k8s_production_{form}")
    return parse_registry(registry).cluster("staging" if form == "eks" else "production")


def node_names(world: World, name: str) -> set[str]:
    return {n["metadata"]["name"] for n in world.clusters[name].cluster.store.iter(NODES)}


def served(world: World, name: str, since: int = 0) -> list[Any]:
    """The cluster's request log from ``since``, once the last answer's record is in."""
    time.sleep(0.05)  # a record is added right after its answer is sent
    return world.clusters[name].cluster.requests.since(since)


WAYS_IN = ["inline", "path", "in_cluster", "eks"]


@pytest.mark.parametrize("form", WAYS_IN)
def test_each_way_in_reaches_its_cluster_with_its_own_configuration(form: str, ways_in: World) -> None:
    from kubernetes import client

    default_before = client.Configuration.get_default_copy()
    cluster = registry_entry(ways_in, form)
    kube = KubeClient.for_cluster(cluster)
    assert kube.api_client.configuration.host == ways_in.clusters[cluster.name].url  # https, verified with the cluster's CA
    assert {n["metadata"]["name"] for n in kube.list(NODE_REF)[0]} == node_names(ways_in, cluster.name)
    users = {r.user for r in served(ways_in, cluster.name) if r.resource == "nodes" and r.code == 200}
    expected_user = {"eks": "arn:aws:sts::123456789012:user/moto", "in_cluster": SERVICE_ACCOUNT}.get(form, "sandbox-admin")
    assert users == {expected_user}, "authenticated as the way in says"
    default_after = client.Configuration.get_default_copy()
    assert (default_after.host, default_after.api_key) == (default_before.host, default_before.api_key), "the global default is untouched"


@pytest.mark.parametrize("form", WAYS_IN)
def test_each_way_in_keeps_a_connection_for_every_eviction_thread(form: str, ways_in: World) -> None:
    # The client's default pool (five per CPU) is smaller than the drain's threads on a small
    # worker: urllib3 would then discard a connection after each extra concurrent request.
    from kube_maintenance.node_replacement.node_ops import EVICTION_WORKERS

    kube = KubeClient.for_cluster(registry_entry(ways_in, form))
    assert kube.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] > EVICTION_WORKERS


@pytest.mark.parametrize("form", WAYS_IN)
def test_a_dag_run_works_through_each_way_in(form: str, ways_in: World, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    runner = DagRunner(ways_in, tmp_path, monkeypatch, capfd)
    registry = registry_for(ways_in)
    name = "staging" if form == "eks" else "production"
    if form == "eks":
        reach_cluster(registry, "staging", eks_cluster_name="staging")
    else:
        reach_cluster(registry, "production", kubernetes_conn_id=f"k8s_production_{form}")
    runner.set_registry(registry)
    seq = len(ways_in.clusters[name].cluster.requests)
    result = runner.run("rollout_restart.py", f"rollout_restart__{name}", {"dry_run": True, "namespaces": ["shop"]})
    assert result.state == "success", (result.failed_tasks(), result.errors())
    assert any(line["action"] == "plan-restart" for line in result.audit), "the plan was read from the cluster"
    ours = [r for r in served(ways_in, name, seq) if "kube-maintenance" in r.user_agent]
    assert ours and all(r.code < 400 for r in ours), sorted({(r.code, r.verb, r.resource) for r in ours if r.code >= 400})


def test_an_eks_token_is_renewed_inside_one_client_and_a_long_run_keeps_working(ways_in: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.core import eks

    authenticator = ways_in.clusters["staging"].cluster.authenticator
    authenticator.token_lifetime_seconds = 4  # EKS: 15 minutes
    monkeypatch.setattr(eks, "TOKEN_REFRESH_SECONDS", 2.0)  # ours: 10 minutes
    kube = KubeClient.for_cluster(registry_entry(ways_in, "eks"))
    ended = time.monotonic() + 10  # more than twice a token's life on one ApiClient
    calls = 0
    while time.monotonic() < ended:
        assert kube.list(NODE_REF, page_size=2)[0]
        calls += 1
        time.sleep(0.3)
    assert calls >= 20
    assert len(authenticator.accepted) >= 4, "new tokens were minted as the old ones aged"
    assert not authenticator.rejections
    assert {r.code for r in served(ways_in, "staging") if r.resource == "nodes"} == {200}


def test_a_stale_token_is_refused_with_401_and_replaced_once(ways_in: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.core import eks

    authenticator = ways_in.clusters["staging"].cluster.authenticator
    authenticator.token_lifetime_seconds = 2
    monkeypatch.setattr(eks, "TOKEN_REFRESH_SECONDS", 3600.0)  # never renewed by age: it goes stale
    kube = KubeClient.for_cluster(registry_entry(ways_in, "eks"))
    assert kube.list(NODE_REF)[0]
    seq = len(ways_in.clusters["staging"].cluster.requests)
    time.sleep(3.1)
    assert {n["metadata"]["name"] for n in kube.list(NODE_REF)[0]} == node_names(ways_in, "staging")
    assert [r.code for r in served(ways_in, "staging", seq) if r.resource == "nodes"] == [401, 200], "refused, then a new token"
    assert "expired" in authenticator.rejections[-1]
    assert len(authenticator.accepted) == 2


def test_tokens_for_another_cluster_or_not_from_eks_are_refused(ways_in: World) -> None:
    from sandbox.eks import register_eks_cluster

    staging = ways_in.clusters["staging"]
    # A registry naming the wrong EKS cluster: DescribeCluster leads to staging, the token says "impostor".
    register_eks_cluster(ways_in.moto_url, staging.region, "impostor", staging.url, staging.cluster.tls.ca_data)
    impostor = KubeClient.from_eks("aws_staging", staging.region, "impostor", "staging")
    with pytest.raises(KubeApiError) as foreign:
        impostor.list(NODE_REF)
    assert (foreign.value.status, foreign.value.reason) == (401, "Unauthorized")
    assert staging.cluster.authenticator.rejections[-2:] == ["error from AWS (expected 200, got 403): SignatureDoesNotMatch"] * 2, "a new token, refused too"
    # The kubeconfig's static token: not an EKS token.
    with pytest.raises(KubeApiError) as static:
        KubeClient.from_connection("k8s_staging", "staging").list(NODE_REF)
    assert static.value.status == 401
    assert "prefix" in staging.cluster.authenticator.rejections[-1]
    assert not {r.user for r in served(ways_in, "staging") if r.code == 401} - {""}


def test_in_cluster_is_exclusive_with_a_kubeconfig(ways_in: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conn = {"conn_type": "kubernetes", "extra": {"in_cluster": True, "kube_config_path": str(ways_in.kubeconfig("production"))}}
    monkeypatch.setenv("AIRFLOW_CONN_K8S_BOTH", json.dumps(conn))
    with pytest.raises(ValueError, match="mutually exclusive"):
        KubeClient.from_connection("k8s_both", "production")


def _xcom_values(dag_ids: list[str]) -> str:
    """Every XCom the runs of these DAGs left in Airflow's database, as text."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return "\n".join(json.dumps(x.value, default=str) for x in session.scalars(select(XComModel).where(XComModel.dag_id.in_(dag_ids))))


def test_no_token_kubeconfig_or_signed_url_reaches_a_log_an_xcom_or_an_audit_line(ways_in: World, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """Secrets stay secret (issue 11, item 5): real runs of the three DAGs on an EKS cluster (tokens
    made from presigned STS URLs) and a dry run through an in-cluster service account token; then
    everything the runs wrote (task logs, audit lines, XComs) is searched for the credentials."""
    runner = DagRunner(ways_in, tmp_path, monkeypatch, capfd)
    registry = registry_for(ways_in)
    reach_cluster(registry, "staging", eks_cluster_name="staging")
    reach_cluster(registry, "production", kubernetes_conn_id="k8s_production_in_cluster")
    runner.set_registry(registry)
    staging = ways_in.clusters["staging"].cluster
    victim = sorted(n["metadata"]["name"] for n in staging.store.iter(NODES))[0]
    results = [
        runner.run("rollout_restart.py", "rollout_restart__staging", {"dry_run": False, "namespaces": ["shop"]}),
        runner.run("cronjob_refresh.py", "cronjob_refresh__staging", {"dry_run": False}),
        runner.run("node_replacement.py", "node_replacement__staging", {"dry_run": False, "node_names": [victim], "force_unmanaged_pods": True, "delete_emptydir_data": True}),
        runner.run("rollout_restart.py", "rollout_restart__production", {"dry_run": True, "namespaces": ["shop"]}),
    ]
    for result in results:
        assert result.state == "success", (result.failed_tasks(), result.errors())
    written = "\n".join(["\n".join(r.logs) for r in results] + [json.dumps(r.audit) for r in results])
    written += "\n" + _xcom_values(["rollout_restart__staging", "cronjob_refresh__staging", "node_replacement__staging", "rollout_restart__production"])
    for path in tmp_path.glob("*.log"):  # the runner's post-mortem copies of every run's output
        written += "\n" + path.read_text(errors="replace")
    kubeconfig = staging.kubeconfig()
    secrets = {
        "an EKS token": "k8s-aws-v1.",
        "a presigned URL's signature": "X-Amz-Signature",
        "a presigned URL's credential": "X-Amz-Credential",
        "the service account token": "sa-token-airflow-worker",
        "the kubeconfig's admin token": kubeconfig["users"][0]["user"]["token"],
        "the kubeconfig's CA data": kubeconfig["clusters"][0]["cluster"].get("certificate-authority-data", "")[:40] or "-no-ca-data-",
        "a private key": "PRIVATE KEY",
    }
    assert len(written) > 10_000, "the runs' output was captured"
    leaked = sorted(what for what, text in secrets.items() if text and text in written)
    assert not leaked, f"found in logs, audit lines or XComs: {leaked}"


def test_no_token_kubeconfig_or_signed_url_reaches_an_alert(ways_in: World, airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """Secrets stay out of failure alerts (issue 11, items 4 and 5): failed runs through an EKS
    cluster's tokens (a rollout that fails; a registry naming the wrong EKS cluster, every request
    refused with 401) and through an in-cluster service account token (a step failing with an error
    that quotes every credential there is), each alerting a local SMTP server and HTTP receiver; then
    every message they received is searched for the credentials."""
    import base64

    from alert_receivers import Receivers, dag_callbacks_like_the_dag_processor, no_deadline_alerts_in_dag_test, with_alerts

    from kube_maintenance.rollout_restart import tasks as rollout_tasks
    from sandbox.config import NEVER_READY_ANNOTATION
    from sandbox.eks import register_eks_cluster
    from sandbox.resources import DEPLOYMENTS

    receivers = Receivers.start()
    try:
        for var, value in receivers.connections().items():
            monkeypatch.setenv(var, value)
        dag_callbacks_like_the_dag_processor(monkeypatch)
        no_deadline_alerts_in_dag_test(monkeypatch)
        runner = DagRunner(ways_in, tmp_path, monkeypatch, capfd)
        staging = ways_in.clusters["staging"]

        def registry(eks_name: str) -> dict[str, Any]:
            entries = registry_for(ways_in)
            reach_cluster(entries, "staging", eks_cluster_name=eks_name)
            reach_cluster(entries, "production", kubernetes_conn_id="k8s_production_in_cluster")
            return with_alerts(entries)

        # 1. Through EKS tokens, a rollout that fails (its new pods never become Ready).
        def never_ready(obj: dict[str, Any]) -> None:
            obj["spec"]["progressDeadlineSeconds"] = 2
            obj["spec"]["template"]["metadata"].setdefault("annotations", {})[NEVER_READY_ANNOTATION] = "true"

        staging.cluster.store.mutate(DEPLOYMENTS, "shop", "cart-api", never_ready)
        runner.set_registry(registry("staging"))
        results = [runner.run("rollout_restart.py", "rollout_restart__staging", {"dry_run": False, "namespaces": ["shop"], "max_concurrent_rollouts": 1})]
        # 2. The wrong EKS cluster: DescribeCluster leads to staging, which refuses its tokens (401).
        register_eks_cluster(ways_in.moto_url, staging.region, "impostor", staging.url, staging.cluster.tls.ca_data)
        runner.set_registry(registry("impostor"))
        results.append(runner.run("rollout_restart.py", "rollout_restart__staging", {"dry_run": True, "namespaces": ["shop"]}))
        # 3. In cluster, a step failing with an error that quotes every credential.
        token = next(iter(staging.cluster.authenticator.accepted))  # an EKS token the API server took
        presigned = base64.urlsafe_b64decode(token.removeprefix("k8s-aws-v1.") + "==").decode()
        kubeconfig = ways_in.clusters["production"].cluster.kubeconfig()
        admin_token = kubeconfig["users"][0]["user"]["token"]
        ca_data = kubeconfig["clusters"][0]["cluster"].get("certificate-authority-data", "")
        quoted = (
            f"401 for GET {presigned} with Authorization: Bearer {token}; kubeconfig users: [{{user: {{token: {admin_token}}}}}] "
            f"certificate-authority-data: {ca_data}; token=sa-token-airflow-worker; aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY; "
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecret\n-----END RSA PRIVATE KEY-----"
        )

        def failing_plan(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(quoted)

        monkeypatch.setattr(rollout_tasks, "plan", failing_plan)
        results.append(runner.run("rollout_restart.py", "rollout_restart__production", {"dry_run": True, "namespaces": ["shop"]}))
    finally:
        receivers.stop()
    assert [r.state for r in results] == ["failed"] * 3, [(r.state, r.failed_tasks()) for r in results]
    assert len(receivers.smtp.received) == 3 and len(receivers.http.received) == 3, "one message per failed run and destination"
    sent = receivers.everything()
    secrets = {
        "an EKS token": "k8s-aws-v1.",
        "the token the API server took": token.removeprefix("k8s-aws-v1.")[:40],
        "a presigned URL's signature": "X-Amz-Signature",
        "a presigned URL's credential": "X-Amz-Credential",
        "the service account token": "sa-token-airflow-worker",
        "the kubeconfig's admin token": admin_token,
        "the kubeconfig's CA data": ca_data[:40] or "-no-ca-data-",
        "an AWS secret key": "wJalrXUtnFEMI",
        "a private key": "PRIVATE KEY",
    }
    leaked = sorted(what for what, text in secrets.items() if text and text in sent)
    assert not leaked, f"found in alerts: {leaked}"
    assert "401" in sent and "[EKS token redacted]" in sent, "the messages still say what failed"
