"""The AWS fault proxy: AWS's own errors on the wire, retried by botocore as it retries AWS's, and
a log that tells retries and terminations that took effect apart."""
from __future__ import annotations

from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.aws import FAKE_CREDENTIALS, MotoServer
from sandbox.aws_faults import AwsFaultProxy, AwsFaultRule

REGION = "eu-west-1"


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(moto.url) as p:
        yield p


def client(service: str, url: str, attempts: int = 1) -> Any:
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.client(service, endpoint_url=url, region_name=REGION, config=config, **FAKE_CREDENTIALS)


@pytest.mark.parametrize(
    "service,kind,status,code",
    [
        ("ec2", "throttle", 503, "RequestLimitExceeded"),
        ("ec2", "error", 500, "InternalError"),
        ("autoscaling", "throttle", 400, "Throttling"),
        ("autoscaling", "error", 500, "InternalFailure"),
    ],
)
def test_each_service_fails_as_aws_does(proxy: AwsFaultProxy, service: str, kind: str, status: int, code: str) -> None:
    proxy.faults.configure([{"kind": kind, "service": service}])
    call = (lambda c: c.describe_instances()) if service == "ec2" else (lambda c: c.describe_auto_scaling_groups())
    with pytest.raises(ClientError) as caught:
        call(client(service, proxy.url))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # The other service is not faulted.
    other = "autoscaling" if service == "ec2" else "ec2"
    (lambda c: c.describe_auto_scaling_groups() if other == "autoscaling" else c.describe_instances())(client(other, proxy.url))


def test_botocore_retries_them_and_the_log_counts_its_attempts(proxy: AwsFaultProxy) -> None:
    proxy.faults.configure([{"kind": "throttle", "remaining": 2}])
    assert client("ec2", proxy.url, attempts=3).describe_instances()["Reservations"] == []
    log = proxy.faults.log()
    assert [(r.action, r.attempt, r.code, r.injected) for r in log] == [
        ("DescribeInstances", 1, 503, "throttle/before"),
        ("DescribeInstances", 2, 503, "throttle/before"),
        ("DescribeInstances", 3, 200, ""),
    ]
    assert proxy.faults.retries() == 2


def test_an_error_after_the_action_loses_the_answer_but_not_the_change(moto: MotoServer, proxy: AwsFaultProxy) -> None:
    direct = client("ec2", moto.url)
    image = direct.describe_images()["Images"][0]["ImageId"]
    instance = direct.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    proxy.faults.configure([{"kind": "error", "action": "TerminateInstances", "when": "after", "remaining": 1}])
    # The SDK's retry of the lost answer is a second termination request of the same call.
    client("ec2", proxy.url, attempts=2).terminate_instances(InstanceIds=[instance])
    state = direct.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")
    assert proxy.faults.terminations_that_took_effect() == {instance: 2}
    assert proxy.faults.termination_calls() == {instance: 1}
    proxy.faults.configure([{"kind": "error", "action": "TerminateInstances", "when": "after"}])
    with pytest.raises(ClientError):
        client("ec2", proxy.url).terminate_instances(InstanceIds=[instance])  # a second call of the caller's own
    assert proxy.faults.terminations_that_took_effect() == {instance: 3}
    assert proxy.faults.termination_calls() == {instance: 2}


def test_a_rule_matches_by_service_and_action_and_is_checked() -> None:
    rule = AwsFaultRule("error", service="autoscaling", action="SuspendProcesses")
    assert rule.applies("autoscaling", "SuspendProcesses")
    assert not rule.applies("autoscaling", "ResumeProcesses") and not rule.applies("ec2", "SuspendProcesses")
    with pytest.raises(ValueError, match="kind must be throttle or error"):
        AwsFaultRule("slow")
    with pytest.raises(ValueError, match="when must be before or after"):
        AwsFaultRule("error", when="during")
