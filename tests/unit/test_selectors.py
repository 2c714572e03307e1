from __future__ import annotations

import pytest

from kube_maintenance.core.selectors import SelectorError, parse_label_selector


@pytest.mark.parametrize(
    "selector,labels,expected",
    [
        ("", {}, True),
        ("role=worker", {"role": "worker"}, True),
        ("role==worker", {"role": "db"}, False),
        ("role!=db", {}, True),
        ("env in (prod, staging),!canary", {"env": "prod"}, True),
        ("env in (prod, staging),!canary", {"env": "prod", "canary": "1"}, False),
        ("env notin (prod)", {"env": "dev"}, True),
        ("app.kubernetes.io/managed-by=Helm", {"app.kubernetes.io/managed-by": "Helm"}, True),
        ("team", {"team": ""}, True),
        ("team", {}, False),
    ],
)
def test_matching(selector: str, labels: dict, expected: bool) -> None:
    assert parse_label_selector(selector)(labels) is expected


@pytest.mark.parametrize("bad", ["role=", "=x", "a in ()", "a in (b", "role=wor ker", "a b c", "x=!y", "-bad=1"])
def test_malformed_selectors_are_refused(bad: str) -> None:
    if bad == "role=":  # an empty value is valid in Kubernetes ("role" set to "")
        assert parse_label_selector(bad)({"role": ""})
        return
    with pytest.raises(SelectorError, match="invalid label selector"):
        parse_label_selector(bad)
