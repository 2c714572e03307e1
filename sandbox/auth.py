"""Bearer-token authentication for a sandbox cluster that asks for it (``SandboxCluster.authenticator``).

An authenticator has one method, ``authenticate(authorization_header) -> identity``, raising
``TokenRejected`` for anything it does not accept; the server then answers 401 ``Unauthorized``, as
the API server does, and never says why (the authenticator keeps the reasons for tests). Clusters
without an authenticator accept every request, as the sandbox always has.

- ``StaticTokenAuthenticator``: fixed tokens, as kube-apiserver's ``--token-auth-file``; stands in for
  service account tokens (an in-cluster client) and kubeconfig tokens.
- ``sandbox.eks.EksAuthenticator``: EKS tokens, as aws-iam-authenticator checks them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


class TokenRejected(Exception):
    """Why a bearer token does not authenticate (logged; the client only ever sees 401)."""


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("no bearer token")
    return token.strip()


@dataclass
class StaticTokenAuthenticator:
    tokens: dict[str, str]  # token -> user name
    accepted: dict[str, str] = field(default_factory=dict)
    rejections: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authenticate(self, authorization: str | None) -> str:
        try:
            token = bearer_token(authorization)
            if token not in self.tokens:
                raise TokenRejected("unknown token")
        except TokenRejected as exc:
            with self._lock:
                self.rejections.append(str(exc))
            raise
        with self._lock:
            self.accepted[token] = self.tokens[token]
        return self.tokens[token]
