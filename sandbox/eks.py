"""EKS for the sandbox: bearer tokens checked as aws-iam-authenticator checks them, and DescribeCluster.

A cluster marked as EKS (``SandboxCluster.authenticator``) accepts only a token
``k8s-aws-v1.<base64url of a presigned STS GetCallerIdentity URL>``. The checks, in the order
aws-iam-authenticator's ``Verify`` makes them (kubernetes-sigs/aws-iam-authenticator, pkg/token):
the prefix and encoding; an http(s) URL on the STS endpoint this cluster trusts, path ``/``, only
whitelisted query parameters, each once; ``Action=GetCallerIdentity``; ``x-k8s-aws-id`` among the
signed headers; ``X-Amz-Expires`` within 0..900; ``X-Amz-Date`` present and no older than the token
lifetime (15 minutes, whatever ``X-Amz-Expires`` says). Then the authenticator sends the presigned
request to STS with ``x-k8s-aws-id: <this cluster>``, and STS checks the signature, so a token signed
for another cluster fails there. moto's STS neither checks signatures nor routes an unsigned GET to
STS, so the sandbox plays that part of STS itself: it recomputes the SigV4 signature with the secret
of the access key (moto accepts any key; the sandbox knows the secrets it hands out), then asks moto's
STS for the identity of that key, which becomes the request's user.

Any failure answers 401 with the API server's ``Unauthorized`` Status. As the API server caches a
token webhook's answer (``--authentication-token-webhook-cache-ttl``, 2 minutes), an accepted token is
remembered, here never past its own expiry.

``register_eks_cluster`` creates the cluster in moto's EKS, with the sandbox API server's URL as its
endpoint and the sandbox's CA as its certificate authority, so DescribeCluster leads clients there.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import hmac
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .auth import TokenRejected, bearer_token
from .aws import FAKE_ACCOUNT_ID, FAKE_CREDENTIALS, aws_client

log = logging.getLogger("sandbox.eks")

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
MAX_TOKEN_LENGTH = 8192  # aws-iam-authenticator's maxTokenLenBytes (1024 * 4, base64) rounded up
TOKEN_LIFETIME_SECONDS = 900.0  # presignedURLExpiration: 15 minutes after X-Amz-Date
WEBHOOK_CACHE_SECONDS = 120.0  # the API server's default token webhook cache TTL
# aws-iam-authenticator's parameterWhitelist (lower case).
ALLOWED_PARAMETERS = frozenset(
    {
        "action",
        "version",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-signedheaders",
    }
)
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass
class EksAuthenticator:
    """The token check of one EKS cluster: its name, its region's STS (moto) and what STS knows."""

    cluster_name: str
    region: str
    sts_url: str
    token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS
    credentials: Mapping[str, str] = field(default_factory=lambda: {FAKE_CREDENTIALS["aws_access_key_id"]: FAKE_CREDENTIALS["aws_secret_access_key"]})
    accepted: dict[str, str] = field(default_factory=dict)  # token -> identity, every token ever accepted
    rejections: list[str] = field(default_factory=list)  # why each refused request was refused
    clock: Callable[[], float] = time.time  # wall time, as X-Amz-Date is; tests move it
    _cache: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)  # token -> (identity, good until)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authenticate(self, authorization: str | None) -> str:
        """The identity (an ARN) behind an ``Authorization`` header; ``TokenRejected`` otherwise."""
        try:
            token = bearer_token(authorization)
            now = self.clock()
            with self._lock:
                cached = self._cache.get(token)
            if cached and now < cached[1]:
                return cached[0]
            identity, expires_at = self._verify(token, now)
            with self._lock:
                self._cache[token] = (identity, min(expires_at, now + WEBHOOK_CACHE_SECONDS))
                self.accepted[token] = identity
            return identity
        except TokenRejected as exc:
            with self._lock:
                self.rejections.append(str(exc))
            log.info("cluster %s refused a token: %s", self.cluster_name, exc)
            raise

    def _verify(self, token: str, now: float) -> tuple[str, float]:
        if not token.startswith(TOKEN_PREFIX):
            raise TokenRejected("token is missing expected \"k8s-aws-v1.\" prefix")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("token is too large")
        try:
            encoded = token[len(TOKEN_PREFIX):]
            url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise TokenRejected(f"illegal base64 data: {exc}") from exc
        parsed = urllib.parse.urlsplit(url)
        trusted = urllib.parse.urlsplit(self.sts_url)
        if parsed.scheme not in ("http", "https") or parsed.scheme != trusted.scheme:
            raise TokenRejected(f"unexpected scheme {parsed.scheme!r} in pre-signed URL")
        if parsed.netloc != trusted.netloc:
            raise TokenRejected(f"unexpected hostname {parsed.hostname!r} in pre-signed URL")
        if parsed.path != "/":
            raise TokenRejected("unexpected path in pre-signed URL")
        params: dict[str, str] = {}
        original_names: dict[str, str] = {}
        for key, values in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items():
            if key.lower() not in ALLOWED_PARAMETERS:
                raise TokenRejected(f"non-whitelisted query parameter {key!r}")
            if len(values) != 1:
                raise TokenRejected("query parameter with multiple values not supported")
            params[key.lower()] = values[0]
            original_names[key.lower()] = key
        if params.get("action") != "GetCallerIdentity":
            raise TokenRejected("unexpected action parameter in pre-signed URL")
        signed_headers = [h.lower() for h in params.get("x-amz-signedheaders", "").split(";")]
        if CLUSTER_ID_HEADER not in signed_headers:
            raise TokenRejected(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
        try:
            expires = int(params.get("x-amz-expires", ""))
        except ValueError:
            expires = -1
        if not 0 <= expires <= 900:
            raise TokenRejected(f"invalid X-Amz-Expires parameter in pre-signed URL: {params.get('x-amz-expires')!r}")
        date = params.get("x-amz-date", "")
        if not date:
            raise TokenRejected("X-Amz-Date parameter must be present in pre-signed URL")
        try:
            signed_at = calendar.timegm(time.strptime(date, DATE_FORMAT))
        except ValueError as exc:
            raise TokenRejected(f"error parsing X-Amz-Date parameter {date}") from exc
        expires_at = signed_at + self.token_lifetime_seconds
        if now > expires_at:
            raise TokenRejected(f"X-Amz-Date parameter is expired ({self.token_lifetime_seconds / 60:.0f} minute expiration) {date}")
        access_key = params.get("x-amz-credential", "").split("/")[0]
        self._check_signature(url, params, original_names, access_key, signed_headers)
        return self._caller_identity(access_key), expires_at

    def _check_signature(self, url: str, params: dict[str, str], names: dict[str, str], access_key: str, signed_headers: list[str]) -> None:
        """What STS does with the presigned request the authenticator sends it, x-k8s-aws-id included."""
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        secret = self.credentials.get(access_key)
        if secret is None:
            raise TokenRejected(f"error from AWS (expected 200, got 403): InvalidClientTokenId for access key {access_key!r}")
        scope = params.get("x-amz-credential", "").split("/")
        if len(scope) != 5 or scope[3] != "sts" or scope[4] != "aws4_request":
            raise TokenRejected("error from AWS (expected 200, got 403): malformed credential scope")
        parsed = urllib.parse.urlsplit(url)
        unsigned_query = "&".join(pair for pair in parsed.query.split("&") if pair.partition("=")[0].lower() != "x-amz-signature")
        request = AWSRequest(method="GET", url=urllib.parse.urlunsplit(parsed._replace(query=unsigned_query)))
        headers = {"host": parsed.netloc, CLUSTER_ID_HEADER: self.cluster_name}
        for name in signed_headers:
            if name not in headers:
                raise TokenRejected(f"error from AWS (expected 200, got 403): signed header {name!r} not sent")
            request.headers[name] = headers[name]
        request.context["timestamp"] = params["x-amz-date"]
        signer = SigV4QueryAuth(Credentials(access_key, secret, params.get("x-amz-security-token")), "sts", scope[2])
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, params.get("x-amz-signature", "")):
            raise TokenRejected("error from AWS (expected 200, got 403): SignatureDoesNotMatch")

    def _caller_identity(self, access_key: str) -> str:
        """moto's STS answer for the key: the identity the API server sees."""
        import boto3

        sts = boto3.client(
            "sts", endpoint_url=self.sts_url, region_name=self.region, aws_access_key_id=access_key, aws_secret_access_key=self.credentials[access_key]
        )
        try:
            return str(sts.get_caller_identity()["Arn"])
        except Exception as exc:  # noqa: BLE001 - whatever STS says, the token does not authenticate
            raise TokenRejected(f"error from AWS: {exc}") from exc


def register_eks_cluster(moto_url: str, region: str, name: str, endpoint: str, ca_data: str, subnet_ids: list[str] | None = None) -> dict[str, Any]:
    """Create the EKS cluster in moto, pointing at the sandbox API server; DescribeCluster's answer.

    EKS has no API to set a cluster's endpoint or CA, and moto makes up both; the moto server runs in
    this process, so its backend is set directly (as sandbox.aws backdates launch times).
    """
    from moto.eks.models import eks_backends

    eks = aws_client("eks", moto_url, region)
    eks.create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{FAKE_ACCOUNT_ID}:role/{name}-eks-cluster",
        resourcesVpcConfig={"subnetIds": list(subnet_ids or [])},
    )
    model = eks_backends[FAKE_ACCOUNT_ID][region].clusters[name]
    model.endpoint = endpoint
    model.certificate_authority = {"data": ca_data}
    return eks.describe_cluster(name=name)["cluster"]
