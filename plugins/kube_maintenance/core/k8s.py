"""Cluster access: one isolated client per cluster, safe calls, lists, waits.

- Ways in: a ``kubernetes`` connection (``kube_config``, ``kube_config_path``, ``in_cluster``), or
  for an EKS cluster its ``aws`` connection (``eks.py``: tokens minted in process and renewed).

- Isolation: ``KubernetesHook`` loads a kubeconfig into the kubernetes client's *global* default
  configuration unless it is handed its own; two clusters in one worker would then cross. Every
  ``KubeClient`` builds its hook with a fresh ``Configuration``.
- Safety: transient answers (429, 5xx, connection resets) are retried inside a call with backoff
  (honouring Retry-After); anything else raises ``KubeApiError`` carrying the API's Status.
- Lists page with ``limit``/``continue``; waits list once and then follow a watch from that
  resourceVersion (re-listing on 410 or a cut stream), never tight polling.

Objects are plain dicts, as the API sends them, so the decision functions stay pure and testable.
"""
from __future__ import annotations

import json
import logging
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "kube-maintenance/1.0"
# Connections kept per client. The kubernetes client's default is five per CPU: ten on a 2-core
# worker, fewer than the drain's eviction threads (node_ops.EVICTION_WORKERS, 16) plus the passes
# over a batch's nodes running beside them, so urllib3 would open and throw away a connection per
# extra request ("Connection pool is full, discarding connection").
CONNECTION_POOL_SIZE = 32


class KubeApiError(Exception):
    """A non-transient API answer (or a transient one that outlasted its retries)."""

    def __init__(self, status: int, reason: str, message: str, body: Obj | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_delay)
        return min(self.max_delay, self.base_delay * (2**attempt)) * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class ResourceRef:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{urllib.parse.quote(namespace)}")
        parts.append(self.plural)
        if name:
            parts.append(urllib.parse.quote(name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


NAMESPACES = ResourceRef("", "v1", "namespaces", namespaced=False)
NODES = ResourceRef("", "v1", "nodes", namespaced=False)
PODS = ResourceRef("", "v1", "pods")
DEPLOYMENTS = ResourceRef("apps", "v1", "deployments")
DAEMONSETS = ResourceRef("apps", "v1", "daemonsets")
STATEFULSETS = ResourceRef("apps", "v1", "statefulsets")
REPLICASETS = ResourceRef("apps", "v1", "replicasets")
JOBS = ResourceRef("batch", "v1", "jobs")
CRONJOBS = ResourceRef("batch", "v1", "cronjobs")
PDBS = ResourceRef("policy", "v1", "poddisruptionbudgets")
LEASES = ResourceRef("coordination.k8s.io", "v1", "leases")
EVENTS = ResourceRef("", "v1", "events")

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def _in_cluster_api_client(hook: Any, configuration: Any) -> Any:
    """The pod's service account, loaded into this client's own configuration.

    ``KubernetesHook.get_conn`` on an ``in_cluster`` connection calls ``load_incluster_config()``
    without a configuration, which loads the service account into the kubernetes client's global
    default, then builds its client on the configuration it was handed, left empty: no host, no
    token. Loading it here keeps the client's own configuration (so two clusters never cross) and the
    loader's ``refresh_api_key_hook``, which re-reads the projected token file as kubelet rotates it.
    """
    from airflow.providers.cncf.kubernetes.kube_client import _TimeoutK8sApiClient
    from kubernetes import config

    if hook._get_field("kube_config") or hook._get_field("kube_config_path"):
        raise ValueError(f"connection {hook.conn_id}: in_cluster, kube_config and kube_config_path are mutually exclusive; set one")
    config.load_incluster_config(client_configuration=configuration)
    disable_tcp_keepalive = str(hook._get_field("disable_tcp_keepalive") or "").lower() == "true"
    return _TimeoutK8sApiClient(configuration=configuration, enable_tcp_keepalive=not disable_tcp_keepalive)


class KubeClient:
    """Raw-JSON access to one cluster through an ApiClient built by ``KubernetesHook``."""

    def __init__(self, api_client: Any, cluster: str, retry: RetryPolicy | None = None) -> None:
        self.api_client = api_client
        self.cluster = cluster
        self.retry = retry or RetryPolicy()
        self.requests = 0  # API requests made, retries included (benchmarks read it)
        api_client.user_agent = USER_AGENT

    @classmethod
    def for_cluster(cls, cluster: Any, retry: RetryPolicy | None = None) -> "KubeClient":
        """The client a registry entry (``ClusterConfig``) names: EKS through its aws connection, or its
        kubernetes connection."""
        if cluster.eks_cluster_name:
            return cls.from_eks(cluster.aws_conn_id, cluster.region, cluster.eks_cluster_name, cluster.name, retry)
        return cls.from_connection(cluster.kubernetes_conn_id, cluster.name, retry)

    @classmethod
    def from_eks(cls, aws_conn_id: str, region: str, eks_cluster_name: str, cluster: str, retry: RetryPolicy | None = None) -> "KubeClient":
        """An EKS cluster through an ``aws`` connection: DescribeCluster for the endpoint and CA, and a
        token from the connection's credentials, renewed inside the ApiClient before it expires."""
        from kube_maintenance.core.eks import eks_api_client

        return cls(eks_api_client(aws_conn_id, region, eks_cluster_name), cluster, retry)

    @classmethod
    def from_connection(cls, conn_id: str, cluster: str, retry: RetryPolicy | None = None) -> "KubeClient":
        """A ``kubernetes`` connection: ``kube_config`` (inline), ``kube_config_path`` (each with
        ``cluster_context``) or ``in_cluster``."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes import client as k8s_client

        configuration = k8s_client.Configuration()
        configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
        hook = KubernetesHook(conn_id=conn_id, client_configuration=configuration)
        if hook._get_field("in_cluster"):
            return cls(_in_cluster_api_client(hook, configuration), cluster, retry)
        return cls(hook.get_conn(), cluster, retry)

    # ------------------------------------------------------------------------------------ requests
    def _raw(self, method: str, path: str, query: list[tuple[str, Any]] | None, body: Any, content_type: str | None, timeout: float | None, stream: bool = False) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        self.requests += 1
        return self.api_client.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = 30,
        retry_conflicts: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Obj:
        """One API call with transient failures retried; the decoded JSON answer."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        policy = retry or self.retry
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        attempt = 0
        while True:
            try:
                resp = self._raw(method, path, params, body, content_type, timeout)
                data = resp.data
                return json.loads(data) if data else {}
            except ApiException as exc:
                status = int(exc.status or 0)
                retry_after = (exc.headers or {}).get("Retry-After") if exc.headers else None
                transient = status in RETRYABLE_STATUS or (retry_conflicts and status == 409)
                if transient and attempt + 1 < policy.attempts:
                    delay = policy.delay(attempt, retry_after)
                    log.info("%s %s: %s, retrying in %.1fs", method, path, status, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise self._error(exc) from None
            except (Urllib3Error, ConnectionError, OSError) as exc:
                if attempt + 1 < policy.attempts:
                    delay = policy.delay(attempt, None)
                    log.info("%s %s: %s, retrying in %.1fs", method, path, exc, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise KubeApiError(0, "ConnectionError", f"{self.cluster}: {exc}") from exc

    @staticmethod
    def _error(exc: Any) -> KubeApiError:
        try:
            body = json.loads(exc.body) if exc.body else {}
        except (TypeError, ValueError):
            body = {}
        return KubeApiError(int(exc.status or 0), body.get("reason") or str(exc.reason), body.get("message") or str(exc.reason), body)

    # --------------------------------------------------------------------------------------- reads
    def get(self, ref: ResourceRef, name: str, namespace: str | None = None) -> Obj:
        return self.request("GET", ref.path(namespace, name))

    def get_or_none(self, ref: ResourceRef, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.get(ref, name, namespace)
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise

    def list(
        self,
        ref: ResourceRef,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        project: Callable[[Obj], Obj] | None = None,
    ) -> tuple[list[Obj], str]:
        """Every object (all pages) and the list's resourceVersion, to start a watch from.

        ``project``, if given, is applied to each object as its page arrives and only its result
        is kept (``node_replacement/projections.py``: what a judgement reads of an object): at most
        one page of whole objects is held at once, not the whole collection.
        """
        for _ in range(3):
            items: list[Obj] = []
            token: str | None = None
            rv = ""
            try:
                while True:
                    page = self.request(
                        "GET",
                        ref.path(namespace),
                        {"labelSelector": label_selector, "fieldSelector": field_selector, "limit": page_size, "continue": token},
                    )
                    rv = rv or page.get("metadata", {}).get("resourceVersion", "")
                    token = page.get("metadata", {}).get("continue")
                    objs = page.get("items") or []
                    del page  # this page's whole objects go before the next page is decoded
                    items.extend(map(project, objs) if project else objs)
                    del objs
                    if not token:
                        return items, rv
            except KubeApiError as err:
                if err.status == 410:  # continue token expired: start the list again
                    continue
                raise
        raise KubeApiError(410, "Expired", f"could not list {ref.plural}: continue tokens kept expiring")

    # -------------------------------------------------------------------------------------- writes
    def patch(self, ref: ResourceRef, name: str, patch: Any, namespace: str | None = None, content_type: str = MERGE_PATCH, subresource: str | None = None) -> Obj:
        return self.request("PATCH", ref.path(namespace, name, subresource), body=patch, content_type=content_type)

    def create(self, ref: ResourceRef, body: Obj, namespace: str | None = None) -> Obj:
        return self.request("POST", ref.path(namespace), body=body)

    def delete(
        self,
        ref: ResourceRef,
        name: str,
        namespace: str | None = None,
        propagation: str | None = None,
        preconditions: dict[str, str] | None = None,
        grace_period: int | None = None,
    ) -> Obj:
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation:
            body["propagationPolicy"] = propagation
        if preconditions:
            body["preconditions"] = preconditions
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        return self.request("DELETE", ref.path(namespace, name), body=body)

    def evict(self, pod: Obj, grace_period: int | None = None) -> Obj:
        """POST an Eviction with a UID precondition (never evict a same-named successor)."""
        m = pod["metadata"]
        delete_options: Obj = {"preconditions": {"uid": m["uid"]}}
        if grace_period is not None:
            delete_options["gracePeriodSeconds"] = grace_period
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": m["name"], "namespace": m["namespace"]}, "deleteOptions": delete_options}
        # One attempt: 429 (a PDB says no) is the caller's decision to retry, not ours. (A policy
        # per call, not a swap of the client's own: evictions run in parallel threads.)
        return self.request("POST", PODS.path(m["namespace"], m["name"], "eviction"), body=body, retry=RetryPolicy(attempts=1))

    # --------------------------------------------------------------------------------------- waits
    def watch_events(
        self, ref: ResourceRef, namespace: str | None, resource_version: str, label_selector: str | None = None, field_selector: str | None = None, timeout_seconds: int = 60,
        on_open: Callable[[], None] | None = None,
    ) -> Iterator[Obj]:
        """Raw watch events from ``resource_version`` until the server ends the stream; ``on_open()``
        is called once the server has accepted the watch (it then sends every event since
        ``resource_version`` first)."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", int(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        from kubernetes.client.rest import ApiException

        try:
            resp = self._raw("GET", ref.path(namespace), query, None, None, timeout=timeout_seconds + 10)
        except ApiException as exc:  # refused before streaming (429/5xx, 410): the caller decides
            raise self._error(exc) from None
        if on_open is not None:
            on_open()
        buffer = b""
        try:
            for chunk in resp.stream(4096, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        finally:
            resp.release_conn()

    def wait_until(
        self,
        ref: ResourceRef,
        done: Callable[[dict[tuple[str, str], Obj]], bool | str],
        timeout: float,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        fail: Callable[[dict[tuple[str, str], Obj]], str | None] | None = None,
    ) -> dict[tuple[str, str], Obj]:
        """List once, then follow a watch, until ``done(objects)`` is true.

        ``objects`` maps (namespace, name) to the latest object. ``fail`` may return a reason to give
        up early (e.g. ProgressDeadlineExceeded). Raises ``WaitTimeout`` / ``WaitFailed``.
        """
        deadline = time.monotonic() + timeout
        objects: dict[tuple[str, str], Obj] = {}
        rv = ""
        while True:
            if not rv:
                items, rv = self.list(ref, namespace, label_selector, field_selector)
                objects = {_key(o): o for o in items}
            if fail is not None and (reason := fail(objects)):
                raise WaitFailed(reason, objects)
            if done(objects):
                return objects
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"timed out after {timeout:.0f}s waiting on {ref.plural}", objects)
            try:
                for event in self.watch_events(ref, namespace, rv, label_selector, field_selector, timeout_seconds=max(1, min(int(remaining) + 1, 300))):
                    etype, obj = event.get("type"), event.get("object") or {}
                    if etype == "ERROR":
                        rv = ""  # 410 Gone and friends: re-list
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if etype == "BOOKMARK":
                        continue
                    if etype == "DELETED":
                        objects.pop(_key(obj), None)
                    else:
                        objects[_key(obj)] = obj
                    if fail is not None and (reason := fail(objects)):
                        raise WaitFailed(reason, objects)
                    if done(objects):
                        return objects
                    if time.monotonic() >= deadline:
                        break
            except KubeApiError as err:
                if err.status in (410,) or err.status in RETRYABLE_STATUS:
                    if err.status != 410:  # an overloaded server: back off before the re-list
                        time.sleep(self.retry.delay(0, None))
                    rv = ""
                else:
                    raise
            except (OSError, ValueError) as exc:  # a cut stream: resume from the last resourceVersion
                log.info("watch on %s ended (%s); resuming from %s", ref.plural, exc, rv)
            except Exception as exc:  # noqa: BLE001 - urllib3 protocol errors on a cut stream
                if type(exc).__module__.startswith("urllib3"):
                    log.info("watch on %s cut (%s); resuming from %s", ref.plural, exc, rv)
                else:
                    raise


class WaitTimeout(Exception):
    def __init__(self, message: str, objects: dict[tuple[str, str], Obj]) -> None:
        super().__init__(message)
        self.objects = objects


class WaitFailed(Exception):
    def __init__(self, message: str, objects: dict[tuple[str, str], Obj]) -> None:
        super().__init__(message)
        self.objects = objects


def _key(obj: Obj) -> tuple[str, str]:
    m = obj.get("metadata", {})
    return (m.get("namespace", ""), m.get("name", ""))
