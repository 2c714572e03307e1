"""Label and field selectors, parsed and matched as the API server does."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ApiError

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and labels[self.key] == self.values[0]
        if self.op == "!=":
            return not present or labels[self.key] != self.values[0]
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            return not present or labels[self.key] not in self.values
        raise AssertionError(self.op)


LabelSelector = tuple[Requirement, ...]


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> str:
    if not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise ApiError(400, f"unable to parse requirement: invalid label key \"{key}\": in selector {raw!r}")
    return key


def _check_value(value: str, raw: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise ApiError(400, f"unable to parse requirement: invalid label value: \"{value}\" in selector {raw!r}")
    return value


def parse_label_selector(raw: str | None) -> LabelSelector:
    """Parse ``a=b,c!=d,e in (f,g),!h`` into requirements; 400 on anything malformed."""
    if raw is None or raw.strip() == "":
        return ()
    reqs: list[Requirement] = []
    for part in _split_top_level(raw):
        term = part.strip()
        if not term:
            raise ApiError(400, f"unable to parse requirement: found '', expected: identifier in selector {raw!r}")
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            key = _check_key(m.group(1), raw)
            values = tuple(_check_value(v.strip(), raw) for v in m.group(3).split(","))
            if not any(values):
                raise ApiError(400, f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty in {raw!r}")
            reqs.append(Requirement(key, m.group(2), values))
            continue
        if term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip(), raw), "!"))
            continue
        m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$", term)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(_check_key(m.group(1), raw), op, (_check_value(m.group(3), raw),)))
            continue
        if re.match(r"^[^=!\s()]+$", term):
            reqs.append(Requirement(_check_key(term, raw), "exists"))
            continue
        raise ApiError(400, f"unable to parse requirement: invalid selector term {term!r} in {raw!r}")
    return tuple(reqs)


def selector_from_object(sel: dict[str, Any] | None) -> LabelSelector | None:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as requirements.

    ``None`` selects nothing; an empty selector selects everything (as in the API).
    """
    if sel is None:
        return None
    reqs = [Requirement(k, "=", (v,)) for k, v in (sel.get("matchLabels") or {}).items()]
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}[expr["operator"]]
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return tuple(reqs)


def labels_match(selector: LabelSelector | None, labels: dict[str, str] | None) -> bool:
    if selector is None:
        return False
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


# Field selectors: the apiserver supports only a few fields per resource, and says so.
_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": _COMMON_FIELDS
    + (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "nodes": _COMMON_FIELDS + ("spec.unschedulable",),
    "namespaces": _COMMON_FIELDS + ("status.phase",),
    "events": _COMMON_FIELDS
    + (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "jobs.batch": _COMMON_FIELDS + ("status.successful",),
    "replicasets.apps": _COMMON_FIELDS + ("status.replicas",),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # "=" or "!="
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        actual = field_value(obj, self.path)
        return (actual == self.value) if self.op == "=" else (actual != self.value)


FieldSelector = tuple[FieldRequirement, ...]


def field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            cur = None
            break
        cur = cur.get(part)
    if cur is None:
        # The apiserver's field sets hold "" for an absent string and "false" for an absent bool.
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(raw: str | None, resource_key: str) -> FieldSelector:
    if raw is None or raw.strip() == "":
        return ()
    supported = SUPPORTED_FIELDS.get(resource_key, _COMMON_FIELDS)
    out: list[FieldRequirement] = []
    for term in raw.split(","):
        term = term.strip()
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", term)
        if not m:
            raise ApiError(400, f"invalid selector: '{raw}'; can't understand '{term}'")
        path = m.group(1).strip()
        if path not in supported:
            raise ApiError(400, f'field label not supported: {path}')
        out.append(FieldRequirement(path, "!=" if m.group(2) == "!=" else "=", m.group(3).strip()))
    return tuple(out)


def fields_match(selector: FieldSelector, obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in selector)


def make_filter(label_sel: LabelSelector, field_sel: FieldSelector) -> Callable[[dict[str, Any]], bool]:
    def _match(obj: dict[str, Any]) -> bool:
        if label_sel and not labels_match(label_sel, obj.get("metadata", {}).get("labels")):
            return False
        return fields_match(field_sel, obj) if field_sel else True

    return _match
