"""The cluster registry: validated on parse, errors name the field."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kube_maintenance.core.registry import SYSTEM_NAMESPACES, RegistryError, load_registry, parse_registry

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "version": 1,
    "clusters": [
        {
            "name": "staging",
            "kubernetes_conn_id": "k8s_staging",
            "aws_conn_id": "aws_staging",
            "region": "eu-west-1",
            "timezone": "Europe/London",
            "maintenance_window": {"days": ["tue"], "start": "23:00", "duration_minutes": 120},
            "protected_namespaces": ["monitoring"],
            "operations": {"node_replacement": {"scheduled": True}},
        }
    ],
}


def broken(path: str, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    target = data["clusters"][0]
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


def test_the_shipped_registries_are_valid() -> None:
    assert [c.name for c in load_registry(REPO / "config" / "clusters.yaml").clusters] == ["staging", "production"]
    assert [c.name for c in load_registry(REPO / "config" / "clusters.sandbox.json").clusters] == ["staging", "production"]


def test_system_namespaces_are_always_protected() -> None:
    cluster = parse_registry(GOOD).clusters[0]
    assert cluster.protected_namespaces[: len(SYSTEM_NAMESPACES)] == SYSTEM_NAMESPACES
    assert "monitoring" in cluster.protected_namespaces


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("timezone", "Mars/Olympus", "clusters[0] (staging).timezone: unknown timezone 'Mars/Olympus'"),
        ("maintenance_window.start", "25:00", "maintenance_window.start: expected HH:MM"),
        ("maintenance_window.days", ["someday"], "maintenance_window.days"),
        ("maintenance_window.duration_minutes", 0, "maintenance_window.duration_minutes: expected 1..1440"),
        ("kubernetes_conn_id", KeyError, "kubernetes_conn_id: required"),
        ("region", KeyError, "region: required when aws_conn_id is set"),
        ("name", "Bad Name", "clusters[0].name"),
        ("operations", {"reboot_everything": {}}, "operations.reboot_everything: unknown operation"),
        ("operations", {"rollout_restart": {"poke_interval_seconds": 900}}, "operations.rollout_restart.poke_interval_seconds: expected a number of seconds above 0 and at most 200"),
        ("operations", {"node_replacement": {"poke_interval_seconds": "15s"}}, "operations.node_replacement.poke_interval_seconds: expected a number"),
    ],
)
def test_errors_name_the_bad_field(path: str, value: object, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_registry(broken(path, value))
    assert message in str(err.value)


def test_duplicate_names_and_unknown_cluster() -> None:
    data = copy.deepcopy(GOOD)
    data["clusters"].append(copy.deepcopy(data["clusters"][0]))
    with pytest.raises(RegistryError, match="duplicate cluster name 'staging'"):
        parse_registry(data)
    with pytest.raises(RegistryError, match="unknown cluster 'prod'.*staging"):
        parse_registry(GOOD).cluster("prod")


def test_unsupported_version_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="version"):
        parse_registry({**GOOD, "version": 2})
    with pytest.raises(RegistryError, match="cannot read the cluster registry"):
        load_registry(tmp_path / "missing.yaml")
    bad = tmp_path / "r.json"
    bad.write_text("{")
    with pytest.raises(RegistryError, match="invalid JSON"):
        load_registry(bad)
    good = tmp_path / "r2.json"
    good.write_text(json.dumps(GOOD))
    assert load_registry(good).clusters[0].window.cron == "0 23 * * 2"


def test_a_task_for_a_cluster_the_registry_no_longer_lists_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kube_maintenance.core.runtime import runtime_for

    path = tmp_path / "clusters.json"
    path.write_text(json.dumps(GOOD))
    monkeypatch.setenv("KUBE_MAINTENANCE_REGISTRY", str(path))
    assert runtime_for("staging", {}, dry_run=True).cluster.kubernetes_conn_id == "k8s_staging"
    with pytest.raises(RegistryError, match=r"unknown cluster 'prod'; the registry .*clusters.json lists: staging"):
        runtime_for("prod", {}, dry_run=True)


def eks_entry(**changes: object) -> dict:
    data = copy.deepcopy(GOOD)
    entry = data["clusters"][0]
    del entry["kubernetes_conn_id"]
    entry["eks_cluster_name"] = "staging-eu"
    for key, value in changes.items():
        if value is KeyError:
            entry.pop(key, None)
        else:
            entry[key] = value
    return data


def test_an_eks_cluster_is_reached_through_its_aws_connection() -> None:
    cluster = parse_registry(eks_entry()).clusters[0]
    assert (cluster.eks_cluster_name, cluster.aws_conn_id, cluster.region, cluster.kubernetes_conn_id) == ("staging-eu", "aws_staging", "eu-west-1", None)
    assert parse_registry(GOOD).clusters[0].eks_cluster_name is None


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"aws_conn_id": KeyError}, "clusters[0] (staging).aws_conn_id: required with eks_cluster_name"),
        ({"region": KeyError}, "clusters[0] (staging).region: required when aws_conn_id is set"),
        ({"kubernetes_conn_id": "k8s_staging"}, "clusters[0] (staging): set either kubernetes_conn_id (a kubernetes connection) or eks_cluster_name"),
        ({"eks_cluster_name": "-bad name"}, "clusters[0] (staging).eks_cluster_name: expected an EKS cluster name"),
        ({"eks_cluster_name": 7}, "clusters[0] (staging).eks_cluster_name: expected an EKS cluster name"),
    ],
)
def test_eks_entries_are_validated(changes: dict, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_registry(eks_entry(**changes))
    assert message in str(err.value)


def test_a_cluster_needs_one_way_in() -> None:
    with pytest.raises(RegistryError, match=r"clusters\[0\] \(staging\)\.kubernetes_conn_id: required \(or eks_cluster_name"):
        parse_registry(broken("kubernetes_conn_id", KeyError))


def test_a_yaml_registry_is_read_by_libyaml_with_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every DAG file reads the registry at each parse: PyYAML's pure-Python loader took 5 ms for 10
    # clusters, libyaml's well under 1 ms. Same safe subset, same values.
    import yaml

    if not yaml.__with_libyaml__:
        pytest.skip("this PyYAML is built without libyaml")
    shipped = REPO / "config" / "clusters.yaml"
    expected = parse_registry(yaml.load(shipped.read_text(), Loader=yaml.SafeLoader), str(shipped))

    class PurePythonLoader(yaml.SafeLoader):
        def __init__(self, stream: object) -> None:
            raise AssertionError("the registry was read by PyYAML's pure-Python loader")

    monkeypatch.setattr(yaml, "SafeLoader", PurePythonLoader)
    assert load_registry(shipped) == expected
    bad = tmp_path / "r.yaml"
    bad.write_text("clusters: [unclosed\n")
    with pytest.raises(RegistryError, match="invalid YAML"):
        load_registry(bad)
