"""RBAC authorization for a sandbox cluster that asks for it (``SandboxCluster.authorizer``).

The rules are the real API server's (kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go and
pkg/apis/rbac/v1/evaluation_helpers.go):

- the rules that apply to a user are those of every ClusterRoleBinding whose subjects include it, and
  for a namespaced request those of every RoleBinding in the request's namespace (a RoleBinding may
  reference a Role of its namespace or a ClusterRole; either grants only in that namespace);
- a rule allows a request when its verbs, apiGroups, resources and resourceNames all match: ``*``
  matches any verb, group or resource, a subresource is asked for as ``pods/eviction`` (or
  ``*/eviction``), and resourceNames, when set, must name the object (a create or a list has no name,
  so a rule with resourceNames never allows them);
- subjects: a User by name, a Group by the user's groups, a ServiceAccount as the user
  ``system:serviceaccount:<namespace>:<name>``, whose groups are ``system:serviceaccounts``,
  ``system:serviceaccounts:<namespace>`` and ``system:authenticated``.

A request no rule allows is answered 403 with the Status the API server sends
(``nodes "n1" is forbidden: User "..." cannot patch resource "nodes" in API group "" at the cluster
scope``). Users in ``unrestricted`` stand for ``system:masters`` members (the sandbox's admin
kubeconfig), which the API server lets through before any authorizer. Non-resource paths
(discovery, ``/version``) are not checked: every cluster's default ``system:discovery`` and
``system:public-info-viewer`` bindings allow them to everyone authenticated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import ApiError

Obj = dict[str, Any]
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@dataclass(frozen=True)
class Request:
    """What the authorizer is asked about (the API server's authorizer.Attributes)."""

    user: str
    verb: str
    group: str
    resource: str  # the plural, without its subresource
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def groups_of(user: str) -> set[str]:
    """The groups the API server gives an authenticated user (service accounts get theirs from the name)."""
    groups = {"system:authenticated"}
    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = user[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        groups |= {"system:serviceaccounts", f"system:serviceaccounts:{namespace}"}
    return groups


def rule_allows(rule: Obj, request: Request) -> bool:
    """RuleAllows for a resource request."""
    verbs = rule.get("verbs") or ()
    if "*" not in verbs and request.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or ()
    if "*" not in groups and request.group not in groups:
        return False
    combined = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    if not any(
        r == "*" or r == combined or (request.subresource and r == f"*/{request.subresource}")
        for r in rule.get("resources") or ()
    ):
        return False
    names = rule.get("resourceNames") or ()
    return not names or request.name in names


def subject_matches(subject: Obj, user: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in groups_of(user)
    if kind == "ServiceAccount":
        return user == f"{SERVICE_ACCOUNT_PREFIX}{subject.get('namespace', '')}:{subject.get('name', '')}"
    return False


def forbidden(request: Request) -> ApiError:
    """The 403 the API server answers (responsewriters.Forbidden, then apierrors.NewForbidden)."""
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    if request.namespace:
        why = f'User "{request.user}" cannot {request.verb} resource "{resource}" in API group "{request.group}" in the namespace "{request.namespace}"'
    else:
        why = f'User "{request.user}" cannot {request.verb} resource "{resource}" in API group "{request.group}" at the cluster scope'
    qualified = f"{request.resource}.{request.group}" if request.group else request.resource
    message = f'{qualified} "{request.name}" is forbidden: {why}' if request.name else f"{qualified} is forbidden: {why}"
    return ApiError(403, message, reason="Forbidden", details={"name": request.name, "group": request.group, "kind": request.resource})


@dataclass
class RbacAuthorizer:
    """Roles, ClusterRoles and their bindings, as the cluster would hold them."""

    objects: list[Obj] = field(default_factory=list)
    unrestricted: frozenset[str] = frozenset({"sandbox-admin"})  # system:masters members

    @classmethod
    def from_documents(cls, documents: Iterable[Obj | None], **options: Any) -> "RbacAuthorizer":
        """From manifests (``yaml.safe_load_all`` of an RBAC file): the RBAC kinds are kept, others ignored."""
        return cls([d for d in documents if d and d.get("kind") in RBAC_KINDS], **options)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> "RbacAuthorizer":
        import yaml

        return cls.from_documents(yaml.safe_load_all(Path(path).read_text()), **options)

    def _role(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        for obj in self.objects:
            meta = obj.get("metadata") or {}
            if obj.get("kind") == kind and meta.get("name") == name and (kind == "ClusterRole" or meta.get("namespace", "") == namespace):
                return obj
        return None

    def rules_for(self, user: str, namespace: str = "") -> list[Obj]:
        """Every rule that applies to ``user`` in ``namespace`` ("" at the cluster scope)."""
        rules: list[Obj] = []
        for binding in self.objects:
            kind = binding.get("kind")
            meta = binding.get("metadata") or {}
            if kind == "ClusterRoleBinding":
                pass
            elif kind == "RoleBinding" and namespace and meta.get("namespace", "") == namespace:
                pass
            else:
                continue
            if not any(subject_matches(s, user) for s in binding.get("subjects") or ()):
                continue
            ref = binding.get("roleRef") or {}
            # A ClusterRoleBinding may only reference a ClusterRole; a RoleBinding a Role of its
            # namespace or a ClusterRole (granted in the binding's namespace only).
            role = self._role(ref.get("kind", ""), ref.get("name", ""), meta.get("namespace", ""))
            if role is not None and (kind == "RoleBinding" or role.get("kind") == "ClusterRole"):
                rules.extend(role.get("rules") or ())
        return rules

    def allows(self, request: Request) -> bool:
        if request.user in self.unrestricted:
            return True
        return any(rule_allows(rule, request) for rule in self.rules_for(request.user, request.namespace))

    def authorize(self, request: Request) -> None:
        """Raise the API server's 403 unless some rule allows the request."""
        if not self.allows(request):
            raise forbidden(request)
