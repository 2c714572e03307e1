"""Reading a trigger form (or a scheduled run's defaults) into typed values, every problem at once.

Airflow's Param schema already refuses the wrong JSON types in the UI form; this checks what a
schema cannot (selectors, names, cross-field rules) and what arrives through the API or a CLI
``--conf``, and names the field and the fix in one message.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from kube_maintenance.core.selectors import SelectorError, parse_label_selector


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ParamError(ValueError):
    """A parameter is wrong; the message says which and how to fix it."""


class FieldReader:
    """Reads fields from ``raw``, falling back to the attributes of ``defaults``; collects problems."""

    def __init__(self, raw: Mapping[str, Any], defaults: Any) -> None:
        self.raw = raw
        self.defaults = defaults
        self.problems: list[str] = []

    def _default(self, key: str) -> Any:
        return getattr(self.defaults, key)

    def integer(self, key: str, low: int, high: int | None = None, optional: bool = False) -> Any:
        value = self.raw.get(key)
        if value is None or value == "":
            return None if optional else self._default(key)
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = int(value)
            if float(value) != number:
                raise ValueError
        except ValueError:
            self.problems.append(f"{key}: expected a whole number, got {value!r}")
            return self._default(key)
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problems.append(f"{key}: must be {bounds}, got {number}")
        return number

    def number(self, key: str, low: float) -> float:
        value = self.raw.get(key)
        if value is None or value == "":
            return float(self._default(key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            self.problems.append(f"{key}: expected a number >= {low:g}, got {value!r}")
            return float(self._default(key))
        return float(value)

    def boolean(self, key: str) -> bool:
        value = self.raw.get(key, self._default(key))
        if not isinstance(value, bool):
            self.problems.append(f"{key}: expected true or false, got {value!r}")
            return bool(self._default(key))
        return value

    def names(self, key: str, what: str = "names") -> tuple[str, ...]:
        """A list of names; a comma- or newline-separated string is accepted too."""
        value = self.raw.get(key) or ()
        if isinstance(value, str):
            value = [v.strip() for v in value.replace("\n", ",").split(",")]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{key}: expected a list of {what}")
            return ()
        return tuple(dict.fromkeys(v for v in value if v))

    def namespace_names(self, key: str) -> tuple[str, ...]:
        names = self.names(key, "namespace names")
        bad = [n for n in names if len(n) > 63 or not _DNS_LABEL.match(n)]
        self.check(not bad, f"{key}: not valid namespace names: {', '.join(map(repr, bad))}")
        return names

    def selector(self, key: str, example: str = "app=web") -> str:
        value = self.raw.get(key) or ""
        if not isinstance(value, str):
            self.problems.append(f"{key}: expected a label selector string such as {example!r}")
            return ""
        try:
            parse_label_selector(value)
        except SelectorError as exc:
            self.problems.append(f"{key}: {exc}")
        return value

    def choices(self, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        chosen = self.names(key, what=" or ".join(allowed))
        unknown = [c for c in chosen if c not in allowed]
        if unknown:
            self.problems.append(f"{key}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return tuple(c for c in chosen if c in allowed)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ParamError("invalid parameters:\n- " + "\n- ".join(self.problems))
