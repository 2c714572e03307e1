"""The simulator's clock: wall time plus an offset tests may advance."""
from __future__ import annotations

import datetime as dt
import threading
import time


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        """Seconds since the epoch, simulated."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Jump simulated time forward (everything due in between fires at the next tick)."""
        with self._lock:
            self._offset += seconds

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), tz=dt.timezone.utc)

    def iso(self, at: float | None = None) -> str:
        stamp = dt.datetime.fromtimestamp(self.time() if at is None else at, tz=dt.timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")

    def iso_micro(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    """An RFC 3339 timestamp from an object as epoch seconds."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
