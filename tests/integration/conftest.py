"""Fixtures for whole DAG runs against sandbox clusters."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from harness import DagRunner, fast_world_config

from sandbox.scenario import World, start_world


@pytest.fixture(scope="session")
def airflow_db() -> None:
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = start_world(tmp_path / "sandbox", ("staging", "production"), fast_world_config())
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def dag_runner(airflow_db: None, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> DagRunner:
    return DagRunner(world, tmp_path, monkeypatch, capfd)
