"""The cluster registry: one versioned file listing every cluster and how it is reached.

Validated when DAGs are parsed (cheap: a local file read and plain checks), with errors that name
the bad field, e.g. ``clusters[1].maintenance_window.start: expected HH:MM, got '25:00'``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kube_maintenance.core.lock import LEASE_DURATION_SECONDS
from kube_maintenance.core.windows import DAY_NAMES, MaintenanceWindow

REGISTRY_ENV = "KUBE_MAINTENANCE_REGISTRY"
DEFAULT_REGISTRY = Path(__file__).resolve().parents[3] / "config" / "clusters.yaml"
SUPPORTED_VERSIONS = (1,)
OPERATIONS = ("node_replacement", "cronjob_refresh", "rollout_restart")
# Never touched by any operation, whatever a registry or a form says.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
DEFAULT_OWNER = "kube-maintenance"
# Where the cluster's lock (a Lease) lives: the namespace deploy/kubernetes/rbac.yaml creates, so the
# Role that lets us write it is granted there only.
DEFAULT_LOCK_NAMESPACE = "kube-maintenance"
# A run waiting for approval (requires_approval) is rejected when nobody answers within this long.
DEFAULT_APPROVAL_TIMEOUT_HOURS = 24.0
MAX_APPROVAL_TIMEOUT_HOURS = 24.0 * 7
# The longest a waiting task sleeps between two looks: each look renews the cluster's lock, so a
# third of its lease leaves room for a late triggerer.
MAX_POKE_INTERVAL_SECONDS = LEASE_DURATION_SECONDS / 3
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a namespace name (RFC 1123 label)
_EKS_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$")  # EKS CreateCluster's name pattern


class RegistryError(ValueError):
    """The registry file is unusable; the message names the field to fix."""


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kubernetes_conn_id: str | None  # None for an EKS cluster reached through its aws connection
    aws_conn_id: str | None
    region: str | None
    timezone: str
    window: MaintenanceWindow
    protected_namespaces: tuple[str, ...]
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    alerts: tuple[AlertDestination, ...] = ()  # where failed, aborted and overrunning runs are reported (core/alerts.py)
    owner: str = DEFAULT_OWNER  # shown as every task's owner in the Airflow UI
    eks_cluster_name: str | None = None  # reach the cluster through aws_conn_id's EKS access, not kubernetes_conn_id
    lock_namespace: str = DEFAULT_LOCK_NAMESPACE  # the namespace of the cluster's maintenance Lease
    # Each run that would change something waits, after its plan, for a person to approve the plan
    # (Airflow's human-in-the-loop approval task); unanswered after approval_timeout_hours: rejected.
    requires_approval: bool = False
    approval_timeout_hours: float = DEFAULT_APPROVAL_TIMEOUT_HOURS

    def operation(self, name: str) -> dict[str, Any]:
        """Per-operation settings (``enabled``, ``schedule`` and parameter defaults)."""
        return dict(self.operations.get(name) or {})

    def enabled(self, name: str) -> bool:
        return bool(self.operation(name).get("enabled", True))


@dataclass(frozen=True)
class Registry:
    version: int
    clusters: tuple[ClusterConfig, ...]
    source: str

    def cluster(self, name: str) -> ClusterConfig:
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters)
        raise RegistryError(f"unknown cluster {name!r}; the registry {self.source} lists: {known}")


def _require(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise RegistryError(f"{where}.{key}: required")
    value = obj[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RegistryError(f"{where}.{key}: expected {expected}, got {value!r}")
    return value


def _window(raw: Any, where: str, tz: str) -> MaintenanceWindow:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected a mapping with days, start and duration_minutes")
    days = raw.get("days", list(DAY_NAMES))
    if not isinstance(days, list) or not days or any(d not in DAY_NAMES for d in days):
        raise RegistryError(f"{where}.days: expected a non-empty list of {', '.join(DAY_NAMES)}, got {days!r}")
    start = _require(raw, "start", where, str)
    m = re.match(r"^([01]\d|2[0-3]):([0-5]\d)$", start)
    if not m:
        raise RegistryError(f"{where}.start: expected HH:MM (24h), got {start!r}")
    duration = _require(raw, "duration_minutes", where, int)
    if isinstance(duration, bool) or not 1 <= duration <= 24 * 60:
        raise RegistryError(f"{where}.duration_minutes: expected 1..1440, got {duration!r}")
    return MaintenanceWindow(tuple(days), int(m.group(1)), int(m.group(2)), duration, tz)


# Where failures go (``alerts``): each destination a provider's notifier sends through an Airflow connection.
ALERT_TYPES = {
    # type: (its connection id's key, the keys it takes)
    "email": ("smtp_conn_id", ("type", "to", "smtp_conn_id", "from_email")),  # the smtp provider's SmtpNotifier
    "webhook": ("http_conn_id", ("type", "http_conn_id", "endpoint")),  # the http provider's HttpNotifier (a JSON POST)
}
DEFAULT_SMTP_CONN_ID = "smtp_default"
_CONN_ID = re.compile(r"^[\w.-]+$")  # what Airflow accepts as a connection id
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


@dataclass(frozen=True)
class AlertDestination:
    """One place a cluster's failed, aborted or overrunning runs are reported (sent by core/alerts.py)."""

    type: str  # "email" or "webhook"
    conn_id: str  # the smtp connection (email) or http connection (webhook: its host is the URL, its extra the headers)
    to: tuple[str, ...] = ()  # email: the recipients
    from_email: str | None = None  # email: the sender (default: the smtp connection's from_email)
    endpoint: str = ""  # webhook: the path posted to, under the connection's host

    def describe(self) -> str:
        if self.type == "email":
            return f"email to {', '.join(self.to)} through the smtp connection {self.conn_id}"
        return f"webhook through the http connection {self.conn_id}{(' at ' + self.endpoint) if self.endpoint else ''}"

    def as_dict(self) -> dict[str, Any]:
        """JSON for the deadline alert's callback (stored with the serialized DAG)."""
        return {"type": self.type, "conn_id": self.conn_id, "to": list(self.to), "from_email": self.from_email, "endpoint": self.endpoint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertDestination:
        return cls(data["type"], data["conn_id"], tuple(data.get("to") or ()), data.get("from_email"), data.get("endpoint") or "")


def _alerts(raw: Any, where: str) -> tuple[AlertDestination, ...]:
    """A list of destinations: ``{type: email, to: [...], smtp_conn_id, from_email}`` or ``{type: webhook, http_conn_id, endpoint}``."""
    if not isinstance(raw, list):
        raise RegistryError(f"{where}: expected a list of destinations ({' or '.join(ALERT_TYPES)}), e.g. [{{type: email, to: [oncall@example.com]}}]; [] for none")
    out = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise RegistryError(f"{at}: expected a mapping with a type ({' or '.join(ALERT_TYPES)})")
        kind = entry.get("type")
        if kind not in ALERT_TYPES:
            raise RegistryError(f"{at}.type: expected {' or '.join(ALERT_TYPES)}, got {kind!r}")
        conn_key, keys = ALERT_TYPES[kind]
        unknown = sorted(set(entry) - set(keys))
        if unknown:
            raise RegistryError(f"{at}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for a {kind} destination; expected {', '.join(keys)}")
        conn_id = entry.get(conn_key, DEFAULT_SMTP_CONN_ID if kind == "email" else None)
        if conn_id is None:
            raise RegistryError(f"{at}.{conn_key}: required (the Airflow connection the {kind} goes through)")
        if not isinstance(conn_id, str) or not _CONN_ID.match(conn_id):
            raise RegistryError(f"{at}.{conn_key}: expected an Airflow connection id (letters, digits, '_', '.', '-'), got {conn_id!r}")
        if kind == "email":
            to = entry.get("to")
            recipients = [to] if isinstance(to, str) else to
            if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and _EMAIL.match(r) for r in recipients):
                raise RegistryError(f"{at}.to: expected an email address or a non-empty list of them, got {to!r}")
            sender = entry.get("from_email")
            if sender is not None and (not isinstance(sender, str) or not _EMAIL.match(sender)):
                raise RegistryError(f"{at}.from_email: expected an email address, got {sender!r}")
            out.append(AlertDestination("email", conn_id, tuple(recipients), sender))
        else:
            endpoint = entry.get("endpoint", "")
            if not isinstance(endpoint, str) or re.search(r"\s", endpoint) or "://" in endpoint:
                raise RegistryError(
                    f"{at}.endpoint: expected a path on the http connection's host, got {endpoint!r} "
                    "(the URL, and any token in it, belong in the connection, not in the registry)"
                )
            out.append(AlertDestination("webhook", conn_id, endpoint=endpoint))
    return tuple(out)


def parse_registry(data: Any, source: str = "<registry>") -> Registry:
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: expected a mapping at top level")
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise RegistryError(f"version: expected one of {SUPPORTED_VERSIONS}, got {version!r}")
    raw_clusters = data.get("clusters")
    if not isinstance(raw_clusters, list) or not raw_clusters:
        raise RegistryError("clusters: expected a non-empty list")
    default_alerts = _alerts(data.get("alerts", []), "alerts")  # every cluster's, unless it names its own
    clusters: list[ClusterConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_clusters):
        where = f"clusters[{i}]"
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: expected a mapping")
        name = _require(raw, "name", where, str)
        if not _NAME.match(name):
            raise RegistryError(f"{where}.name: {name!r} must be lower case letters, digits, '-' or '_'")
        if name in seen:
            raise RegistryError(f"{where}.name: duplicate cluster name {name!r}")
        seen.add(name)
        where = f"clusters[{i}] ({name})"
        eks_name = raw.get("eks_cluster_name")
        if eks_name is not None and (not isinstance(eks_name, str) or not _EKS_NAME.match(eks_name)):
            raise RegistryError(f"{where}.eks_cluster_name: expected an EKS cluster name (letters, digits, '-' and '_', starting with a letter or digit, up to 100), got {eks_name!r}")
        if eks_name is not None and "kubernetes_conn_id" in raw:
            raise RegistryError(
                f"{where}: set either kubernetes_conn_id (a kubernetes connection) or eks_cluster_name (EKS through aws_conn_id), not both"
            )
        if eks_name is None and "kubernetes_conn_id" not in raw:
            raise RegistryError(f"{where}.kubernetes_conn_id: required (or eks_cluster_name, to reach an EKS cluster through aws_conn_id)")
        k8s_conn = None if eks_name is not None else _require(raw, "kubernetes_conn_id", where, str)
        aws_conn = raw.get("aws_conn_id")
        if aws_conn is not None and not isinstance(aws_conn, str):
            raise RegistryError(f"{where}.aws_conn_id: expected a string")
        if eks_name is not None and not aws_conn:
            raise RegistryError(f"{where}.aws_conn_id: required with eks_cluster_name (the aws connection EKS tokens are made from)")
        region = raw.get("region")
        if aws_conn and not isinstance(region, str):
            raise RegistryError(f"{where}.region: required when aws_conn_id is set")
        tz = _require(raw, "timezone", where, str)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise RegistryError(f"{where}.timezone: unknown timezone {tz!r}") from exc
        window = _window(raw.get("maintenance_window"), f"{where}.maintenance_window", tz)
        protected = raw.get("protected_namespaces", [])
        if not isinstance(protected, list) or not all(isinstance(n, str) for n in protected):
            raise RegistryError(f"{where}.protected_namespaces: expected a list of namespace names")
        owner = raw.get("owner", DEFAULT_OWNER)
        if not isinstance(owner, str) or not owner.strip():
            raise RegistryError(f"{where}.owner: expected a team or person name, got {owner!r}")
        lock_namespace = raw.get("lock_namespace", DEFAULT_LOCK_NAMESPACE)
        if not isinstance(lock_namespace, str) or not _DNS_LABEL.match(lock_namespace):
            raise RegistryError(f"{where}.lock_namespace: expected a namespace name (lower case letters, digits and '-', at most 63), got {lock_namespace!r}")
        requires_approval = raw.get("requires_approval", False)
        if not isinstance(requires_approval, bool):
            raise RegistryError(f"{where}.requires_approval: expected true or false, got {requires_approval!r}")
        approval_timeout = raw.get("approval_timeout_hours", DEFAULT_APPROVAL_TIMEOUT_HOURS)
        if isinstance(approval_timeout, bool) or not isinstance(approval_timeout, (int, float)) or not 0 < approval_timeout <= MAX_APPROVAL_TIMEOUT_HOURS:
            raise RegistryError(f"{where}.approval_timeout_hours: expected hours, more than 0 and at most {MAX_APPROVAL_TIMEOUT_HOURS:g}, got {approval_timeout!r}")
        if "approval_timeout_hours" in raw and not requires_approval:
            raise RegistryError(f"{where}.approval_timeout_hours: only meaningful with requires_approval: true")
        ops = raw.get("operations", {})
        if not isinstance(ops, dict):
            raise RegistryError(f"{where}.operations: expected a mapping")
        for op_name, settings in ops.items():
            if op_name not in OPERATIONS:
                raise RegistryError(f"{where}.operations.{op_name}: unknown operation; expected one of {', '.join(OPERATIONS)}")
            if not isinstance(settings, dict):
                raise RegistryError(f"{where}.operations.{op_name}: expected a mapping")
            if "enabled" in settings and not isinstance(settings["enabled"], bool):
                raise RegistryError(f"{where}.operations.{op_name}.enabled: expected true or false")
            poke = settings.get("poke_interval_seconds", 15)
            if isinstance(poke, bool) or not isinstance(poke, (int, float)) or not 0 < poke <= MAX_POKE_INTERVAL_SECONDS:
                raise RegistryError(
                    f"{where}.operations.{op_name}.poke_interval_seconds: expected a number of seconds above 0 and at most "
                    f"{MAX_POKE_INTERVAL_SECONDS:.0f} (each look renews the cluster's lock, whose lease is {LEASE_DURATION_SECONDS} s), got {poke!r}"
                )
        alerts = _alerts(raw["alerts"], f"{where}.alerts") if "alerts" in raw else default_alerts
        clusters.append(
            ClusterConfig(
                name=name,
                kubernetes_conn_id=k8s_conn,
                aws_conn_id=aws_conn,
                region=region,
                timezone=tz,
                window=window,
                protected_namespaces=tuple(dict.fromkeys([*SYSTEM_NAMESPACES, *protected])),
                operations={k: dict(v) for k, v in ops.items()},
                description=str(raw.get("description", "")),
                alerts=alerts,
                owner=owner.strip(),
                eks_cluster_name=eks_name,
                lock_namespace=lock_namespace,
                requires_approval=requires_approval,
                approval_timeout_hours=float(approval_timeout),
            )
        )
    return Registry(int(version), tuple(clusters), source)


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate the registry (``$KUBE_MAINTENANCE_REGISTRY`` or config/clusters.yaml)."""
    target = Path(path or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)
    try:
        text = target.read_text()
    except OSError as exc:
        raise RegistryError(f"cannot read the cluster registry {target}: {exc.strerror}") from exc
    if target.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{target}: invalid JSON: {exc}") from exc
    else:
        import yaml  # a dependency of Airflow itself (already loaded with it)

        # libyaml's safe loader where PyYAML has it: the same safe subset, about 10x faster than the
        # pure-Python one (5 ms for 10 clusters), and every DAG file reads the registry at each parse.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise RegistryError(f"{target}: invalid YAML: {exc}") from exc
    return parse_registry(data, str(target))
