"""Shared fixtures for the sandbox's own tests."""
from __future__ import annotations

from typing import Iterator

import pytest

from sandbox.aws import MotoServer
from sandbox.cluster import SandboxCluster
from sandbox.testing import fast_config


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One in-process moto server per test module (EC2, Auto Scaling, STS, EKS)."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bare_cluster() -> Iterator[SandboxCluster]:
    """A cluster with fast delays, its namespaces bootstrapped and controllers running; no HTTP server."""
    cluster = SandboxCluster("test", fast_config())
    cluster.bootstrap()
    cluster.manager.start()
    try:
        yield cluster
    finally:
        cluster.manager.stop()
