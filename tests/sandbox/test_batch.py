"""Jobs and CronJobs in the sandbox behave as the real job and cronjob controllers do."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest

from sandbox import errors, podutil
from sandbox.cluster import SandboxCluster
from sandbox.config import EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION
from sandbox.controllers.batch import (
    CONTROLLER_UID_LABEL,
    CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION,
    JOB_NAME_LABEL,
    JOB_TRACKING_FINALIZER,
    CronError,
    CronSchedule,
    rfc3339,
)
from sandbox.resources import CRONJOBS, EVENTS, JOBS, PODS
from sandbox.testing import add_ready_node

pytestmark = pytest.mark.timeout(60)

NS = "default"


def pod_template(restart_policy: str = "Never", annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if annotations:
        metadata["annotations"] = annotations
    if labels:
        metadata["labels"] = labels
    return {
        "metadata": metadata,
        "spec": {"restartPolicy": restart_policy, "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]},
    }


def create_job(cluster: SandboxCluster, name: str, **spec: Any) -> dict[str, Any]:
    template = spec.pop("template", None) or pod_template()
    return cluster.store.create(JOBS, {"metadata": {"name": name, "namespace": NS}, "spec": {"template": template, **spec}})


def job(cluster: SandboxCluster, name: str) -> dict[str, Any]:
    return cluster.store.get(JOBS, NS, name)


def job_status(cluster: SandboxCluster, name: str) -> dict[str, Any]:
    return job(cluster, name).get("status") or {}


def condition_types(obj: dict[str, Any]) -> list[str]:
    return [c["type"] for c in (obj.get("status") or {}).get("conditions") or () if c.get("status") == "True"]


def has_condition(cluster: SandboxCluster, name: str, cond_type: str) -> bool:
    found = cluster.store.try_get(JOBS, NS, name)
    return found is not None and cond_type in condition_types(found)


def pods_of(cluster: SandboxCluster, owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [p for p in cluster.store.iter(PODS, NS) if (podutil.controller_ref(p) or {}).get("uid") == uid]


def events_for(cluster: SandboxCluster, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.store.iter(EVENTS, NS) if e["involvedObject"]["name"] == name and e["reason"] == reason]


@pytest.fixture
def cluster(bare_cluster: SandboxCluster) -> Iterator[SandboxCluster]:
    add_ready_node(bare_cluster, "node-1")
    yield bare_cluster
    assert not bare_cluster.manager.errors, bare_cluster.manager.errors[0]


# ============================================================================================ Jobs
def test_job_runs_pods_to_completion_within_parallelism(cluster: SandboxCluster) -> None:
    most_active = [0]

    def watch_active(type_key: str, event: str, old: Any, new: Any) -> None:
        if type_key == PODS:
            active = sum(1 for p in cluster.store.iter(PODS, NS) if podutil.is_active(p))
            most_active[0] = max(most_active[0], active)

    cluster.store.add_listener(watch_active)
    created = create_job(cluster, "pi", completions=3, parallelism=2)

    assert cluster.wait_for(lambda: has_condition(cluster, "pi", "Complete"), 10)
    status = job_status(cluster, "pi")
    assert status["succeeded"] == 3
    assert "failed" not in status and "active" not in status
    assert status["ready"] == 0 and status["terminating"] == 0
    assert status["uncountedTerminatedPods"] == {}
    assert status["startTime"] and status["completionTime"]
    assert condition_types(job(cluster, "pi")) == ["SuccessCriteriaMet", "Complete"]
    complete = [c for c in status["conditions"] if c["type"] == "Complete"][0]
    assert (complete["reason"], complete["message"]) == ("CompletionsReached", "Reached expected number of succeeded pods")
    assert most_active[0] == 2  # never more than parallelism at once

    pods = pods_of(cluster, created)
    assert len(pods) == 3  # a finished Job's pods stay, Succeeded
    for pod in pods:
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["metadata"]["generateName"] == "pi-"
        assert pod["metadata"]["name"].startswith("pi-")
        assert JOB_TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or [])  # counted
        ref = podutil.controller_ref(pod)
        assert ref == {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "pi",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert pod["metadata"]["labels"][CONTROLLER_UID_LABEL] == created["metadata"]["uid"]
        assert pod["metadata"]["labels"]["job-name"] == "pi"
    assert len(events_for(cluster, "pi", "SuccessfulCreate")) == 3
    assert len(events_for(cluster, "pi", "Completed")) == 1


def test_job_without_selector_gets_generated_selector_labels_and_defaults(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "manual-run", template=pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"}))
    uid = created["metadata"]["uid"]
    spec = created["spec"]
    assert spec["selector"] == {"matchLabels": {CONTROLLER_UID_LABEL: uid}}
    expected_labels = {"controller-uid": uid, CONTROLLER_UID_LABEL: uid, "job-name": "manual-run", JOB_NAME_LABEL: "manual-run"}
    assert spec["template"]["metadata"]["labels"] == expected_labels
    assert created["metadata"]["labels"] == expected_labels  # defaulted from the template, as read back
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert (spec["completionMode"], spec["suspend"], spec["podReplacementPolicy"]) == ("NonIndexed", False, "TerminatingOrFailed")
    assert created["status"] == {}

    assert cluster.wait_for(lambda: job_status(cluster, "manual-run").get("ready") == 1, 5)
    status = job_status(cluster, "manual-run")
    assert status["active"] == 1
    (pod,) = pods_of(cluster, created)
    assert pod["metadata"]["finalizers"] == [JOB_TRACKING_FINALIZER]  # not counted while it runs
    assert expected_labels.items() <= pod["metadata"]["labels"].items()


def test_job_template_labels_become_job_labels_when_job_has_none(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "labelled", template=pod_template(labels={"app": "report"}))
    assert created["metadata"]["labels"] == {"app": "report"}
    assert created["spec"]["template"]["metadata"]["labels"]["app"] == "report"


def test_job_validation(cluster: SandboxCluster) -> None:
    with pytest.raises(errors.ApiError) as always:
        create_job(cluster, "bad", template=pod_template(restart_policy="Always"))
    assert always.value.code == 422
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"' in always.value.message
    assert always.value.message.startswith('Job.batch "bad" is invalid: ')

    no_policy = pod_template()
    del no_policy["spec"]["restartPolicy"]
    with pytest.raises(errors.ApiError) as missing:
        create_job(cluster, "bad2", template=no_policy)
    assert missing.value.code == 422 and "restartPolicy: Required value" in missing.value.message

    with pytest.raises(errors.ApiError) as indexed:
        create_job(cluster, "bad3", completionMode="Indexed", parallelism=2)
    assert "spec.completions: Required value: when completion mode is Indexed" in indexed.value.message

    with pytest.raises(errors.ApiError) as foreign:
        create_job(cluster, "bad4", selector={"matchLabels": {"app": "x"}}, template=pod_template(labels={"app": "x"}))
    assert foreign.value.code == 422 and "`selector` not auto-generated" in foreign.value.message

    manual = create_job(
        cluster, "manual", manualSelector=True, selector={"matchLabels": {"app": "m"}}, template=pod_template(labels={"app": "m"})
    )
    assert manual["spec"]["selector"] == {"matchLabels": {"app": "m"}}
    assert "controller-uid" not in manual["spec"]["template"]["metadata"]["labels"]


def test_job_selector_and_template_are_immutable(cluster: SandboxCluster) -> None:
    create_job(cluster, "fixed", template=pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"}))
    changed = job(cluster, "fixed")
    changed = {**changed, "spec": {**changed["spec"], "template": {**changed["spec"]["template"], "spec": {**changed["spec"]["template"]["spec"], "containers": [{"name": "main", "image": "busybox:1.37"}]}}}}
    with pytest.raises(errors.ApiError) as template:
        cluster.store.update(JOBS, changed)
    assert template.value.code == 422 and "spec.template: Invalid value" in template.value.message
    assert "field is immutable" in template.value.message

    reselected = job(cluster, "fixed")
    reselected = {**reselected, "spec": {**reselected["spec"], "selector": {"matchLabels": {"job-name": "fixed"}}}}
    with pytest.raises(errors.ApiError) as selector:
        cluster.store.update(JOBS, reselected)
    assert selector.value.code == 422 and "spec.selector" in selector.value.message

    suspended = job(cluster, "fixed")
    suspended = {**suspended, "spec": {**suspended["spec"], "suspend": True}}
    assert cluster.store.update(JOBS, suspended)["spec"]["suspend"] is True  # other fields may change


def test_failing_pods_exhaust_backoff_limit(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "flaky", backoffLimit=2, template=pod_template(annotations={EXIT_CODE_ANNOTATION: "1"}))
    assert cluster.wait_for(lambda: has_condition(cluster, "flaky", "Failed"), 15)
    status = job_status(cluster, "flaky")
    assert status["failed"] == 3  # backoffLimit 2: the third failure ends it
    assert "succeeded" not in status and "completionTime" not in status
    assert condition_types(job(cluster, "flaky")) == ["FailureTarget", "Failed"]
    failed = [c for c in status["conditions"] if c["type"] == "Failed"][0]
    assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    pods = pods_of(cluster, created)
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert len(events_for(cluster, "flaky", "BackoffLimitExceeded")) == 1
    assert not has_condition(cluster, "flaky", "Complete")


def test_deleting_a_running_job_pod_makes_a_replacement(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "stuck", template=pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"}))
    assert cluster.wait_for(lambda: job_status(cluster, "stuck").get("ready") == 1, 5)
    (first,) = pods_of(cluster, created)
    cluster.store.delete(PODS, NS, first["metadata"]["name"])

    def replaced() -> bool:
        pods = [p for p in pods_of(cluster, created) if p["metadata"]["name"] != first["metadata"]["name"]]
        return len(pods) == 1 and podutil.is_ready(pods[0])

    assert cluster.wait_for(replaced, 5)
    assert cluster.wait_for(lambda: cluster.store.try_get(PODS, NS, first["metadata"]["name"]) is None, 5)
    status = job_status(cluster, "stuck")
    assert status["active"] == 1
    assert status["failed"] == 1  # a deleted pod counts as failed (podReplacementPolicy TerminatingOrFailed)
    assert not condition_types(job(cluster, "stuck"))


def test_suspending_a_job_deletes_its_pods_and_resuming_recreates_them(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "pausable", parallelism=2, completions=4, template=pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"}))
    assert cluster.wait_for(lambda: job_status(cluster, "pausable").get("ready") == 2, 5)
    cluster.store.mutate(JOBS, NS, "pausable", lambda j: j["spec"].update(suspend=True))
    assert cluster.wait_for(lambda: not pods_of(cluster, created), 5)
    status = job_status(cluster, "pausable")
    assert "active" not in status and "failed" not in status  # suspension is no failure
    suspended = [c for c in status["conditions"] if c["type"] == "Suspended"][0]
    assert (suspended["status"], suspended["reason"], suspended["message"]) == ("True", "JobSuspended", "Job suspended")

    cluster.store.mutate(JOBS, NS, "pausable", lambda j: j["spec"].update(suspend=False))
    assert cluster.wait_for(lambda: job_status(cluster, "pausable").get("active") == 2, 5)
    resumed = [c for c in job_status(cluster, "pausable")["conditions"] if c["type"] == "Suspended"][0]
    assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")


def test_active_deadline_fails_the_job(cluster: SandboxCluster) -> None:
    create_job(cluster, "slow", activeDeadlineSeconds=1, template=pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"}))
    assert cluster.wait_for(lambda: has_condition(cluster, "slow", "Failed"), 10)
    failed = [c for c in job_status(cluster, "slow")["conditions"] if c["type"] == "Failed"][0]
    assert failed["reason"] == "DeadlineExceeded"
    assert job_status(cluster, "slow")["failed"] == 1  # the pod it had to kill


def test_indexed_job_gives_each_pod_its_index(cluster: SandboxCluster) -> None:
    created = create_job(cluster, "shards", completionMode="Indexed", completions=3, parallelism=3)
    assert cluster.wait_for(lambda: has_condition(cluster, "shards", "Complete"), 10)
    assert job_status(cluster, "shards")["completedIndexes"] == "0-2"
    indexes = []
    for pod in pods_of(cluster, created):
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == index
        assert pod["metadata"]["generateName"] == f"shards-{index}-"
        assert pod["spec"]["hostname"] == f"shards-{index}"
        assert pod["spec"]["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
        indexes.append(int(index))
    assert sorted(indexes) == [0, 1, 2]


def test_deleted_job_releases_its_pods(cluster: SandboxCluster) -> None:
    forever = pod_template(annotations={RUN_SECONDS_ANNOTATION: "forever"})
    orphaning = create_job(cluster, "orphaning", parallelism=2, template=forever)
    create_job(cluster, "cascading", parallelism=2, template=forever)
    assert cluster.wait_for(lambda: job_status(cluster, "orphaning").get("ready") == 2 and job_status(cluster, "cascading").get("ready") == 2, 5)
    orphans = {p["metadata"]["name"] for p in pods_of(cluster, orphaning)}

    cluster.store.delete(JOBS, NS, "orphaning")  # batch/v1 default: orphan the pods
    cluster.store.delete(JOBS, NS, "cascading", propagation="Background")  # what kubectl does

    def released() -> bool:
        pods = [cluster.store.try_get(PODS, NS, name) for name in orphans]
        return all(p is not None and not p["metadata"].get("finalizers") and not p["metadata"].get("ownerReferences") for p in pods)

    assert cluster.wait_for(released, 5)  # orphans keep running, without the tracking finalizer
    assert cluster.wait_for(lambda: {p["metadata"]["name"] for p in cluster.store.iter(PODS, NS)} == orphans, 5)


def test_ttl_after_finished_deletes_the_job(cluster: SandboxCluster) -> None:
    create_job(cluster, "short-lived", ttlSecondsAfterFinished=0)
    assert cluster.wait_for(lambda: cluster.store.try_get(JOBS, NS, "short-lived") is None, 10)


# ==================================================================================== cron parsing
def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_cron_schedule_parsing_and_next_times() -> None:
    every_15 = CronSchedule.parse("*/15 9-17 * * mon-fri")
    monday_0859 = ts("2024-05-06T08:59:00+00:00")
    assert every_15.next_after(monday_0859) == ts("2024-05-06T09:00:00+00:00")
    assert every_15.next_after(ts("2024-05-06T17:45:00+00:00")) == ts("2024-05-07T09:00:00+00:00")
    assert every_15.next_after(ts("2024-05-10T17:50:00+00:00")) == ts("2024-05-13T09:00:00+00:00")  # Friday -> Monday

    assert CronSchedule.parse("@hourly").next_after(ts("2024-05-06T10:00:00+00:00")) == ts("2024-05-06T11:00:00+00:00")
    assert CronSchedule.parse("@daily").next_after(ts("2024-05-06T10:00:00+00:00")) == ts("2024-05-07T00:00:00+00:00")
    assert CronSchedule.parse("0 0 1 jan,jul *").next_after(ts("2024-02-01T00:00:00+00:00")) == ts("2024-07-01T00:00:00+00:00")
    # Both day fields restricted: either may match (the 13th, or any Friday).
    either = CronSchedule.parse("0 12 13 * 5")
    assert either.next_after(ts("2024-05-06T00:00:00+00:00")) == ts("2024-05-10T12:00:00+00:00")
    # A time zone moves the wall-clock schedule.
    berlin = CronSchedule.parse("0 6 * * *", "Europe/Berlin")
    assert berlin.next_after(ts("2024-07-01T00:00:00+00:00")) == ts("2024-07-01T04:00:00+00:00")

    minutely = CronSchedule.parse("* * * * *")
    # The most recent missed time only, even after a long outage.
    assert minutely.most_recent(ts("2024-01-01T00:00:30+00:00"), ts("2024-03-01T10:05:20+00:00")) == ts("2024-03-01T10:05:00+00:00")
    assert minutely.most_recent(ts("2024-01-01T00:00:30+00:00"), ts("2024-01-01T00:00:50+00:00")) is None

    for bad, message in (
        ("* * *", "expected exactly 5 fields, found 3: [* * *]"),
        ("61 * * * *", "end of range (61) above maximum (59): 61"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ):
        with pytest.raises(CronError) as err:
            CronSchedule.parse(bad)
        assert str(err.value) == message
    assert rfc3339(ts("2024-07-01T04:00:00+00:00")) == "2024-07-01T04:00:00Z"


# ======================================================================================= CronJobs
def create_cronjob(cluster: SandboxCluster, name: str, run_seconds: str = "0.05", **spec: Any) -> dict[str, Any]:
    template = pod_template(annotations={RUN_SECONDS_ANNOTATION: run_seconds})
    body = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"metadata": {"labels": {"team": "ops"}, "annotations": {"purpose": "report"}}, "spec": {"template": template}},
            **spec,
        },
    }
    return cluster.store.create(CRONJOBS, body)


def jobs_of(cluster: SandboxCluster, cronjob: dict[str, Any]) -> list[dict[str, Any]]:
    uid = cronjob["metadata"]["uid"]
    return sorted(
        (j for j in cluster.store.iter(JOBS, NS) if (podutil.controller_ref(j) or {}).get("uid") == uid),
        key=lambda j: j["metadata"]["name"],
    )


def next_minute(cluster: SandboxCluster) -> float:
    """Move the cluster clock into the next minute; returns that minute's start."""
    now = cluster.clock.time()
    boundary = (now // 60 + 1) * 60
    cluster.clock.advance(boundary - now + 1)
    return boundary


def test_cronjob_defaults_and_validation(cluster: SandboxCluster) -> None:
    created = create_cronjob(cluster, "nightly")
    spec = created["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    with pytest.raises(errors.ApiError) as bad:
        create_cronjob(cluster, "broken", schedule="61 * * * *")
    assert bad.value.code == 422
    assert bad.value.message == 'CronJob.batch "broken" is invalid: spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'
    with pytest.raises(errors.ApiError) as zone:
        create_cronjob(cluster, "zoned", timeZone="Mars/Olympus")
    assert 'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus' in zone.value.message
    with pytest.raises(errors.ApiError) as restart:
        cluster.store.create(
            CRONJOBS,
            {"metadata": {"name": "always"}, "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": pod_template("Always")}}}},
        )
    assert "spec.jobTemplate.spec.template.spec.restartPolicy" in restart.value.message
    with pytest.raises(errors.ApiError) as long_name:
        create_cronjob(cluster, "a" * 53)
    assert "must be no more than 52 characters" in long_name.value.message


def test_cronjob_starts_a_job_per_schedule(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "report")
    scheduled = next_minute(cluster)
    expected_name = f"report-{int(scheduled // 60)}"
    assert cluster.wait_for(lambda: cluster.store.try_get(JOBS, NS, expected_name) is not None, 5)
    created = cluster.store.get(JOBS, NS, expected_name)
    assert created["metadata"]["labels"] == {"team": "ops"}
    assert created["metadata"]["annotations"] == {"purpose": "report", CRONJOB_SCHEDULED_TIMESTAMP_ANNOTATION: rfc3339(scheduled)}
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cronjob["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    ]
    assert created["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL] == created["metadata"]["uid"]

    status = cluster.store.get(CRONJOBS, NS, "report")["status"]
    assert status["lastScheduleTime"] == cluster.clock.iso(scheduled)
    (ref,) = status["active"]
    assert int(ref.pop("resourceVersion")) <= int(created["metadata"]["resourceVersion"])  # as created
    assert ref == {"kind": "Job", "namespace": NS, "name": expected_name, "uid": created["metadata"]["uid"], "apiVersion": "batch/v1"}
    assert events_for(cluster, "report", "SuccessfulCreate")[0]["message"] == f"Created job {expected_name}"

    # Once the Job completes it leaves the active list and sets lastSuccessfulTime.
    def settled() -> bool:
        st = cluster.store.get(CRONJOBS, NS, "report").get("status") or {}
        return not st.get("active") and bool(st.get("lastSuccessfulTime"))

    assert cluster.wait_for(settled, 10)
    assert len(jobs_of(cluster, cronjob)) == 1  # one schedule, one Job: no storm of missed runs
    assert events_for(cluster, "report", "SawCompletedJob")[0]["message"] == f"Saw completed job: {expected_name}, condition: Complete"


def test_cronjob_runs_only_the_most_recent_missed_schedule(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "catchup", run_seconds="forever")
    cluster.clock.advance(10 * 60)  # ten schedules missed at once
    assert cluster.wait_for(lambda: len(jobs_of(cluster, cronjob)) == 1, 5)
    cluster.wait_idle(2)
    (only,) = jobs_of(cluster, cronjob)
    assert only["metadata"]["name"] == f"catchup-{int(cluster.clock.time() // 60)}"


def test_cronjob_forbid_skips_while_a_job_runs(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "exclusive", run_seconds="forever", concurrencyPolicy="Forbid")
    next_minute(cluster)
    assert cluster.wait_for(lambda: len(jobs_of(cluster, cronjob)) == 1, 5)
    next_minute(cluster)
    assert cluster.wait_for(lambda: bool(events_for(cluster, "exclusive", "JobAlreadyActive")), 5)
    assert len(jobs_of(cluster, cronjob)) == 1
    assert len(cluster.store.get(CRONJOBS, NS, "exclusive")["status"]["active"]) == 1


def test_cronjob_replace_deletes_the_running_job(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "latest-only", run_seconds="forever", concurrencyPolicy="Replace")
    first_minute = next_minute(cluster)
    first = f"latest-only-{int(first_minute // 60)}"
    assert cluster.wait_for(lambda: cluster.store.try_get(JOBS, NS, first) is not None, 5)
    second_minute = next_minute(cluster)
    second = f"latest-only-{int(second_minute // 60)}"
    assert cluster.wait_for(lambda: cluster.store.try_get(JOBS, NS, second) is not None, 5)
    assert cluster.wait_for(lambda: cluster.store.try_get(JOBS, NS, first) is None, 5)
    active = cluster.store.get(CRONJOBS, NS, "latest-only")["status"]["active"]
    assert [ref["name"] for ref in active] == [second]
    assert events_for(cluster, "latest-only", "SuccessfulDelete")[0]["message"] == f"Deleted job {first}"
    assert [j["metadata"]["name"] for j in jobs_of(cluster, cronjob)] == [second]


def test_suspended_cronjob_starts_nothing_until_resumed(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "paused", suspend=True)
    next_minute(cluster)
    cluster.wait_idle(2)
    assert not cluster.wait_for(lambda: bool(jobs_of(cluster, cronjob)), 0.6)
    cluster.store.mutate(CRONJOBS, NS, "paused", lambda c: c["spec"].update(suspend=False))
    assert cluster.wait_for(lambda: len(jobs_of(cluster, cronjob)) == 1, 5)


def test_cronjob_keeps_only_its_job_history_limits(cluster: SandboxCluster) -> None:
    cronjob = create_cronjob(cluster, "history", successfulJobsHistoryLimit=1)
    names = []
    for _ in range(3):
        minute = next_minute(cluster)
        name = f"history-{int(minute // 60)}"
        names.append(name)
        assert cluster.wait_for(lambda: has_condition(cluster, name, "Complete"), 10)
    assert cluster.wait_for(lambda: [j["metadata"]["name"] for j in jobs_of(cluster, cronjob)] == [names[-1]], 5)
    assert cluster.wait_for(lambda: not cluster.store.get(CRONJOBS, NS, "history")["status"].get("active"), 5)
    status = cluster.store.get(CRONJOBS, NS, "history")["status"]
    assert status["lastSuccessfulTime"] == job_status(cluster, names[-1])["completionTime"]


def test_job_created_from_cronjob_by_hand_runs_but_is_not_tracked_as_active(cluster: SandboxCluster) -> None:
    """What `kubectl create job --from=cronjob/x` posts: no selector, a controller ref to the CronJob."""
    cronjob = create_cronjob(cluster, "backup", run_seconds="forever", suspend=True)
    manual = cluster.store.create(
        JOBS,
        {
            "metadata": {
                "name": "backup-manual",
                "namespace": NS,
                "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": cronjob["metadata"]["uid"], "controller": True}],
            },
            "spec": cronjob["spec"]["jobTemplate"]["spec"],
        },
    )
    assert manual["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL] == manual["metadata"]["uid"]
    assert cluster.wait_for(lambda: job_status(cluster, "backup-manual").get("ready") == 1, 5)
    # The real cronjob controller only warns about a Job it did not start; status.active stays empty.
    assert cluster.wait_for(lambda: bool(events_for(cluster, "backup", "UnexpectedJob")), 5)
    assert not (cluster.store.get(CRONJOBS, NS, "backup").get("status") or {}).get("active")
    warning = events_for(cluster, "backup", "UnexpectedJob")[0]
    assert warning["type"] == "Warning"
    assert warning["message"] == "Saw a job that the controller did not create or forgot: backup-manual"
