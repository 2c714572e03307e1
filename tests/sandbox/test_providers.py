"""Airflow's own providers, through real Airflow connections, against the sandbox."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sandbox.aws import MotoServer, NodeGroup, provision_node_groups
from sandbox.cluster import SandboxCluster
from sandbox.resources import PODS
from sandbox.testing import add_ready_node

pytestmark = pytest.mark.timeout(120)


def pod(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"app": "hooked"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}


def test_kubernetes_hook_lists_and_watches_pods(api_cluster: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes import client, watch

    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(api_cluster.kubeconfig_path), "namespace": "default"}}  # type: ignore[attr-defined]
    monkeypatch.setenv("AIRFLOW_CONN_K8S_SANDBOX", json.dumps(conn))
    add_ready_node(api_cluster, "node-a")
    api_cluster.store.create(PODS, pod("first"), namespace="default")

    hook = KubernetesHook(conn_id="k8s_sandbox", client_configuration=client.Configuration())
    core = client.CoreV1Api(hook.get_conn())
    assert [p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=hooked").items] == ["first"]
    assert hook.get_namespace() == "default"

    rv = core.list_namespaced_pod("default").metadata.resource_version
    threading.Timer(0.3, lambda: api_cluster.store.create(PODS, pod("second"), namespace="default")).start()
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "second":
            w.stop()
    assert ("ADDED", "second") in seen
    assert all(r.user_agent for r in api_cluster.requests.since(0))


def test_aws_connection_with_endpoint_url_describes_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    with MotoServer() as moto:
        provision_node_groups(moto.url, "eu-west-1", "staging", (NodeGroup("staging-general", "m5.large", desired=2, min_size=1, max_size=4),))
        conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"region_name": "eu-west-1", "endpoint_url": moto.url}}
        monkeypatch.setenv("AIRFLOW_CONN_AWS_STAGING", json.dumps(conn))
        autoscaling = AwsBaseHook(aws_conn_id="aws_staging", client_type="autoscaling").get_conn()
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["staging-general"])["AutoScalingGroups"][0]
        assert group["DesiredCapacity"] == 2 and len(group["Instances"]) == 2
        ec2 = EC2Hook(aws_conn_id="aws_staging", api_type="client_type").get_conn()
        ids = [i["InstanceId"] for i in group["Instances"]]
        described = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        dns = [i["PrivateDnsName"] for r in described for i in r["Instances"]]
        assert len(dns) == 2 and all(d.startswith("ip-") and d.endswith(".eu-west-1.compute.internal") for d in dns)
