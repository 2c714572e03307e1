"""Maintenance windows in the cluster's own timezone."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from kube_maintenance.core.windows import MaintenanceWindow

NY = ZoneInfo("America/New_York")
# Tuesdays and Thursdays 23:00 New York time for three hours: crosses midnight.
WINDOW = MaintenanceWindow(("tue", "thu"), 23, 0, 180, "America/New_York")


def ny(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=NY)


def test_inside_and_outside() -> None:
    assert WINDOW.contains(ny(2026, 11, 24, 23, 30))  # Tuesday 23:30
    assert WINDOW.contains(ny(2026, 11, 25, 1, 59))  # Wednesday 01:59: the Tuesday window still open
    assert not WINDOW.contains(ny(2026, 11, 25, 2, 0))  # closed at 02:00
    assert not WINDOW.contains(ny(2026, 11, 25, 23, 30))  # Wednesday: no window
    assert not WINDOW.contains(ny(2026, 11, 24, 22, 59))


def test_the_same_instant_in_utc_is_judged_in_the_cluster_timezone() -> None:
    utc = ny(2026, 11, 24, 23, 30).astimezone(dt.timezone.utc)  # Wednesday 04:30 UTC
    assert utc.weekday() == 2 and WINDOW.contains(utc)


def test_fits_refuses_work_that_would_overrun_the_window() -> None:
    at = ny(2026, 11, 25, 1, 0)
    assert WINDOW.fits(at, dt.timedelta(minutes=60))
    assert not WINDOW.fits(at, dt.timedelta(minutes=61))
    assert not WINDOW.fits(ny(2026, 11, 26, 12, 0), dt.timedelta(minutes=1))


def test_cron_and_naive_times() -> None:
    assert WINDOW.cron == "0 23 * * 2,4"
    with pytest.raises(ValueError):
        WINDOW.contains(dt.datetime(2026, 11, 24, 23, 30))


def test_why_not_explains_a_closed_or_closing_window() -> None:
    assert WINDOW.why_not(ny(2026, 11, 24, 23, 30)) is None
    assert "outside the maintenance window (tue,thu 23:00 for 180 min (America/New_York))" == WINDOW.why_not(ny(2026, 11, 25, 12, 0))
    closing = WINDOW.why_not(ny(2026, 11, 25, 1, 30), dt.timedelta(minutes=45))
    assert closing is not None and "closes at 2026-11-25T02:00:00-05:00" in closing


def test_back_to_back_windows_are_one() -> None:
    always = MaintenanceWindow(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), 0, 0, 1440, "UTC")
    late = dt.datetime(2026, 11, 24, 23, 59, tzinfo=dt.timezone.utc)
    assert always.fits(late, dt.timedelta(hours=5))
    weekdays = MaintenanceWindow(("mon", "tue"), 0, 0, 1440, "UTC")  # Monday 00:00 to Wednesday 00:00
    monday_late = dt.datetime(2026, 11, 23, 23, 0, tzinfo=dt.timezone.utc)
    assert weekdays.end_of_window_at(monday_late) == dt.datetime(2026, 11, 25, 0, 0, tzinfo=dt.timezone.utc)
