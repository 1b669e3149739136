"""Cluster configuration: replicas, limits and the directory, from one file.

Owned here: loading and cross-checking every limit (STYLE 5).  The same
format is written by `ordo demo` (JSON) and by hand for `ordo up` (TOML, see
`compose/ordo.toml`).  Every process of a cluster reads the same file.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxies.directory import Directory
from sequencer.errors import ConfigError
from sequencer.log import LogConfig
from sequencer import wire


@dataclass(frozen=True)
class NodeSpec:
    id: int
    raft: str  # host:port of pysyncobj
    http: str  # host:port of the API

    @property
    def url(self) -> str:
        return f"http://{self.http}"


@dataclass(frozen=True)
class SequencerConfig:
    #: Calvin's epoch length.
    epoch_ms: int = 10
    #: Requests waiting for the sequencer, per leader.  At 128 events each
    #: this is ~32k intents, about a second of peak load: enough to absorb a
    #: burst, small enough that a 429 tells clients to back off early.
    queue_batches_max: int = 256
    #: How long a request waits for its epoch to commit and apply before the
    #: API gives up with 504 (the intent may still apply: retry with the same id).
    ack_timeout_ms: int = 30_000
    #: A client's `after=` HLC may be at most this far ahead of ours.
    max_offset_ms: int = 500


@dataclass(frozen=True)
class ClusterConfig:
    nodes: list[NodeSpec]
    data_dir: Path
    directory: Directory
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def node(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(f"no node with id {node_id}; configured: {[n.id for n in self.nodes]}")

    def check(self) -> None:
        self.log.check()
        if len(self.nodes) < 3 or len(self.nodes) % 2 == 0:
            raise ConfigError(f"a sequencer group needs an odd number of at least 3 replicas, not {len(self.nodes)}")
        # A full batch must fit one epoch with room to spare (see wire.BATCH_EVENTS_MAX).
        if wire.BATCH_EVENTS_MAX * 40 * 2 > self.log.epoch_bytes_max:
            raise ConfigError("epoch_bytes_max must hold two full batches of BATCH_EVENTS_MAX intents")
        if not 1 <= self.sequencer.epoch_ms * 10 <= self.log.election_timeout_ms_min:
            raise ConfigError("epoch_ms must be at most a tenth of the election timeout")

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path) -> ClusterConfig:
        try:
            nodes = [NodeSpec(int(n["id"]), str(n["raft"]), str(n["http"])) for n in data["nodes"]]
            config = cls(
                nodes=nodes,
                data_dir=(base / data.get("data_dir", "data")).resolve(),
                directory=Directory.from_dict(data["directory"]),
                sequencer=SequencerConfig(**data.get("sequencer", {})),
                log=LogConfig(**data.get("log", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed cluster configuration ({type(exc).__name__}: {exc})") from exc
        config.check()
        return config

    @classmethod
    def load(cls, path: str | Path) -> ClusterConfig:
        path = Path(path)
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read cluster configuration {path}: {exc}") from exc
        return cls.from_dict(data, path.parent)
