"""EKS tokens: made as the amazon provider's eks_get_token makes them, kept until due, renewed once."""
from __future__ import annotations

import base64
import datetime
import urllib.parse

import boto3
import pytest

from kube_maintenance.core.eks import TOKEN_PREFIX, EksTokenSource

STS_URL = "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source(clock: FakeClock, refresh_seconds: float = 600) -> EksTokenSource:
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1")
    return EksTokenSource("prod-eu", session, STS_URL, refresh_seconds, clock=clock)


def presigned_query(token: str) -> dict[str, str]:
    encoded = token.removeprefix(TOKEN_PREFIX)
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_a_token_is_a_presigned_get_caller_identity_for_the_cluster() -> None:
    token = source(FakeClock()).token()
    assert token.startswith(TOKEN_PREFIX) and not token.endswith("=")
    query = presigned_query(token)
    assert query["Action"] == "GetCallerIdentity"
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-Credential"].startswith("AKIDEXAMPLE/") and "/eu-west-1/sts/" in query["X-Amz-Credential"]


def test_a_token_is_kept_until_due_then_renewed() -> None:
    clock = FakeClock()
    tokens = source(clock, refresh_seconds=600)
    first = tokens.token()
    clock.now += 599
    assert tokens.token() == first and tokens.minted == 1
    clock.now += 1
    tokens.token()
    assert tokens.minted == 2


def test_a_refused_token_is_renewed_once_whoever_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = iter(range(100))
    start = datetime.datetime(2026, 11, 30, 12, 0, 0)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: start + datetime.timedelta(seconds=next(seconds)))
    tokens = source(FakeClock())
    refused = tokens.token()
    renewed = tokens.renew("Bearer " + refused)
    assert renewed != refused and tokens.minted == 2
    tokens.renew("Bearer " + refused)  # a second thread refused the same token: it is already replaced
    assert tokens.minted == 2


def test_the_refresh_hook_sets_the_bearer_token_on_the_configuration() -> None:
    from kubernetes import client

    tokens = source(FakeClock())
    configuration = client.Configuration()
    tokens.refresh_hook(configuration)
    configuration.refresh_api_key_hook = tokens.refresh_hook
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer " + tokens.token()
