"""CronJob refresh's XComs stay small however many CronJobs and namespaces a cluster has (issue 10:
every XCom under 64 KB; pass references, not lists of objects). Sizes are measured as Airflow stores
an XCom: its JSON."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from kube_maintenance.cronjob_refresh.decisions import (
    REASON_CHARS,
    REPORT_CAP,
    REPORT_REASONS,
    CronJobRefreshParams,
    CronJobVerdict,
    by_reason,
    in_group,
    judge_namespace,
    judgement,
    namespace_groups,
    shard,
    why_no_fresh_job,
)
from kube_maintenance.cronjob_refresh.tasks import summarise

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
XCOM_LIMIT = 64 * 1024
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform/batch"
SKIP = "kube-maintenance.io/skip"


def size(value: Any) -> int:
    return len(json.dumps(value))


def uid(*names: str) -> str:
    """A UID as the api-server makes them (36 characters)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(names)))


def cronjob(namespace: str, name: str, policy: str, suspend: bool = False, opted_out: bool = False) -> dict:
    annotations = {SKIP: "true", "kube-maintenance.io/skip-reason": "quarter-end freeze"} if opted_out else {}
    template = {"spec": {"containers": [{"name": "main", "image": f"{REGISTRY}/{name}:2.0.0"}], "restartPolicy": "OnFailure"}}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid(namespace, name), "generation": 4, "annotations": annotations,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedule": "30 2 * * *", "timeZone": "Europe/Berlin", "concurrencyPolicy": policy, "suspend": suspend, "jobTemplate": {"spec": {"template": template}}},
        "status": {"lastScheduleTime": "2026-11-30T01:30:00Z"},
    }


def job(cron: dict, suffix: str, version: str, succeeded: int = 0) -> dict:
    m = cron["metadata"]
    name = f"{m['name']}-{suffix}"
    return {
        "metadata": {"name": name, "namespace": m["namespace"], "uid": uid(m["namespace"], name), "resourceVersion": "123456",
                     "creationTimestamp": "2026-11-30T01:30:00Z",
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": m["name"], "uid": m["uid"], "controller": True}]},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": f"{REGISTRY}/{m['name']}:{version}"}]}}},
        "status": {"active": 1, "succeeded": succeeded},
    }


def cluster(cronjobs: int, per_namespace: int = 20, stale_every: int = 50) -> dict[str, tuple[list[dict], list[dict]]]:
    """namespace -> (CronJobs, Jobs). Every ``stale_every``-th CronJob has a stale running Job;
    beside those, as many suspended and half as many opted out with one, and as many with a stale
    Job left alone (it has completed work); a third Forbid; some run a current Job, most none."""
    world: dict[str, tuple[list[dict], list[dict]]] = {}
    for i in range(cronjobs):
        namespace = f"team-analytics-{i // per_namespace:04d}"
        kind = i % stale_every
        cron = cronjob(namespace, f"nightly-report-{i:05d}", "Forbid" if i % 3 == 0 else "Allow", suspend=kind == stale_every // 2, opted_out=kind == 1 and i % 2 == 0)
        crons, jobs = world.setdefault(namespace, ([], []))
        crons.append(cron)
        if kind in (0, 1, stale_every // 2):
            jobs.append(job(cron, "29410290", "1.9.0"))
        elif kind == 2:
            jobs.append(job(cron, "29410291", "1.9.0", succeeded=3))
        elif i % 7 == 3:
            jobs.append(job(cron, "29410292", "2.0.0"))
    return world


def judged_groups(cronjobs: int, groups: int = 1, **shape: Any) -> list[dict[str, Any]]:
    world = cluster(cronjobs, **shape)
    params = CronJobRefreshParams(create_fresh_job=True, dry_run=False)
    out = []
    for index, names in enumerate(shard(sorted(world), groups)):
        verdicts = [v for ns in names for v in judge_namespace(*world[ns], params, NOW)]
        out.append(judgement(index, f"{names[0]} ... {names[-1]} ({len(names)} namespaces)", verdicts))
    return out


def forbid_reason() -> str:
    return why_no_fresh_job("Forbid", [], "2026-12-01T02:30:00+01:00 (schedule '30 2 * * *', Europe/Berlin)")


def outcome(judged: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """What the later steps hand on when every stale Job goes: deletions, and creations (a fresh Job
    for each Allow CronJob, none for Forbid)."""
    deletions, creations = [], []
    for group in judged:
        verdicts = [CronJobVerdict.from_xcom(v) for v in group["verdicts"]]
        deleted = [{"namespace": j.namespace, "name": j.name, "uid": j.uid, "cronjob": v.name, "cronjob_uid": v.uid} for v in verdicts for j in v.jobs_to_delete]
        deletions.append({"index": group["index"], "label": group["label"], "deleted": deleted, "already_gone": [], "changed": [], "finished": [], "at": NOW.isoformat()})
        created: list[str] = []
        not_created: dict[str, list[str]] = {}
        for v in verdicts:
            if not v.jobs_to_delete:
                continue
            why = v.why_no_fresh_job
            if why:
                not_created.setdefault(why, []).append(v.ref)
            else:
                created.append(f"job/{v.namespace}/{v.name}-rabcdef012")
        creations.append({"index": group["index"], "created": created, "existing": [], "not_created": not_created})
    return deletions, creations


def test_the_judge_hands_on_only_cronjobs_with_stale_jobs_as_compact_records() -> None:
    (judged,) = judged_groups(1000)
    verdicts = [v for ns, (crons, jobs) in sorted(cluster(1000).items()) for v in judge_namespace(crons, jobs, CronJobRefreshParams(create_fresh_job=True), NOW)]
    with_stale = [v for v in verdicts if v.stale or v.left_alone]
    assert judged["cronjobs"] == 1000 and len(with_stale) == 80 and len(judged["verdicts"]) == 80
    # The same records whatever the CronJobs without stale Jobs: the XCom does not grow with them.
    (only_stale,) = [judgement(0, judged["label"], with_stale)]
    assert judged["verdicts"] == only_stale["verdicts"]
    # What the later steps use survives (the stale Jobs' images, why no fresh Job, when the next one runs).
    for before, record in zip(with_stale, judged["verdicts"]):
        after = CronJobVerdict.from_xcom(record)
        assert (after.ref, after.suspended, after.opted_out, after.left_alone) == (before.ref, before.suspended, before.opted_out, before.left_alone)
        assert [j.name for j in after.stale] == [j.name for j in before.stale]
        if before.jobs_to_delete:
            assert after.jobs_to_delete == before.jobs_to_delete
            assert (after.uid, after.generation, after.images, after.next_run) == (before.uid, before.generation, before.images, before.next_run)
            assert after.why_no_fresh_job == before.why_no_fresh_job
        else:
            assert set(record) <= {"namespace", "name", "suspended", "opted_out", "stale", "left_alone"}, record
            assert all(set(j) == {"name"} for j in record.get("stale") or ()), record
    # Compact: under 600 B a CronJob with a Job to delete (its images are ECR references of 85
    # characters, each said twice: the template's and the stale Job's), far less for one only reported.
    acted = [r for r in judged["verdicts"] if "uid" in r]
    assert len(acted) == 40 and max(size(r) for r in acted) < 600 and max(size(r) for r in judged["verdicts"] if "uid" not in r) < 250
    assert size(judged) < 40 * 600 + 40 * 250 + 200, size(judged)


def test_a_groups_judgement_grows_with_its_stale_jobs_only() -> None:
    few = judged_groups(1000, stale_every=50)[0]
    many_more_cronjobs = judged_groups(10000, stale_every=500)[0]  # ten times the CronJobs, as many stale ones
    assert many_more_cronjobs["cronjobs"] == 10000 and len(many_more_cronjobs["verdicts"]) == len(few["verdicts"]) == 80
    assert size(few) < size(many_more_cronjobs) < size(few) + 50 < XCOM_LIMIT / 2, (size(many_more_cronjobs), size(few))


def test_the_summary_says_each_reason_once_and_lists_a_bounded_number_of_references() -> None:
    sizes = {}
    for cronjobs in (1000, 10000):
        judged = judged_groups(cronjobs, groups=16, stale_every=5)  # 200 and 2,000 stale Jobs, a third Forbid
        deletions, creations = outcome(judged)
        opted_namespaces = by_reason((f"team-frozen-{i:04d}", "opted out (kube-maintenance.io/skip=true on the namespace): month-end close") for i in range(300))
        summary = summarise(judged, deletions, creations, opted_namespaces, dry_run=False, released=True)
        sizes[cronjobs] = size(summary)
        assert summary["cronjobs"] == cronjobs
        stale = sum(len(d["deleted"]) for d in deletions)
        assert stale == 3 * cronjobs // 10 and sum(len(c["not_created"].get(forbid_reason(), ())) for c in creations) == cronjobs // 10
        deleted = summary["deleted"]
        assert len(deleted) == REPORT_CAP + 1 and deleted[-1] == f"... and {stale - REPORT_CAP} more (all in the cleanup task's log)"
        (forbid,) = [why for why in summary["fresh_jobs_not_created"] if "concurrencyPolicy Forbid" in why]
        refs = summary["fresh_jobs_not_created"][forbid]
        assert len(refs) == REPORT_CAP + 1 and refs[-1].startswith("... and "), refs
        assert json.dumps(summary).count("concurrencyPolicy Forbid") == 1, "the reason is said once"
        assert set(summary["next_scheduled_jobs"]) and all(len(v) <= REPORT_CAP + 1 for v in summary["next_scheduled_jobs"].values())
        assert summary["opted_out"]["namespaces"] == opted_namespaces
    assert sizes[10000] < sizes[1000] + 100 < 16 * 1024, sizes


def test_a_summary_of_the_old_shape_of_forbid_cronjobs_is_small() -> None:
    """Issue 10's case: 200 CronJobs without a fresh Job, all Forbid, once 79 KB of summary."""
    verdicts = [CronJobVerdict(f"team-{i:04d}", "report", f"uid-{i}", 2, False, {"main": f"{REGISTRY}/report:2"}, "Forbid", "2026-12-01T02:30:00+01:00 (schedule '30 2 * * *', Europe/Berlin)") for i in range(200)]
    why = why_no_fresh_job("Forbid", [], verdicts[0].next_run)
    creations = [{"index": 0, "created": [], "existing": [], "not_created": {why: [v.ref for v in verdicts]}}]
    summary = summarise([{"index": 0, "label": "x", "cronjobs": 200, "verdicts": []}], [], creations, {}, dry_run=False, released=True)
    assert list(summary["fresh_jobs_not_created"]) == [why] and size(summary) < 4 * 1024, size(summary)


def test_by_reason_bounds_references_reasons_and_their_length() -> None:
    pairs = [(f"ns/job-{i:04d}", f"reason {i % 40}") for i in range(1000)] + [("ns/long", "x" * 5000)]
    grouped = by_reason(pairs)
    shown = [ref for refs in grouped.values() for ref in refs if not ref.startswith("... and")]
    assert len(shown) == REPORT_CAP and len(grouped) == REPORT_REASONS + 1
    assert "... 31 other reason(s) (all in the task log)" in grouped and all(len(why) <= REASON_CHARS + 40 for why in grouped)
    assert sum(int(refs[-1].split()[2]) for refs in grouped.values() if refs[-1].startswith("... and")) + len(shown) == 1001
    assert by_reason([("a/b", "x"), ("a/a", "x")]) == {"x": ["a/a", "a/b"]}


def test_the_plan_hands_on_ranges_of_namespaces_not_their_names() -> None:
    names = sorted(f"team-{i:05d}-{'x' * 40}" for i in range(10000))  # 10,000 namespaces: Kubernetes' documented threshold
    for most in (16, 256):
        groups = namespace_groups(names, most)
        assert len(groups) == most and size(groups) < most * 70, size(groups)  # the names are 51 characters
        # Each group finds exactly the plan's shard, and a namespace created since falls in one group only.
        assert [[n for n in names if in_group(n, g)] for g in groups] == shard(names, most)
        for late in ("a", "team-00042-late", "team-99999", "zzz"):
            assert sum(in_group(late, g) for g in groups) == 1
    assert namespace_groups(["b", "a"], 4) == [{"index": 0, "from": None, "to": "b"}, {"index": 1, "from": "b", "to": None}]
    assert namespace_groups(["team-0124-x", "team-0125-a", "team-0125-b"], 2) == [{"index": 0, "from": None, "to": "team-0125-b"}, {"index": 1, "from": "team-0125-b", "to": None}]
    assert namespace_groups(["team-0124-x", "team-0125-a", "team-0126-b", "team-0126-c"], 2)[1]["from"] == "team-0126"
