"""The fault matrix never loops: a cell past its wall-clock bound is killed and reported as a
timeout, which fails the matrix. (Its reduced run and the judge's self-check are in
test_benchmarks_run.py; the full matrix is `make fault-matrix`.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import fault_matrix  # noqa: E402


def test_a_cell_past_its_bound_is_a_timeout_and_fails_the_matrix() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    args = ["--dag", "rollout_restart", "--fault", "none", "--bound", "3"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fault_matrix.py"), *args], capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "| rollout_restart | none  | -    | timeout |" in proc.stdout, proc.stdout[-2000:]
    assert "0 converged, 0 failed safely, 0 unsafe, 1 timeout, 0 error" in proc.stdout


@pytest.mark.parametrize(
    "reduced,dags,faults,expected",
    [
        (False, None, None, 43),
        (True, None, None, 4),
        (False, ["cronjob_refresh"], None, 11),
        # Faults of node replacement's only (AWS, evictions, kubelets) are not run for the others.
        (False, ["rollout_restart"], ["aws-500", "kubelet-dies", "api-429"], 3),
        (False, None, ["eviction-blocked"], 1),
    ],
)
def test_the_cells_chosen(reduced: bool, dags: list[str] | None, faults: list[str] | None, expected: int) -> None:
    cells = fault_matrix.all_cells(reduced, dags, faults)
    assert len(cells) == expected, [c.key for c in cells]
    assert all((not dags or c.dag in dags) and (not faults or c.fault in faults) for c in cells)


@pytest.mark.parametrize(
    "violation,allowed",
    [
        # The drain of the node being replaced evicts CoreDNS there, as `kubectl drain` does.
        ({"kind": "protected-namespace", "detail": "create pods/eviction kube-system/coredns-1 on node victim by kube-maintenance/1.0", "node": "victim"}, True),
        # The same eviction from a node the run does not replace; any other protected write; any PDB breach.
        ({"kind": "protected-namespace", "detail": "create pods/eviction kube-system/coredns-2 on node other by kube-maintenance/1.0", "node": "other"}, False),
        ({"kind": "protected-namespace", "detail": "delete pods kube-system/coredns-1 by kube-maintenance/1.0", "node": ""}, False),
        ({"kind": "protected-namespace", "detail": "patch deployments kube-system/coredns by kube-maintenance/1.0", "node": ""}, False),
        ({"kind": "pdb", "detail": "kube-system/coredns: 0 healthy < 1 required", "node": ""}, False),
    ],
)
def test_node_replacement_is_allowed_only_the_evictions_its_drain_makes_in_protected_namespaces(violation: dict[str, str], allowed: bool) -> None:
    scenario = fault_matrix.NodeReplacement.__new__(fault_matrix.NodeReplacement)
    scenario.victim_node = "victim"
    assert scenario.allows(violation) is allowed
    assert fault_matrix.RolloutRestart.allows(scenario, violation) is False, "the other operations are allowed none"
