"""The sandbox as an EKS cluster: tokens checked as aws-iam-authenticator checks them, 401 otherwise,
HTTPS with its own CA, and DescribeCluster (moto) leading to it."""
from __future__ import annotations

import base64
import datetime
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import boto3
import pytest
import requests
from airflow.providers.amazon.aws.utils.eks_get_token import fetch_access_token_for_cluster

from sandbox.auth import StaticTokenAuthenticator
from sandbox.aws import MotoServer, aws_client
from sandbox.cluster import SandboxCluster
from sandbox.eks import EksAuthenticator, register_eks_cluster
from sandbox.testing import fast_config
from sandbox.tls import make_tls

pytestmark = pytest.mark.timeout(60)

REGION = "eu-west-1"


@pytest.fixture
def eks_cluster(moto: MotoServer) -> Iterator[SandboxCluster]:
    cluster = SandboxCluster("blue", fast_config())
    cluster.tls = make_tls("blue")
    cluster.authenticator = EksAuthenticator("blue", REGION, moto.url)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def token_for(moto: MotoServer, cluster_name: str, secret: str = "testing", region: str = REGION) -> str:
    """A token exactly as the amazon provider's eks_get_token makes one."""
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key=secret, region_name=region)
    return fetch_access_token_for_cluster(cluster_name, moto.url + "/?Action=GetCallerIdentity&Version=2011-06-15", region, session=session)


def presigned_url(token: str) -> str:
    encoded = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def as_token(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def with_query(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def get_nodes(cluster: SandboxCluster, token: str | None, ca_file: Path) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(cluster.url + "/api/v1/nodes", headers=headers, verify=str(ca_file), timeout=10)


def node_requests(cluster: SandboxCluster, count: int) -> list:
    """The request log's node requests, once ``count`` are in (a record is added after the answer is sent)."""
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in cluster.requests.since(0) if r.resource == "nodes"]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


@pytest.fixture
def ca_file(eks_cluster: SandboxCluster, tmp_path: Path) -> Path:
    return eks_cluster.tls.write_ca(tmp_path / "ca.crt")


def test_a_valid_token_is_accepted_and_the_identity_is_the_signers(moto: MotoServer, eks_cluster: SandboxCluster, ca_file: Path) -> None:
    assert eks_cluster.url.startswith("https://")
    response = get_nodes(eks_cluster, token_for(moto, "blue"), ca_file)
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "NodeList"
    record = node_requests(eks_cluster, 1)[-1]
    # moto's STS answers GetCallerIdentity for the access key that signed the token.
    assert record.code == 200 and record.user == aws_client("sts", moto.url, REGION).get_caller_identity()["Arn"]


@pytest.mark.parametrize(
    "case",
    ["absent", "not a bearer", "no prefix", "not base64", "foreign cluster", "wrong secret", "stale", "expires too long", "extra parameter", "other host", "other action"],
)
def test_bad_tokens_get_the_api_servers_401(case: str, moto: MotoServer, eks_cluster: SandboxCluster, ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = token_for(moto, "blue")
    url = presigned_url(good)
    if case == "stale":
        # Signed 16 minutes ago: past the authenticator's 15 minutes, whatever X-Amz-Expires says.
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=16)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: past.replace(tzinfo=None))
    token = {
        "absent": None,
        "not a bearer": None,
        "no prefix": good.removeprefix("k8s-aws-v1."),
        "not base64": "k8s-aws-v1.%%%not-base64%%%",
        "foreign cluster": token_for(moto, "green"),  # signed for another cluster's x-k8s-aws-id
        "wrong secret": token_for(moto, "blue", secret="not-the-secret"),
        "stale": token_for(moto, "blue") if case == "stale" else None,
        "expires too long": as_token(with_query(url, **{"X-Amz-Expires": "3600"})),
        "extra parameter": as_token(with_query(url, Extra="1")),
        "other host": as_token(url.replace("127.0.0.1", "localhost", 1)),
        "other action": as_token(with_query(url, Action="AssumeRole")),
    }[case]
    if case == "not a bearer":
        response = requests.get(eks_cluster.url + "/api/v1/nodes", auth=("admin", "admin"), verify=str(ca_file), timeout=10)
    else:
        response = get_nodes(eks_cluster, token, ca_file)
    assert response.status_code == 401
    assert response.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    reason = {
        "absent": "no bearer token",
        "not a bearer": "no bearer token",
        "no prefix": "prefix",
        "not base64": "base64",
        "foreign cluster": "SignatureDoesNotMatch",
        "wrong secret": "SignatureDoesNotMatch",
        "stale": "expired",
        "expires too long": "X-Amz-Expires",
        "extra parameter": "non-whitelisted",
        "other host": "hostname",
        "other action": "action",
    }[case]
    assert reason in eks_cluster.authenticator.rejections[-1], "refused for the reason the authenticator gives"
    assert not eks_cluster.authenticator.accepted
    assert [r.code for r in node_requests(eks_cluster, 1)] == [401]


def test_a_token_expires_after_the_clusters_token_lifetime(moto: MotoServer, eks_cluster: SandboxCluster, ca_file: Path) -> None:
    authenticator = eks_cluster.authenticator
    authenticator.token_lifetime_seconds = 60  # tests shorten the 15 minutes
    token = token_for(moto, "blue")
    assert get_nodes(eks_cluster, token, ca_file).status_code == 200
    later = time.time() + 62
    authenticator.clock = lambda: later
    response = get_nodes(eks_cluster, token, ca_file)
    assert response.status_code == 401, "an accepted token is not remembered past its expiry"
    assert "expired" in eks_cluster.authenticator.rejections[-1]


def test_the_cluster_ca_is_what_verifies_the_server(eks_cluster: SandboxCluster, ca_file: Path, tmp_path: Path) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(eks_cluster.url + "/version", timeout=10)  # the system CAs do not trust it
    other_ca = make_tls("other").write_ca(tmp_path / "other-ca.crt")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(eks_cluster.url + "/version", verify=str(other_ca), timeout=10)
    assert requests.get(eks_cluster.url + "/version", verify=str(ca_file), timeout=10).status_code == 401, "TLS passes, then authentication"


def test_describe_cluster_leads_to_the_sandbox(moto: MotoServer, eks_cluster: SandboxCluster) -> None:
    described = register_eks_cluster(moto.url, REGION, "blue", eks_cluster.url, eks_cluster.tls.ca_data)
    eks = aws_client("eks", moto.url, REGION)
    assert eks.describe_cluster(name="blue")["cluster"]["endpoint"] == described["endpoint"] == eks_cluster.url
    assert base64.b64decode(described["certificateAuthority"]["data"]) == eks_cluster.tls.ca_pem
    eks.delete_cluster(name="blue")


def test_static_tokens_as_a_token_file_gives_them(moto: MotoServer) -> None:
    cluster = SandboxCluster("plain", fast_config())
    cluster.authenticator = StaticTokenAuthenticator({"sa-token": "system:serviceaccount:airflow:worker"})
    cluster.start()
    try:
        assert requests.get(cluster.url + "/api/v1/nodes", headers={"Authorization": "Bearer sa-token"}, timeout=10).status_code == 200
        assert requests.get(cluster.url + "/api/v1/nodes", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        assert [(r.code, r.user) for r in node_requests(cluster, 2)] == [(200, "system:serviceaccount:airflow:worker"), (401, "")]
    finally:
        cluster.stop()
