"""Label selectors checked locally, so a malformed one fails before any request is made."""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET = re.compile(r"^(\S+)\s+(in|notin)\s*\(([^()]*)\)$")
_EQ = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")

Matcher = Callable[[dict[str, str]], bool]


class SelectorError(ValueError):
    pass


def _terms(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def parse_label_selector(text: str) -> Matcher:
    """``app=web,tier!=db,env in (a,b),!canary,team`` -> a predicate over a labels dict."""
    if not text.strip():
        return lambda labels: True
    checks: list[Matcher] = []
    for raw in _terms(text):
        term = raw.strip()

        def bad(why: str) -> SelectorError:
            return SelectorError(f"invalid label selector {text!r}: {why} in {term!r}")

        if m := _SET.match(term):
            key, op = m.group(1), m.group(2)
            values = frozenset(v.strip() for v in m.group(3).split(","))
            if not _KEY.match(key):
                raise bad("invalid key")
            if not values or "" in values or not all(_VALUE.match(v) for v in values):
                raise bad("invalid value set")
            checks.append((lambda k, vs: lambda l: l.get(k) in vs)(key, values) if op == "in" else (lambda k, vs: lambda l: l.get(k) not in vs)(key, values))
        elif term.startswith("!"):
            key = term[1:].strip()
            if not _KEY.match(key):
                raise bad("invalid key")
            checks.append((lambda k: lambda l: k not in l)(key))
        elif m := _EQ.match(term):
            key, op, value = m.groups()
            if not _KEY.match(key):
                raise bad("invalid key")
            if not _VALUE.match(value) or len(value) > 63:
                raise bad("invalid value")
            checks.append((lambda k, v: lambda l: l.get(k) == v)(key, value) if op != "!=" else (lambda k, v: lambda l: l.get(k) != v)(key, value))
        elif _KEY.match(term):
            checks.append((lambda k: lambda l: k in l)(term))
        else:
            raise bad("cannot parse")
    return lambda labels: all(check(labels or {}) for check in checks)

def selector_string(label_selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector (matchLabels + matchExpressions) as the labelSelector query string."""
    terms = [f"{k}={v}" for k, v in sorted(((label_selector or {}).get("matchLabels") or {}).items())]
    for expr in (label_selector or {}).get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or ())
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ValueError(f"unknown label selector operator {op!r}")
    return ",".join(terms)
