"""Directory routing and validation, cluster configs, and the compose files (offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from proxies.directory import Directory
from sequencer.config import ClusterConfig
from sequencer.errors import ConfigError

COMPOSE = Path(__file__).resolve().parents[1] / "compose"


def _directory(ranges: list[dict]) -> Directory:
    shards = {"a": {"store": "postgres", "dsn": "x"}, "b": {"store": "cassandra"}}
    return Directory.from_dict({"shards": shards, "ranges": ranges})


def test_routing_by_range_and_ledger() -> None:
    d = _directory([
        {"first": 1, "last": 99, "ledgers": [1], "shards": ["a"]},
        {"first": 100, "last": 199, "ledgers": [2], "shards": ["b"]},
    ])
    assert d.account_shard(5) == "a" and d.account_shard(150) == "b"
    assert d.account_shard(200) is None and d.account_shard(0) is None
    assert d.admit_account(5, 1) is None
    assert "holds ledgers 1, not 2" in d.admit_account(5, 2)
    assert "in no directory range" in d.admit_account(500, 1)
    assert {d.transfer_shard(i) for i in range(10)} == {"a", "b"}


def test_spread_within_a_range() -> None:
    d = Directory.from_dict({
        "shards": {"a": {"store": "sqlite", "path": "a"}, "b": {"store": "sqlite", "path": "b"}},
        "ranges": [{"first": 1, "last": 1000, "shards": ["a", "b"]}],
    })
    assert {d.account_shard(i) for i in range(1, 11)} == {"a", "b"}


@pytest.mark.parametrize("ranges, message", [
    ([{"first": 1, "last": 10, "shards": ["a"]}, {"first": 5, "last": 20, "shards": ["b"]}], "overlap"),
    ([{"first": 1, "last": 10, "shards": ["a"]}, {"first": 12, "last": 20, "shards": ["b"]}], "ids 11..11 are in no range"),
    ([{"first": 1, "last": 10, "shards": ["zzz"]}], "unknown shard 'zzz'"),
    ([{"first": 10, "last": 1, "shards": ["a"]}], "1 <= first <= last"),
    ([], "no account ranges"),
    ([{"first": 1, "shards": ["a"]}], "malformed"),
])
def test_directory_errors_are_specific(ranges, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _directory(ranges)


def test_unknown_store_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown store 'mongo'"):
        Directory.from_dict({"shards": {"a": {"store": "mongo"}}, "ranges": [{"first": 1, "last": 2, "shards": ["a"]}]})


def test_topologies_load() -> None:
    compose_config = ClusterConfig.load(COMPOSE / "cluster.compose.toml")
    # The local twin has no [security]: `ordo up` generates the secrets per cluster.
    topology = tomllib.loads((COMPOSE / "ordo.toml").read_text())
    local_twin = ClusterConfig.from_dict({**topology, "security": {"api_keys_file": "keys.json"}}, COMPOSE)
    assert [n.id for n in compose_config.nodes] == [n.id for n in local_twin.nodes] == [1, 2, 3]
    assert {s.store for s in compose_config.directory.shards.values()} == {"postgres", "cassandra"}
    assert ({(n, s.store) for n, s in compose_config.directory.shards.items()}
            == {(n, s.store) for n, s in local_twin.directory.shards.items()})
    assert compose_config.directory.ranges == local_twin.directory.ranges


def _compose_without(*keys: str) -> dict:
    data = tomllib.loads((COMPOSE / "cluster.compose.toml").read_text())
    data["security"] = {k: v for k, v in data["security"].items() if k not in keys}
    return data


def test_exposed_raft_needs_the_cluster_secret() -> None:
    with pytest.raises(ConfigError, match="Raft addresses .* are not loopback.*secret_file"):
        ClusterConfig.from_dict(_compose_without("secret_file"), COMPOSE)


def test_exposed_http_needs_tls() -> None:
    with pytest.raises(ConfigError, match="HTTP addresses .* are not loopback.*TLS"):
        ClusterConfig.from_dict(_compose_without("tls_cert_file", "tls_key_file"), COMPOSE)


def test_api_keys_are_required() -> None:
    with pytest.raises(ConfigError, match="api_keys_file"):
        ClusterConfig.from_dict(_compose_without("api_keys_file"), COMPOSE)


def test_secrets_are_named_never_inlined() -> None:
    data = _compose_without()
    data["security"]["secret"] = "00" * 32
    with pytest.raises(ConfigError, match="never written in the config"):
        ClusterConfig.from_dict(data, COMPOSE)


def test_epoch_size_must_hold_the_largest_request() -> None:
    from sequencer import limits

    smallest = limits.request_bytes_max(limits.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX
    data = _compose_without()
    ClusterConfig.from_dict({**data, "log": {"epoch_bytes_max": smallest, "append_entries_batch_bytes": 2 * smallest}},
                            COMPOSE)
    with pytest.raises(ConfigError, match=f"use at least {smallest}"):
        ClusterConfig.from_dict(
            {**data, "log": {"epoch_bytes_max": smallest - 1, "append_entries_batch_bytes": 2 * smallest}}, COMPOSE)


def test_even_replica_count_is_refused(tmp_path) -> None:
    data = tomllib.loads((COMPOSE / "ordo.toml").read_text())
    data["nodes"] = data["nodes"][:2]
    with pytest.raises(ConfigError, match="odd number of at least 3"):
        ClusterConfig.from_dict(data, tmp_path)


def _check_jsonschema() -> str:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(exe).exists():
        pytest.fail("check-jsonschema is not installed; it is in the [test] extra")
    return exe


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = _validate(COMPOSE / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_catches_a_broken_file(tmp_path) -> None:
    broken = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    broken["services"]["executor"]["ports"] = {"not": "a list"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _validate(path).returncode != 0


def test_compose_matches_the_local_twin() -> None:
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = set(compose["services"])
    assert {"postgres", "cassandra", "sequencer-1", "sequencer-2", "sequencer-3", "executor"} <= services
