"""Timings and behaviour knobs of one sandbox cluster."""
from __future__ import annotations

from dataclasses import dataclass, field

# Annotations on pod templates that steer simulated containers (sandbox-only, never on a real cluster).
SIM_PREFIX = "sandbox.kube-maintenance.dev/"
RUN_SECONDS_ANNOTATION = SIM_PREFIX + "run-seconds"  # how long a Job pod runs; "forever" never ends
EXIT_CODE_ANNOTATION = SIM_PREFIX + "exit-code"  # non-zero makes a Job pod fail
NEVER_READY_ANNOTATION = SIM_PREFIX + "never-ready"  # "true": containers run but never pass readiness


@dataclass
class SandboxConfig:
    """Delays are seconds of wall time; the defaults keep whole DAG runs to seconds."""

    pod_start_seconds: float = 0.3  # scheduled -> Running and Ready
    pod_termination_seconds: float = 0.2  # longest a graceful termination really takes
    job_run_seconds: float = 1.0  # how long a Job pod runs unless annotated
    node_boot_seconds: float = 1.0  # instance running -> Node Ready
    node_notready_seconds: float = 0.3  # instance terminated -> Node NotReady
    node_delete_seconds: float = 1.0  # NotReady (instance gone) -> Node deleted with its pods
    asg_poll_seconds: float = 0.3  # how often the cloud bridge looks at EC2 / Auto Scaling
    cronjob_poll_seconds: float = 1.0
    server_version: tuple[int, int] = (1, 31)
    protected_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    max_pods_per_node: int = 110
    # Invariant monitoring costs a recount per pod change; the scale benchmark turns it off.
    monitor: bool = True
    extra: dict[str, object] = field(default_factory=dict)
