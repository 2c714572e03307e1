"""EKS clusters reached through an Airflow ``aws`` connection, with tokens that outlive any run.

EKS authenticates a bearer token ``k8s-aws-v1.<base64url of a presigned STS GetCallerIdentity URL>``
whose signature covers the ``x-k8s-aws-id`` header (the cluster's name). aws-iam-authenticator accepts
it for 15 minutes after its ``X-Amz-Date``, whatever ``X-Amz-Expires`` says. The amazon provider's
``EksHook.generate_config_file`` writes a kubeconfig whose exec plugin starts a Python process per
token; here the same token helper (``fetch_access_token_for_cluster``) runs in process instead, from
the connection's own boto3 session, and the kubernetes client asks for a fresh token through its
``refresh_api_key_hook`` before every request: a new one is minted once the current one is
``refresh_seconds`` old, well inside its 15 minutes, so a poke or drain that runs for hours keeps
working on one ApiClient. A token the server refuses anyway (401) is replaced once, at once.
"""
from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from airflow.providers.cncf.kubernetes.kube_client import _TimeoutK8sApiClient

log = logging.getLogger(__name__)

# aws-iam-authenticator accepts a token for 15 minutes after it is signed; mint a new one well before.
# Module-level so that a test can shrink it (the sandbox can shorten a token's life to match).
TOKEN_REFRESH_SECONDS = 600.0
TOKEN_PREFIX = "k8s-aws-v1."
STS_GET_CALLER_IDENTITY = "/?Action=GetCallerIdentity&Version=2011-06-15"


@dataclass(frozen=True)
class EksEndpoint:
    """What DescribeCluster says about where the cluster's API server is and how to trust it."""

    name: str
    endpoint: str
    certificate_authority_data: str  # base64 of the PEM bundle, as EKS returns it


class EksTokenSource:
    """Mints EKS tokens from a boto3 session and keeps the current one until it is due for renewal.

    Thread-safe: parallel drains share one ApiClient, so one thread renews and the others wait for it.
    """

    def __init__(
        self,
        cluster_name: str,
        session: Any,
        sts_url: str,
        refresh_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster_name = cluster_name
        self.session = session
        self.sts_url = sts_url
        self.refresh_seconds = TOKEN_REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self.clock = clock
        self.minted = 0  # tokens minted so far (tests and logs read it)
        self._token: str | None = None
        self._minted_at = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() - self._minted_at >= self.refresh_seconds:
                from airflow.providers.amazon.aws.utils.eks_get_token import fetch_access_token_for_cluster

                # The provider's helper signs with the session's current credentials, so assumed-role
                # connections renew their own credentials underneath.
                self._token = fetch_access_token_for_cluster(self.cluster_name, self.sts_url, self.session.region_name, session=self.session)
                self._minted_at = self.clock()
                self.minted += 1
                log.debug("minted EKS token %d for cluster %s", self.minted, self.cluster_name)
            return self._token

    def renew(self, rejected: str | None) -> str:
        """A token other than the one the server just refused (minted unless another thread already has)."""
        with self._lock:
            if rejected is None or self._token is None or rejected.removeprefix("Bearer ") == self._token:
                self._token = None
        return self.token()

    def refresh_hook(self, configuration: Any) -> None:
        """The kubernetes client's ``refresh_api_key_hook``: called before every request is signed."""
        configuration.api_key["BearerToken"] = "Bearer " + self.token()


def describe_eks_cluster(aws_conn_id: str, region: str, cluster_name: str) -> tuple[EksEndpoint, Any, str]:
    """DescribeCluster through the connection; its endpoint, the connection's session and its STS URL."""
    from airflow.providers.amazon.aws.hooks.eks import EksHook
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    hook = EksHook(aws_conn_id=aws_conn_id, region_name=region)
    described = hook.describe_cluster(name=cluster_name)["cluster"]
    endpoint = EksEndpoint(cluster_name, described["endpoint"], (described.get("certificateAuthority") or {}).get("data", ""))
    session = hook.get_session(region_name=region)
    # EKS accepts only tokens signed for the regional STS endpoint (botocore's default now); the
    # connection's endpoint_url, if any, is honoured as it is for every other client of it.
    sts_endpoint = StsHook(aws_conn_id=aws_conn_id, region_name=region).conn_client_meta.endpoint_url
    return endpoint, session, sts_endpoint.rstrip("/") + STS_GET_CALLER_IDENTITY


def eks_configuration(endpoint: EksEndpoint, tokens: EksTokenSource, ca_file: str | None) -> Any:
    """A kubernetes client Configuration of its own (never the global default) for an EKS endpoint."""
    from kubernetes import client as k8s_client

    from kube_maintenance.core.k8s import CONNECTION_POOL_SIZE

    configuration = k8s_client.Configuration()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    configuration.host = endpoint.endpoint.rstrip("/")
    if ca_file:
        configuration.ssl_ca_cert = ca_file
    configuration.refresh_api_key_hook = tokens.refresh_hook
    tokens.refresh_hook(configuration)  # fail here, naming the cluster, if no token can be minted
    return configuration


class EksApiClient(_TimeoutK8sApiClient):
    """The provider's ApiClient, which on a 401 renews the token and sends the request once more.

    client-go's exec credential plugins renew their credentials when the server answers 401 (the
    clock of a worker may be off, a token may be refused early); KubeClient treats a 401 as final, so
    the one retry with the new token happens here, below it. A second 401 is the answer.
    """

    def __init__(self, configuration: Any, tokens: EksTokenSource) -> None:
        super().__init__(configuration=configuration, enable_tcp_keepalive=True)
        self.tokens = tokens

    def request(self, method: str, url: str, query_params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException

        try:
            return super().request(method, url, query_params=query_params, headers=headers, **kwargs)
        except ApiException as exc:
            if exc.status != 401 or headers is None:
                raise
            log.info("cluster %s refused its EKS token (401): minting a new one and retrying once", self.tokens.cluster_name)
            headers["authorization"] = "Bearer " + self.tokens.renew(headers.get("authorization"))
            return super().request(method, url, query_params=query_params, headers=headers, **kwargs)


def eks_api_client(aws_conn_id: str, region: str, cluster_name: str, refresh_seconds: float | None = None) -> EksApiClient:
    """An ApiClient for an EKS cluster, authenticated from the ``aws`` connection, renewing its token."""
    endpoint, session, sts_url = describe_eks_cluster(aws_conn_id, region, cluster_name)
    tokens = EksTokenSource(cluster_name, session, sts_url, refresh_seconds)
    if not endpoint.endpoint.startswith("https://"):
        # Only the sandbox could serve plain HTTP; a real EKS endpoint is always https with its own CA.
        return EksApiClient(eks_configuration(endpoint, tokens, None), tokens)
    # urllib3 reads the CA file whenever it opens a connection, so it lives as long as the client does
    # (the kubernetes config loader keeps its CA files the same way).
    with tempfile.NamedTemporaryFile("wb", suffix=".crt", prefix=f"eks-{cluster_name}-", delete=False) as ca_file:
        ca_file.write(base64.b64decode(endpoint.certificate_authority_data))
    api_client = EksApiClient(eks_configuration(endpoint, tokens, ca_file.name), tokens)
    weakref.finalize(api_client, _remove_quietly, ca_file.name)
    return api_client


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
