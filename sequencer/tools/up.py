"""`ordo up`: a topology file and the real servers it needs, as local processes.

Owned here: turning a topology (`compose/ordo.toml`, the local twin of
`compose/docker-compose.yml`) into a running cluster against servers the
harness starts (`proxies/servers`), with secrets generated for it unless the
topology names its own.  Drives `LocalCluster` (`tools/cluster.py`); the
multi-store DvP demo that runs on the same topology is `tools/settlement.py`.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sequencer.tools.cluster import LocalCluster, free_ports, provision_security, save_config
from sequencer.config import ClusterConfig
from sequencer.errors import ConfigError

console = Console(highlight=False)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOPOLOGY = REPO / "compose" / "ordo.toml"


@dataclass
class Servers:
    """The real servers a topology needs, started by the shared harness."""

    postgres: Any = None
    cassandra: Any = None

    @classmethod
    def start_for(cls, topology: dict) -> Servers:
        from proxies.servers import CassandraServer, PostgresServer

        stores = {s["store"] for s in topology["directory"]["shards"].values()}
        servers = cls()
        try:
            # Cassandra boots slowly: launch it first and start PostgreSQL meanwhile.
            if "cassandra" in stores:
                servers.cassandra = CassandraServer.start(wait=False)
            if "postgres" in stores:
                servers.postgres = PostgresServer.start()
            if servers.cassandra is not None:
                servers.cassandra.wait_ready()
        except BaseException:
            servers.close()
            raise
        return servers

    def close(self) -> None:
        """Stop the servers and remove their temporary directories."""
        for server in (self.cassandra, self.postgres):
            if server is not None:
                server.close()


def load_topology(path: Path) -> dict:
    """A topology file, TOML or (by its .json suffix) JSON."""
    path = Path(path)
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"cannot read topology {path}: {exc}") from None


def resolve(topology: dict, servers: Servers, data_dir: Path, base: Path = REPO) -> Path:
    """Fill in ports (":0" means any free port), server addresses and secrets; write cluster.json.

    A topology without a `[security]` section gets a fresh cluster secret and
    API keys under `data_dir/secrets/`; one with it keeps its own, with its
    relative paths taken from the topology file's folder `base`.
    """
    config = copy.deepcopy(topology)
    config["data_dir"] = str(data_dir)
    if "security" in config:
        config["security"] = {k: str((base / v).resolve()) if k.endswith("_file") else v
                              for k, v in config["security"].items()}
    else:
        config["security"] = provision_security(data_dir)
    ports = iter(free_ports(2 * len(config["nodes"])))
    for node in config["nodes"]:
        for key in ("raft", "http"):
            host, port = node[key].rsplit(":", 1)
            node[key] = f"{host}:{next(ports) if port == '0' else port}"
    for name, shard in config["directory"]["shards"].items():
        if shard["store"] == "postgres" and "dsn" not in shard:
            database = shard.pop("database", "ordo")
            servers.postgres.create_database(database)
            shard["dsn"] = servers.postgres.dsn(database)
        elif shard["store"] == "cassandra" and "port" not in shard:
            shard["hosts"] = [servers.cassandra.host]
            shard["port"] = servers.cassandra.port
        elif shard["store"] == "sqlite" and not Path(shard["path"]).is_absolute():
            shard["path"] = str(data_dir / shard["path"])
    return save_config(data_dir, config)


def check_topology(topology: dict, base: Path) -> None:
    """Validate a topology as the cluster config it will become, before any server starts.

    Ports ":0" and the server addresses `resolve` fills in later get
    placeholders; everything else (nodes, directory, limits and their
    relations, security) is checked exactly as `ordo node` will check it.
    """
    config = copy.deepcopy(topology)
    config.setdefault("security", {"api_keys_file": "generated-at-start.json"})
    for shard in config.get("directory", {}).get("shards", {}).values():
        if isinstance(shard, dict) and shard.get("store") == "postgres" and "dsn" not in shard:
            shard.pop("database", None)
            shard["dsn"] = "postgresql://filled-in-at-start/db"
        elif isinstance(shard, dict) and shard.get("store") == "cassandra" and "port" not in shard:
            shard.update(hosts=["filled-in-at-start"], port=9042)
    ClusterConfig.from_dict(config, base)


def run_up(config_path: Path) -> int:
    """Start the servers and the cluster of a topology; run until SIGINT/SIGTERM.

    A throwaway run: its data directory (journals, shard files, logs, the
    generated keys) is removed when it stops, as are the servers' own.
    """
    topology = load_topology(config_path)
    check_topology(topology, Path(config_path).resolve().parent)
    data_dir = Path(tempfile.mkdtemp(prefix="ordo-up-"))
    servers = None
    cluster = None
    try:
        servers = Servers.start_for(topology)
        cluster = LocalCluster(resolve(topology, servers, data_dir, Path(config_path).resolve().parent))
        cluster.start()
        console.print(f"ordo is up: API on {', '.join(cluster.urls)}; config {cluster.config_path}; logs {cluster.logs}")
        security = cluster.config.security
        console.print(f"API keys: {security.api_keys_file} (hashes); executor key {security.executor_key_file}"
                      + (f"; operator key {security.api_keys_file.parent / 'operator.key'}"
                         if "security" not in topology else ""))
        console.print("stop with Ctrl-C")
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        try:
            while not stop["now"]:
                cluster.check_alive()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        if cluster is not None:
            cluster.stop()
        if servers is not None:
            servers.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        console.print(f"stopped; removed {data_dir} (ordo up keeps nothing between runs)")
