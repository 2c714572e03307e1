"""The sandbox enforces RBAC as the API server does: rules matched as rbac.go matches them, and the
403 Status it sends when none allows a request."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.auth import StaticTokenAuthenticator
from sandbox.cluster import SandboxCluster
from sandbox.rbac import RbacAuthorizer, Request
from sandbox.testing import add_ready_node

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:kube-maintenance:kube-maintenance"
SA_TOKEN = "sa-token-kube-maintenance"
OTHER_SA = "system:serviceaccount:kube-maintenance:without-role"
OTHER_TOKEN = "sa-token-without-role"


def binding(kind: str, name: str, role_kind: str, role: str, subjects: list[dict[str, str]], namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}, "subjects": subjects}


def sa_subject(name: str = "kube-maintenance", namespace: str = "kube-maintenance") -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


# ------------------------------------------------------------------------------------ rule matching
def test_rules_match_verbs_groups_resources_subresources_and_names_as_the_api_server_does() -> None:
    authorizer = RbacAuthorizer.from_documents(
        [
            {"kind": "ClusterRole", "metadata": {"name": "drain"}, "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]},
                {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["patch"]},
            ]},
            binding("ClusterRoleBinding", "drain", "ClusterRole", "drain", [sa_subject()]),
        ],
        unrestricted=frozenset(),
    )

    def allows(verb: str, group: str, resource: str, subresource: str = "", namespace: str = "shop", name: str = "", user: str = SA) -> bool:
        return authorizer.allows(Request(user, verb, group, resource, subresource, namespace, name))

    assert allows("list", "", "pods") and allows("create", "", "pods", "eviction", name="web-1")
    assert not allows("create", "", "pods"), "pods/eviction does not grant pods"
    assert not allows("get", "", "pods", "log", name="web-1"), "pods does not grant its subresources"
    assert not allows("list", "apps", "pods"), "the group must match"
    assert allows("get", "apps", "deployments", name="web") and allows("get", "apps", "deployments", "status", name="web"), "* matches any resource, subresources included"
    assert allows("patch", "apps", "statefulsets", "scale", name="db") and not allows("patch", "apps", "statefulsets", name="db"), "*/scale matches only the subresource"
    assert not allows("list", "", "pods", user="system:serviceaccount:other:kube-maintenance"), "a ServiceAccount is namespace and name"


def test_resource_names_never_allow_a_create_or_a_list_and_a_rolebinding_grants_in_its_namespace_only() -> None:
    authorizer = RbacAuthorizer.from_documents(
        [
            {"kind": "Role", "metadata": {"name": "lock", "namespace": "kube-maintenance"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kube-maintenance-lock"], "verbs": ["get", "create", "list"]},
            ]},
            binding("RoleBinding", "lock", "Role", "lock", [sa_subject()], "kube-maintenance"),
            {"kind": "ClusterRole", "metadata": {"name": "events"}, "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
            # A ClusterRole referenced by a RoleBinding, to a Group: the service accounts of one namespace.
            binding("RoleBinding", "events", "ClusterRole", "events", [{"kind": "Group", "name": "system:serviceaccounts:kube-maintenance"}], "shop"),
        ],
        unrestricted=frozenset(),
    )
    lease = dict(verb="get", group="coordination.k8s.io", resource="leases", namespace="kube-maintenance")
    assert authorizer.allows(Request(SA, name="kube-maintenance-lock", **lease))
    assert not authorizer.allows(Request(SA, name="other-lease", **lease))
    assert not authorizer.allows(Request(SA, **{**lease, "verb": "create"})), "a create names no object: resourceNames cannot allow it"
    assert not authorizer.allows(Request(SA, **{**lease, "verb": "list"}))
    assert not authorizer.allows(Request(SA, name="kube-maintenance-lock", **{**lease, "namespace": "default"})), "a Role grants in its namespace only"
    assert authorizer.allows(Request(SA, "create", "", "events", namespace="shop"))
    assert not authorizer.allows(Request(SA, "create", "", "events", namespace="payments")), "a RoleBinding to a ClusterRole grants in its namespace only"
    assert not authorizer.allows(Request(SA, "create", "", "events")), "nor at the cluster scope"


# --------------------------------------------------------------------------------------------- HTTP
@pytest.fixture
def rbac_cluster(api_cluster: SandboxCluster) -> SandboxCluster:
    """The API cluster with tokens checked and RBAC enforced from deploy/kubernetes/rbac.yaml; a
    second ServiceAccount that no binding names."""
    admin_token = api_cluster.kubeconfig()["users"][0]["user"]["token"]
    api_cluster.authenticator = StaticTokenAuthenticator({SA_TOKEN: SA, OTHER_TOKEN: OTHER_SA, admin_token: "sandbox-admin"})
    api_cluster.authorizer = RbacAuthorizer.from_file(REPO / "deploy" / "kubernetes" / "rbac.yaml")
    add_ready_node(api_cluster, "node-a")
    return api_cluster


def call(cluster: SandboxCluster, method: str, path: str, token: str, body: Any = None, content_type: str = "application/strategic-merge-patch+json") -> requests.Response:
    return requests.request(method, cluster.url + path, headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, "User-Agent": "test"}, json=body, timeout=10)


def test_a_service_account_without_the_role_gets_the_api_servers_403(rbac_cluster: SandboxCluster) -> None:
    cordon = {"spec": {"unschedulable": True}}
    refused = call(rbac_cluster, "PATCH", "/api/v1/nodes/node-a", OTHER_TOKEN, cordon)
    assert refused.status_code == 403
    assert refused.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'nodes "node-a" is forbidden: User "system:serviceaccount:kube-maintenance:without-role" cannot patch resource "nodes" in API group "" at the cluster scope',
        "reason": "Forbidden",
        "details": {"name": "node-a", "group": "", "kind": "nodes"},
        "code": 403,
    }
    assert not rbac_cluster.store.get("nodes", None, "node-a")["spec"].get("unschedulable"), "nothing changed"
    listed = call(rbac_cluster, "GET", "/apis/apps/v1/namespaces/shop/deployments", OTHER_TOKEN)
    assert (listed.status_code, listed.json()["message"]) == (
        403, 'deployments.apps is forbidden: User "system:serviceaccount:kube-maintenance:without-role" cannot list resource "deployments" in API group "apps" in the namespace "shop"'
    )
    evicted = call(rbac_cluster, "POST", "/api/v1/namespaces/shop/pods/web-1/eviction", OTHER_TOKEN, {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1"}}, "application/json")
    assert evicted.json()["message"].endswith('cannot create resource "pods/eviction" in API group "" in the namespace "shop"')
    assert evicted.json()["details"] == {"name": "web-1", "group": "", "kind": "pods"}
    assert call(rbac_cluster, "GET", "/version", OTHER_TOKEN).status_code == 200, "discovery is every authenticated user's"

    # The bound ServiceAccount may cordon; the admin (system:masters) is not subject to RBAC.
    assert call(rbac_cluster, "PATCH", "/api/v1/nodes/node-a", SA_TOKEN, cordon).status_code == 200
    assert call(rbac_cluster, "DELETE", "/api/v1/nodes/node-a", SA_TOKEN).status_code == 403, "rbac.yaml grants no delete of nodes"
    admin_token = rbac_cluster.kubeconfig()["users"][0]["user"]["token"]
    assert call(rbac_cluster, "DELETE", "/api/v1/nodes/node-a", admin_token).status_code == 200
    time.sleep(0.05)  # a record is added right after its answer is sent
    logged = [(r.code, r.verb, r.resource, r.group, r.user) for r in rbac_cluster.requests.since(0) if r.resource == "nodes"]
    assert logged == [(403, "patch", "nodes", "", OTHER_SA), (200, "patch", "nodes", "", SA), (403, "delete", "nodes", "", SA), (200, "delete", "nodes", "", "sandbox-admin")]


def test_the_lease_is_writable_in_the_lock_namespace_only(rbac_cluster: SandboxCluster) -> None:
    from kube_maintenance.core.k8s import KubeApiError, KubeClient
    from kube_maintenance.core.lock import ClusterLock
    from kubernetes import client

    rbac_cluster.store.create("namespaces", {"metadata": {"name": "kube-maintenance"}})
    configuration = client.Configuration()
    configuration.host = rbac_cluster.url
    configuration.api_key = {"authorization": f"Bearer {SA_TOKEN}"}
    kube = KubeClient(client.ApiClient(configuration), "api")
    lock = ClusterLock(kube, "rollout_restart__api/run-1", namespace="kube-maintenance")
    assert lock.acquire() == "acquired" and lock.acquire() == "renewed"
    lock.request_stop("a rollout failed")
    assert lock.release() is True
    with pytest.raises(KubeApiError) as refused:
        ClusterLock(kube, "rollout_restart__api/run-1", namespace="default").acquire()
    assert refused.value.status == 403 and 'cannot create resource "leases" in API group "coordination.k8s.io" in the namespace "default"' in refused.value.message
