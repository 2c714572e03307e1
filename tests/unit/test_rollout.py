"""Rollout restart decisions: parameters, namespaces, kubectl's rollout status judgement, shards."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kube_maintenance.core.selectors import selector_string
from kube_maintenance.rollout_restart import decisions as rules
from kube_maintenance.rollout_restart.decisions import (
    DAEMONSET,
    DEPLOYMENT,
    KINDS,
    RESTARTED_AT_ANNOTATION,
    STATEFULSET,
    ParamError,
    RolloutRestartParams,
    Verdict,
    judge,
    rollout_status,
)

NOW = dt.datetime(2026, 11, 21, 12, 0, 30, tzinfo=dt.timezone.utc)
SINCE = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)
PROTECTED = ("kube-system", "kube-public", "kube-node-lease", "monitoring")


def params(**kw: Any) -> RolloutRestartParams:
    return RolloutRestartParams.from_mapping(kw, PROTECTED)


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------ objects
def deployment(name: str = "web", replicas: int | None = 3, generation: int = 2, observed: int = 2, *, updated: int = 3, total: int = 3, available: int = 3,
               progressing_reason: str | None = "NewReplicaSetAvailable", paused: bool = False, restarted_at: str | None = None) -> dict:
    spec: dict = {"template": {"metadata": {"annotations": {}}}}
    if replicas is not None:
        spec["replicas"] = replicas
    if paused:
        spec["paused"] = True
    if restarted_at:
        spec["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION] = restarted_at
    status: dict = {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated, "availableReplicas": available}
    if progressing_reason:
        status["conditions"] = [{"type": "Progressing", "status": "False" if progressing_reason == "ProgressDeadlineExceeded" else "True", "reason": progressing_reason}]
    return {"metadata": {"name": name, "namespace": "shop", "generation": generation, "uid": "u-" + name}, "spec": spec, "status": status}


def daemonset(name: str = "agent", generation: int = 2, observed: int = 2, *, desired: int = 5, updated: int = 5, available: int = 5, strategy: str = "RollingUpdate", restarted_at: str | None = None) -> dict:
    annotations = {RESTARTED_AT_ANNOTATION: restarted_at} if restarted_at else {}
    return {
        "metadata": {"name": name, "namespace": "observability", "generation": generation, "uid": "u-" + name},
        "spec": {"updateStrategy": {"type": strategy}, "template": {"metadata": {"annotations": annotations}}},
        "status": {"observedGeneration": observed, "desiredNumberScheduled": desired, "updatedNumberScheduled": updated, "numberAvailable": available},
    }


def statefulset(name: str = "db", replicas: int | None = 3, generation: int = 2, observed: int = 2, *, ready: int = 3, updated: int = 3, current: int = 3,
                rolling_update: dict | None | str = "absent", strategy: str = "RollingUpdate", update_rev: str = "db-2", current_rev: str = "db-2", restarted_at: str | None = None) -> dict:
    update_strategy: dict = {"type": strategy}
    if rolling_update != "absent":
        update_strategy["rollingUpdate"] = rolling_update
    spec: dict = {"updateStrategy": update_strategy, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"annotations": {}}}}
    if replicas is not None:
        spec["replicas"] = replicas
    if restarted_at:
        spec["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION] = restarted_at
    status = {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated, "currentReplicas": current, "updateRevision": update_rev, "currentRevision": current_rev}
    return {"metadata": {"name": name, "namespace": "payments", "generation": generation, "uid": "u-" + name}, "spec": spec, "status": status}


# ---------------------------------------------------------------------------------------- parameters
def test_defaults_with_a_namespace_selector_are_valid() -> None:
    p = params(namespace_selector="app.kubernetes.io/managed-by=Helm")
    assert p.kinds == KINDS and p.dry_run is True and p.max_concurrent_rollouts == 5


def test_every_problem_is_reported_at_once_naming_the_field() -> None:
    with pytest.raises(ParamError) as err:
        params(namespace_selector="team in (a", kinds=["Deployment", "CronJob"], max_concurrent_rollouts=0, rollout_timeout_seconds="soon", workload_selector="tier in web", dry_run="yes")
    text = str(err.value)
    for field in ("namespace_selector: invalid label selector", "kinds: unknown 'CronJob'", "max_concurrent_rollouts: must be between 1 and 100", "rollout_timeout_seconds: expected a whole number", "workload_selector:", "dry_run: expected true or false"):
        assert field in text, field


def test_namespaces_must_be_chosen_for_a_real_run_a_dry_run_shows_them_all() -> None:
    with pytest.raises(ParamError, match="choose the namespaces to restart"):
        params(dry_run=False)
    shown = rules.select_namespaces([{"metadata": {"name": n}} for n in ("shop", "kube-system", "search")], params(dry_run=True), ["kube-system"])
    assert shown.namespaces == ("search", "shop") and shown.left_out == {"kube-system": "protected namespace"}


def test_a_protected_namespace_named_explicitly_is_refused() -> None:
    with pytest.raises(ParamError, match="namespaces: kube-system, monitoring protected on this cluster"):
        params(namespaces=["shop", "kube-system", "monitoring"])


def test_names_both_chosen_and_excluded_or_malformed_are_refused() -> None:
    with pytest.raises(ParamError) as err:
        params(namespaces=["shop", "Bad_Name"], exclude_namespaces=["shop"])
    assert "exclude_namespaces: ['shop'] are also in namespaces" in str(err.value)
    assert "namespaces: not valid namespace names: 'Bad_Name'" in str(err.value)


def test_kinds_accept_kubectl_spellings_keep_their_order_and_refuse_an_empty_list() -> None:
    assert params(namespaces=["shop"], kinds=["sts", "deployments", "DaemonSet", "deploy"]).kinds == (STATEFULSET, DEPLOYMENT, DAEMONSET)
    assert params(namespaces=["shop"], kinds="statefulset, ds").kinds == (STATEFULSET, DAEMONSET)
    with pytest.raises(ParamError, match="kinds: choose at least one"):
        params(namespaces=["shop"], kinds=[])


# ---------------------------------------------------------------------------------------- namespaces
def ns(name: str, labels: dict | None = None, phase: str = "Active") -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "status": {"phase": phase}}


NAMESPACES = [
    ns("shop", {"app.kubernetes.io/managed-by": "Helm"}),
    ns("payments", {"app.kubernetes.io/managed-by": "Helm"}),
    ns("kube-system", {"app.kubernetes.io/managed-by": "Helm"}),
    ns("monitoring", {"app.kubernetes.io/managed-by": "Helm"}),
    ns("leaving", {"app.kubernetes.io/managed-by": "Helm"}, phase="Terminating"),
    ns("scratch"),
    ns("batch"),
]


def test_selector_and_names_add_up_and_protected_excluded_terminating_are_left_out() -> None:
    selection = rules.select_namespaces(NAMESPACES, params(namespace_selector="app.kubernetes.io/managed-by=Helm", namespaces=["batch"], exclude_namespaces=["payments"]), PROTECTED)
    assert selection.namespaces == ("batch", "shop")
    assert selection.left_out == {"kube-system": "protected namespace", "monitoring": "protected namespace", "payments": "excluded by the exclude_namespaces parameter", "leaving": "terminating"}


def test_a_named_namespace_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(ParamError, match="namespaces: no such namespace\\(s\\) in the cluster: shpo"):
        rules.select_namespaces(NAMESPACES, params(namespaces=["shop", "shpo"]), PROTECTED)


# ------------------------------------------------------------------------------------------- restart
def test_the_restart_is_kubectls_patch_with_an_rfc3339_time() -> None:
    value = rules.format_restarted_at(dt.datetime(2026, 11, 21, 13, 4, 5, 999, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert value == "2026-11-21T12:04:05Z"
    assert rules.restart_patch(value) == {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": value}}}}}
    assert rules.parse_time("2026-11-21T13:04:05+01:00") == dt.datetime(2026, 11, 21, 12, 4, 5, tzinfo=dt.timezone.utc)
    assert rules.parse_time("yesterday") is None


def test_paused_deployments_and_ondelete_workloads_are_skipped() -> None:
    assert "paused" in (rules.skip_reason(deployment(paused=True), DEPLOYMENT) or "")
    assert "OnDelete" in (rules.skip_reason(statefulset(strategy="OnDelete"), STATEFULSET) or "")
    assert "OnDelete" in (rules.skip_reason(daemonset(strategy="OnDelete"), DAEMONSET) or "")
    assert rules.skip_reason(deployment(), DEPLOYMENT) is None
    view = judge(deployment(paused=True, restarted_at=iso(NOW)), DEPLOYMENT, SINCE, NOW, 600)
    assert view.verdict is Verdict.SKIP


# ------------------------------------------------------------------------------ kubectl rollout status
@pytest.mark.parametrize(
    "obj,message,done,error",
    [
        (deployment(generation=3, observed=2), "Waiting for deployment spec update to be observed...\n", False, None),
        (deployment(progressing_reason="ProgressDeadlineExceeded", updated=1), "", False, 'deployment "web" exceeded its progress deadline'),
        (deployment(updated=1, total=4, available=3), 'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...\n', False, None),
        (deployment(updated=3, total=4, available=3), 'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...\n', False, None),
        (deployment(updated=3, total=3, available=2), 'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...\n', False, None),
        (deployment(), 'deployment "web" successfully rolled out\n', True, None),
        # No spec.replicas (never from a real API server, which defaults it): kubectl skips that check.
        (deployment(replicas=None, updated=0, total=0, available=0), 'deployment "web" successfully rolled out\n', True, None),
    ],
)
def test_deployment_status_is_kubectls(obj: dict, message: str, done: bool, error: str | None) -> None:
    assert rollout_status(obj, DEPLOYMENT) == rules.RolloutStatus(message, done, error)


@pytest.mark.parametrize(
    "obj,message,done,error",
    [
        (daemonset(strategy="OnDelete"), "", True, "rollout status is only available for RollingUpdate strategy type"),
        (daemonset(generation=3), "Waiting for daemon set spec update to be observed...\n", False, None),
        (daemonset(updated=2), 'Waiting for daemon set "agent" rollout to finish: 2 out of 5 new pods have been updated...\n', False, None),
        (daemonset(available=4), 'Waiting for daemon set "agent" rollout to finish: 4 of 5 updated pods are available...\n', False, None),
        (daemonset(), 'daemon set "agent" successfully rolled out\n', True, None),
    ],
)
def test_daemonset_status_is_kubectls(obj: dict, message: str, done: bool, error: str | None) -> None:
    assert rollout_status(obj, DAEMONSET) == rules.RolloutStatus(message, done, error)


@pytest.mark.parametrize(
    "obj,message,done,error",
    [
        (statefulset(strategy="OnDelete"), "", True, "rollout status is only available for RollingUpdate strategy type"),
        (statefulset(observed=0, generation=1), "Waiting for statefulset spec update to be observed...\n", False, None),
        (statefulset(generation=3), "Waiting for statefulset spec update to be observed...\n", False, None),
        (statefulset(ready=2, rolling_update={"partition": 0}), "Waiting for 1 pods to be ready...\n", False, None),
        (statefulset(updated=1, rolling_update={"partition": 0}), "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated...\n", False, None),
        (statefulset(updated=1, rolling_update={"partition": 2}), "partitioned roll out complete: 1 new pods have been updated...\n", True, None),
        # rollingUpdate present without a partition: kubectl calls it complete once all are Ready.
        (statefulset(updated=0, rolling_update={}), "partitioned roll out complete: 0 new pods have been updated...\n", True, None),
        (statefulset(update_rev="db-3", updated=1), "waiting for statefulset rolling update to complete 1 pods at revision db-3...\n", False, None),
        (statefulset(), "statefulset rolling update complete 3 pods at revision db-2...\n", True, None),
    ],
)
def test_statefulset_status_is_kubectls(obj: dict, message: str, done: bool, error: str | None) -> None:
    assert rollout_status(obj, STATEFULSET) == rules.RolloutStatus(message, done, error)


# ------------------------------------------------------------------------------------------- verdicts
def test_a_workload_not_restarted_since_the_run_began_is_to_restart() -> None:
    assert judge(deployment(), DEPLOYMENT, SINCE, NOW, 600).verdict is Verdict.RESTART
    earlier = judge(deployment(restarted_at=iso(SINCE - dt.timedelta(seconds=1))), DEPLOYMENT, SINCE, NOW, 600)
    assert earlier.verdict is Verdict.RESTART


def test_a_restart_in_the_runs_first_second_counts_as_this_runs() -> None:
    started = dt.datetime(2026, 11, 21, 12, 0, 0, 700000, tzinfo=dt.timezone.utc)
    since = rules.run_start_second(started)
    assert judge(deployment(restarted_at="2026-11-21T12:00:00Z"), DEPLOYMENT, since, NOW, 600).verdict is Verdict.COMPLETE


def test_restarted_since_the_run_began_is_rolling_complete_or_failed_never_restarted_again() -> None:
    at = iso(SINCE + dt.timedelta(seconds=5))
    assert judge(deployment(restarted_at=at), DEPLOYMENT, SINCE, NOW, 600).verdict is Verdict.COMPLETE
    rolling = judge(deployment(restarted_at=at, updated=1, total=4), DEPLOYMENT, SINCE, NOW, 600)
    assert rolling.verdict is Verdict.ROLLING and "1 out of 3 new replicas" in rolling.why
    failed = judge(deployment(restarted_at=at, updated=1, progressing_reason="ProgressDeadlineExceeded"), DEPLOYMENT, SINCE, NOW, 600)
    assert (failed.verdict, failed.why) == (Verdict.FAILED, 'deployment "web" exceeded its progress deadline')
    late = judge(deployment(restarted_at=at, updated=1, total=4), DEPLOYMENT, SINCE, NOW + dt.timedelta(seconds=600), 600)
    assert late.verdict is Verdict.FAILED and "did not complete within 600s of its restart at 2026-11-21T12:00:05Z" in late.why


def test_until_our_patch_is_seen_a_stale_copy_from_the_watch_counts_as_rolling() -> None:
    stale = deployment(generation=2, observed=2, restarted_at=iso(SINCE - dt.timedelta(days=3)))  # complete, before our patch (generation 3)
    view = judge(stale, DEPLOYMENT, SINCE, NOW, 600, patched_generation=3)
    assert (view.verdict, view.restarted_at) == (Verdict.ROLLING, NOW), "an old restart's time starts no deadline"
    seen = deployment(generation=3, observed=3, restarted_at=iso(NOW))
    assert judge(seen, DEPLOYMENT, SINCE, NOW, 600, patched_generation=3).verdict is Verdict.COMPLETE


# ------------------------------------------------------------------------------------------ stuck pods
def pod(name: str, owner_uid: str, created: dt.datetime, ready: bool, deleting: bool = False) -> dict:
    meta: dict = {"name": name, "creationTimestamp": iso(created), "ownerReferences": [{"kind": "StatefulSet", "uid": owner_uid, "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = iso(created)
    return {"metadata": meta, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_new_pod_not_ready_past_the_limit_makes_the_rollout_stuck() -> None:
    sts = statefulset()
    restarted = NOW - dt.timedelta(seconds=200)
    pods = [
        pod("db-2", "u-db", NOW - dt.timedelta(seconds=150), ready=False),  # new, stuck
        pod("db-1", "u-db", NOW - dt.timedelta(seconds=30), ready=False),  # new, still young
        pod("db-0", "u-db", NOW - dt.timedelta(days=3), ready=False),  # old (before the restart)
        pod("other-0", "u-other", NOW - dt.timedelta(seconds=150), ready=False),  # someone else's
        pod("db-3", "u-db", NOW - dt.timedelta(seconds=150), ready=False, deleting=True),
        pod("db-4", "u-db", NOW - dt.timedelta(seconds=150), ready=True),
    ]
    assert rules.stuck_pods(sts, pods, restarted, NOW, 120) == ["db-2 (Running, not Ready 150s after it was created)"]
    assert rules.stuck_pods(sts, pods, restarted, NOW, 300) == []


def test_selector_string_covers_match_labels_and_expressions() -> None:
    selector = {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "team", "operator": "Exists"},
        {"key": "canary", "operator": "DoesNotExist"},
    ]}
    assert selector_string(selector) == "a=1,b=2,tier in (api,web),env notin (dev),team,!canary"


# ---------------------------------------------------------------------------------------------- shards
def test_shards_are_bounded_balanced_and_share_the_cluster_budget() -> None:
    pending = {f"ns-{i:02d}": 10 + i for i in range(50)}
    shards = rules.shard_namespaces(pending, max_shards=8, max_concurrent=20)
    assert len(shards) == 8
    assert sum(s.max_in_flight for s in shards) == 20 and min(s.max_in_flight for s in shards) >= 2
    assert sorted(ns for s in shards for ns in s.namespaces) == sorted(pending)
    loads = [sum(pending[ns] for ns in s.namespaces) for s in shards]
    assert max(loads) - min(loads) <= max(pending.values())
    assert all(list(s.namespaces) == sorted(s.namespaces) for s in shards)


def test_never_more_shards_than_rollouts_allowed_or_namespaces_with_work() -> None:
    pending = {"a": 3, "b": 1, "c": 0}
    assert [(s.namespaces, s.max_in_flight) for s in rules.shard_namespaces(pending, max_shards=8, max_concurrent=1)] == [(("a", "b"), 1)]
    assert [(s.namespaces, s.max_in_flight) for s in rules.shard_namespaces(pending, max_shards=8, max_concurrent=5)] == [(("a",), 3), (("b",), 2)]
    assert rules.shard_namespaces({"c": 0}, 8, 5) == []
    shard = rules.shard_namespaces(pending, 8, 5)[0]
    assert rules.Shard.from_xcom(shard.to_xcom()) == shard


def test_summary_reports_each_workload_once() -> None:
    views = [
        rules.WorkloadView(DEPLOYMENT, "shop", "web", Verdict.COMPLETE, "done"),
        rules.WorkloadView(DEPLOYMENT, "shop", "admin", Verdict.SKIP, "paused"),
        rules.WorkloadView(DEPLOYMENT, "shop", "cart", Verdict.ROLLING, "1 of 2"),
        rules.WorkloadView(DEPLOYMENT, "shop", "late", Verdict.RESTART, "not restarted since the run began"),
        rules.WorkloadView(STATEFULSET, "payments", "db", Verdict.COMPLETE, "done"),
    ]
    summary = rules.summarise(views, {"statefulset/payments/db": "stuck pod db-2"})
    assert summary == {
        "restarted": ["deployment/shop/web"],
        "skipped": {"deployment/shop/admin": "paused"},
        "failed": {"statefulset/payments/db": "stuck pod db-2"},
        "not_completed": {"deployment/shop/cart": "1 of 2", "deployment/shop/late": "not restarted"},
    }


# ------------------------------------------------------------------------ the sliding window of restarts
class FakeKube:
    """Answers patches as the API server does (generation + 1, the annotation set); records them."""

    def __init__(self, objects: dict) -> None:
        self.objects = objects
        self.patches: list[str] = []  # restarts (strategic merge patches of the template)
        self.marks: list[str] = []  # rolled-out marks (merge patches of the metadata: no new generation)

    def patch(self, ref: Any, name: str, patch: dict, namespace: str, content_type: str = "application/merge-patch+json") -> dict:
        obj = self.objects[(namespace, name)]
        if content_type == "application/merge-patch+json":
            assert set(patch) == {"metadata"}
            self.marks.append(name)
            annotations = {**(obj["metadata"].get("annotations") or {}), **patch["metadata"]["annotations"]}
            self.objects[(namespace, name)] = {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}
            return self.objects[(namespace, name)]
        assert content_type == "application/strategic-merge-patch+json"
        self.patches.append(name)
        return {"metadata": {**obj["metadata"], "generation": obj["metadata"]["generation"] + 1}, "spec": obj["spec"]}


def rolled_out_after_restart(obj: dict) -> dict:
    gen = obj["metadata"]["generation"] + 1
    return deployment(obj["metadata"]["name"], generation=gen, observed=gen, restarted_at=iso(NOW))


def test_the_window_keeps_at_most_the_budget_rolling_and_patches_each_workload_once() -> None:
    from kube_maintenance.core.audit import AuditTrail
    from kube_maintenance.rollout_restart.tasks import KindRollout, ShardResult

    objects = {("shop", n): deployment(n) for n in ("a", "b", "c")}
    kube = FakeKube(objects)
    result = ShardResult()
    window = KindRollout(kube, AuditTrail("test"), params(namespaces=["shop"]), SINCE, "shop", DEPLOYMENT, 2, result)  # type: ignore[arg-type]
    assert window.step(objects) is False and kube.patches == ["a", "b"]
    assert window.step(objects) is False and kube.patches == ["a", "b"], "stale copies from the watch are not restarted again"
    objects[("shop", "a")] = rolled_out_after_restart(objects[("shop", "a")])
    assert window.step(objects) is False and kube.patches == ["a", "b", "c"]
    objects[("shop", "b")] = rolled_out_after_restart(objects[("shop", "b")])
    objects[("shop", "c")] = rolled_out_after_restart(objects[("shop", "c")])
    assert window.fail(objects) is None and window.step(objects) is True
    assert result.restarted == ["deployment/shop/a", "deployment/shop/b", "deployment/shop/c"]
    assert kube.marks == ["a", "b", "c"], "each completed rollout is marked once"


def test_a_rollout_seen_complete_is_not_failed_by_a_later_dip() -> None:
    from kube_maintenance.core.audit import AuditTrail
    from kube_maintenance.rollout_restart.tasks import KindRollout, ShardResult

    objects = {("shop", "web"): deployment("web")}
    kube = FakeKube(objects)
    result = ShardResult()
    window = KindRollout(kube, AuditTrail("test"), params(namespaces=["shop"], rollout_timeout_seconds=10), SINCE, "shop", DEPLOYMENT, 1, result)  # type: ignore[arg-type]
    assert window.step(objects) is False and kube.patches == ["web"]
    objects[("shop", "web")] = rolled_out_after_restart(objects[("shop", "web")])
    assert window.step(kube.objects) is True and kube.marks == ["web"]
    marked = kube.objects[("shop", "web")]
    # Long after the restart, an HPA scale-up leaves a new replica unavailable for a while.
    dipped = {**marked, "status": {**marked["status"], "availableReplicas": marked["status"]["updatedReplicas"] - 1}}
    later = NOW + dt.timedelta(minutes=15)
    assert rules.judge(dipped, DEPLOYMENT, SINCE, later, 10).verdict is Verdict.COMPLETE
    unmarked = {**dipped, "metadata": {**dipped["metadata"], "annotations": {}}}
    assert rules.judge(unmarked, DEPLOYMENT, SINCE, later, 10).verdict is Verdict.FAILED, "without the mark the dip would fail the run"


def test_the_window_names_a_failed_rollout_and_starts_nothing_once_the_window_closes() -> None:
    from kube_maintenance.core.audit import AuditTrail
    from kube_maintenance.rollout_restart.tasks import KindRollout, ShardResult

    objects = {("shop", "web"): deployment("web", updated=1, progressing_reason="ProgressDeadlineExceeded", restarted_at=iso(NOW)), ("shop", "api"): deployment("api")}
    result = ShardResult()
    window = KindRollout(FakeKube(objects), AuditTrail("test"), params(namespaces=["shop"]), SINCE, "shop", DEPLOYMENT, 5, result, may_start=lambda: "the window closed")  # type: ignore[arg-type]
    assert window.fail(objects) == 'deployment/shop/web: deployment "web" exceeded its progress deadline'
    objects[("shop", "web")] = deployment("web", restarted_at=iso(NOW))
    assert window.step(objects) is True and result.restarted == [] and result.stopped == "the window closed"


# ------------------------------------------------------------------------------ restarts that change nothing
def test_restarts_that_would_change_nothing_are_skipped_with_their_reason() -> None:
    def verdict(obj: dict, kind: str) -> tuple[Verdict, str]:
        view = rules.judge(obj, kind, SINCE, NOW, 900)
        return view.verdict, view.why

    assert verdict(deployment(replicas=0), DEPLOYMENT) == (Verdict.SKIP, "scaled to zero: no pod to restart")
    assert verdict(statefulset(replicas=0), STATEFULSET)[0] is Verdict.SKIP
    assert verdict(statefulset(replicas=3, rolling_update={"partition": 3}), STATEFULSET) == (Verdict.SKIP, "rollingUpdate partition 3 >= replicas 3: a restart would update no pod")
    assert verdict(statefulset(replicas=3, rolling_update={"partition": 1}), STATEFULSET)[0] is Verdict.RESTART
    assert rules.partial_restart_warning(statefulset(rolling_update={"partition": 1}), STATEFULSET) == "rollingUpdate partition 1: ordinals below 1 keep their current pods"
    assert rules.partial_restart_warning(statefulset(rolling_update={"partition": 0}), STATEFULSET) is None
    assert verdict(daemonset(desired=0, updated=0, available=0), DAEMONSET) == (Verdict.SKIP, "no node runs it (desiredNumberScheduled 0): no pod to restart")
    assert verdict(deployment(), DEPLOYMENT)[0] is Verdict.RESTART


def test_an_opted_out_workload_or_namespace_is_left_out_with_its_reason() -> None:
    web = deployment()
    web["metadata"]["annotations"] = {"kube-maintenance.io/skip": "true", "kube-maintenance.io/skip-reason": "leader election breaks on restart"}
    view = rules.judge(web, DEPLOYMENT, SINCE, NOW, 900)
    assert view.verdict is Verdict.SKIP and view.why == "opted out (kube-maintenance.io/skip=true on the deployment): leader election breaks on restart"
    web["metadata"]["annotations"]["kube-maintenance.io/skip"] = "yes please"
    assert rules.judge(web, DEPLOYMENT, SINCE, NOW, 900).verdict is Verdict.RESTART, "only \"true\" opts out"
    namespaces = [{"metadata": {"name": "shop", "annotations": {"kube-maintenance.io/skip": "true"}}}, {"metadata": {"name": "blog"}}]
    selection = rules.select_namespaces(namespaces, params(namespaces=["shop", "blog"]), ())
    assert selection.namespaces == ("blog",) and selection.left_out == {"shop": "opted out (kube-maintenance.io/skip=true on the namespace)"}


# ------------------------------------------------------------------------------ restarts across runs
def test_a_restart_or_a_deploy_within_the_window_before_the_run_counts_as_done() -> None:
    recent = SINCE - dt.timedelta(minutes=60)
    twenty_minutes_ago = deployment(restarted_at=iso(SINCE - dt.timedelta(minutes=20)))
    assert rules.judge(twenty_minutes_ago, DEPLOYMENT, SINCE, NOW, 900, recent_since=recent).verdict is Verdict.SKIP
    assert rules.judge(twenty_minutes_ago, DEPLOYMENT, SINCE, NOW, 900).verdict is Verdict.RESTART, "without the option it is restarted"
    two_hours_ago = deployment(restarted_at=iso(SINCE - dt.timedelta(hours=2)))
    assert rules.judge(two_hours_ago, DEPLOYMENT, SINCE, NOW, 900, recent_since=recent).verdict is Verdict.RESTART
    deployed = rules.judge(two_hours_ago, DEPLOYMENT, SINCE, NOW, 900, recent_since=recent, pods_replaced_at=SINCE - dt.timedelta(minutes=5))
    assert deployed.verdict is Verdict.SKIP and "every pod created since" in deployed.why


def test_the_oldest_pod_of_a_workload_is_found_by_its_selector() -> None:
    db = statefulset()

    def pod(name: str, app: str, created: dt.datetime, deleting: bool = False) -> dict:
        meta = {"name": name, "labels": {"app": app}, "creationTimestamp": iso(created)}
        if deleting:
            meta["deletionTimestamp"] = iso(NOW)
        return {"metadata": meta}

    pods = [pod("db-0", "db", SINCE - dt.timedelta(minutes=3)), pod("db-1", "db", SINCE - dt.timedelta(minutes=9), deleting=True), pod("web-1", "web", SINCE - dt.timedelta(days=3))]
    assert rules.oldest_pod_created(db, pods) == SINCE - dt.timedelta(minutes=3)
    assert rules.oldest_pod_created(db, pods[2:]) is None


def test_namespaces_restarted_longest_ago_go_first_so_every_namespace_is_reached() -> None:
    pending = {"alpha": 1, "beta": 1, "gamma": 1}
    last = {"alpha": SINCE - dt.timedelta(days=1), "beta": None, "gamma": SINCE - dt.timedelta(days=7)}
    [shard] = rules.shard_namespaces(pending, max_shards=1, max_concurrent=5, last_restarted=last)
    assert shard.namespaces == ("beta", "gamma", "alpha")
    found = [(DEPLOYMENT, deployment("a", restarted_at=iso(SINCE))), (DEPLOYMENT, deployment("b", restarted_at=iso(NOW))), (DAEMONSET, daemonset())]
    assert rules.last_restarted_by_namespace(found) == {"shop": NOW.replace(microsecond=0), "observability": None}
