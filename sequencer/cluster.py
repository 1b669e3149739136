"""A local cluster: sequencer replicas and executors as child processes.

Owned here: spawning, killing and restarting ordo's processes on loopback
ports, for `ordo demo`, `ordo up` and the cluster tests.  Each process logs
to its own file under the cluster's data directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sequencer.config import ClusterConfig


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out; bound together so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_embedded_config(root: Path, shards: int = 2, replicas: int = 3, **sections) -> Path:
    """The embedded default: SQLite shard files under `root`, replicas on free ports."""
    ports = free_ports(2 * replicas)
    config = {
        "data_dir": str(root),
        "nodes": [
            {"id": i + 1, "raft": f"127.0.0.1:{ports[2 * i]}", "http": f"127.0.0.1:{ports[2 * i + 1]}"}
            for i in range(replicas)
        ],
        "directory": {
            "shards": {f"s{i}": {"store": "sqlite", "path": str(root / f"shard{i}.sqlite")} for i in range(shards)},
            "ranges": [{"first": 1, "last": 2**63 - 2, "shards": [f"s{i}" for i in range(shards)]}],
        },
        **sections,
    }
    path = root / "cluster.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class LocalCluster:
    config_path: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: dict[int, subprocess.Popen] = field(default_factory=dict)
    executors: dict[int, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = ClusterConfig.load(self.config_path)
        self.logs = self.config.data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.config.nodes]

    def _spawn(self, args: list[str], log_name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**os.environ, **self.env, **(extra_env or {})}
        out = open(self.logs / log_name, "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "sequencer.cli", *args, "--config", str(self.config_path)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def start_node(self, node_id: int) -> None:
        self.nodes[node_id] = self._spawn(["node", "--id", str(node_id)], f"node{node_id}.log")

    def start_executor(self, index: int = 0, extra_env: dict[str, str] | None = None) -> None:
        self.executors[index] = self._spawn(["executor"], f"executor{index}.log", extra_env)

    def start(self) -> None:
        for node in self.config.nodes:
            self.start_node(node.id)
        self.start_executor()

    def kill_node(self, node_id: int) -> None:
        _kill(self.nodes.pop(node_id))

    def kill_executor(self, index: int = 0) -> None:
        _kill(self.executors.pop(index))

    def node_of_url(self, url: str) -> int:
        for node in self.config.nodes:
            if node.url == url:
                return node.id
        raise KeyError(url)

    def check_alive(self) -> None:
        for label, procs in (("node", self.nodes), ("executor", self.executors)):
            for i, proc in procs.items():
                if proc.poll() is not None:
                    tail = (self.logs / f"{label}{i}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{label} {i} exited with {proc.returncode}; log tail:\n{tail}")

    def stop(self) -> None:
        procs = [*self.nodes.values(), *self.executors.values()]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc)
        self.nodes.clear()
        self.executors.clear()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
