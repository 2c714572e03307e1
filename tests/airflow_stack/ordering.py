"""The tests that start a whole Airflow run last: first every other test, then the distributed test,
then the browser tests. Each group's session- or module-wide stack then starts after the other tests
and never runs beside them (or beside the other group's stack) on these two cores."""
from __future__ import annotations

import pytest


def stack_group(item: pytest.Item) -> int:
    if item.get_closest_marker("browser") is not None:
        return 2
    if item.get_closest_marker("distributed") is not None:
        return 1
    return 0


def order_stack_tests_last(items: list[pytest.Item]) -> None:
    """Stable, and the same whichever conftest calls it (or how often)."""
    items[:] = sorted(items, key=stack_group)
