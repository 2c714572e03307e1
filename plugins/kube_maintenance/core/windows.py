"""Maintenance windows: timezone-aware, weekly, possibly crossing midnight."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class MaintenanceWindow:
    days: tuple[str, ...]  # days on which the window opens, in the cluster's timezone
    start_hour: int
    start_minute: int
    duration_minutes: int
    timezone: str

    @property
    def cron(self) -> str:
        """The cron expression (in the cluster's timezone) of the window's opening."""
        dows = ",".join(str((DAY_NAMES.index(d) + 1) % 7) for d in self.days)  # cron: 0 = Sunday
        return f"{self.start_minute} {self.start_hour} * * {dows}"

    def _openings_around(self, at: dt.datetime) -> list[dt.datetime]:
        tz = ZoneInfo(self.timezone)
        local = at.astimezone(tz)
        out = []
        for delta in (-1, 0):  # a window that opened yesterday may still be open
            day = (local + dt.timedelta(days=delta)).date()
            if DAY_NAMES[day.weekday()] in self.days:
                out.append(dt.datetime(day.year, day.month, day.day, self.start_hour, self.start_minute, tzinfo=tz))
        return out

    def end_of_window_at(self, at: dt.datetime) -> dt.datetime | None:
        """When the window that contains ``at`` closes, or None when ``at`` is outside every window."""
        if at.tzinfo is None:
            raise ValueError("a timezone-aware time is required")
        for opening in self._openings_around(at):
            closing = opening + dt.timedelta(minutes=self.duration_minutes)
            if opening <= at < closing:
                # Back-to-back windows (e.g. every day, 24 hours) are one window.
                for _ in range(len(DAY_NAMES)):
                    reopening = [o for o in self._openings_around(closing) if o == closing]
                    if not reopening:
                        break
                    closing = closing + dt.timedelta(minutes=self.duration_minutes)
                return closing
        return None

    def contains(self, at: dt.datetime) -> bool:
        return self.end_of_window_at(at) is not None

    def fits(self, at: dt.datetime, needed: dt.timedelta) -> bool:
        """Whether work of length ``needed`` started at ``at`` ends inside the current window."""
        closing = self.end_of_window_at(at)
        return closing is not None and at + needed <= closing

    def why_not(self, at: dt.datetime, needed: dt.timedelta = dt.timedelta(0)) -> str | None:
        """None when work of length ``needed`` may start at ``at``; otherwise the reason, for the log."""
        closing = self.end_of_window_at(at)
        if closing is None:
            return f"outside the maintenance window ({self.describe()})"
        if at + needed > closing:
            return f"the maintenance window ({self.describe()}) closes at {closing.isoformat()}, too soon for {needed}"
        return None

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start_hour:02d}:{self.start_minute:02d} for {self.duration_minutes} min ({self.timezone})"
