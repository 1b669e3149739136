"""Cluster configuration: replicas, limits and the directory, from one file.

Role: configuration, read by every driver; limits and relations from `limits.py`.

Owned here: loading and cross-checking every limit (STYLE 5).  The same
format is written by `ordo demo` (JSON) and by hand for `ordo up` (TOML, see
`compose/ordo.toml`).  Every process of a cluster reads the same file.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxies.directory import Directory
from sequencer.errors import ConfigError
from sequencer.log import LogConfig
from sequencer import limits
from sequencer.security import KeyRing, SecretSource, load_cluster_secret


def _refuse_unknown(where: str, data: dict, known: set[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of keys, not {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; the keys are {sorted(known)}")


@dataclass(frozen=True)
class NodeSpec:
    id: int
    raft: str  # host:port of pysyncobj; it binds exactly this address
    http: str  # host:port of the API; it binds exactly this address
    scheme: str = "http"  # "https" when [security] names a TLS certificate

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.http}"


def is_loopback(host_port: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': traffic that never leaves this machine."""
    host = host_port.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from the network


@dataclass(frozen=True)
class SecurityConfig:
    """Where the secrets live (files or environment variables, never this text) and TLS.

    * `secret_file` / `secret_env`: the cluster secret (hex).  Replicas derive
      pysyncobj's password from it, and replicas and executors the log
      digest key.  Required as soon as any Raft address is not loopback.
    * `api_keys_file`: the hashed API keys (`ordo keys create` adds one).
    * `executor_key_file` / `executor_key_env`: the replica-scope token the
      executor and `ordo verify` present to `/v1/log`.
    * `tls_cert_file`, `tls_key_file`: serve HTTPS.  Required as soon as any
      HTTP address is not loopback.  `tls_ca_file`: what clients inside the
      cluster (the executor, `ordo verify`, the demo) trust.
    """

    secret_file: Path | None = None
    secret_env: str | None = None
    api_keys_file: Path | None = None
    executor_key_file: Path | None = None
    executor_key_env: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path) -> SecurityConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown [security] keys {unknown}; the keys are {sorted(known)} (secrets are "
                              f"named by a *_file or *_env key, never written in the config)")
        paths = {k: (base / v).resolve() for k, v in data.items() if k.endswith("_file")}
        return cls(**{**data, **paths})

    @property
    def secret(self) -> SecretSource:
        return SecretSource(self.secret_file, self.secret_env)

    @property
    def executor_key(self) -> SecretSource:
        return SecretSource(self.executor_key_file, self.executor_key_env)

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def check(self, nodes: list[NodeSpec]) -> None:
        if self.secret_file is not None and self.secret_env is not None:
            raise ConfigError("[security] names both secret_file and secret_env; keep one")
        if self.api_keys_file is None:
            raise ConfigError("[security] must name api_keys_file: every API request needs a key "
                              "(ordo demo and ordo up make one; see README, Security model)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("[security] needs both tls_cert_file and tls_key_file, or neither")
        exposed_raft = [n.raft for n in nodes if not is_loopback(n.raft)]
        if exposed_raft and not self.secret.configured:
            raise ConfigError(f"Raft addresses {exposed_raft} are not loopback, so replicas must authenticate: "
                              f"set [security] secret_file or secret_env to the cluster secret")
        exposed_http = [n.http for n in nodes if not is_loopback(n.http)]
        if exposed_http and not self.tls:
            raise ConfigError(f"HTTP addresses {exposed_http} are not loopback, so the API must use TLS: "
                              f"set [security] tls_cert_file and tls_key_file (plain HTTP is for loopback only)")

    def cluster_secret(self) -> bytes | None:
        return load_cluster_secret(self.secret) if self.secret.configured else None

    def key_ring(self) -> KeyRing:
        return KeyRing.load(self.api_keys_file)

    def server_ssl(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate {self.tls_cert_file} and key "
                              f"{self.tls_key_file}: {exc}") from None
        return context

    def client_ssl(self) -> ssl.SSLContext | None:
        """What in-cluster clients trust: the configured CA, else the system's."""
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS CA file {self.tls_ca_file}: {exc}") from None


@dataclass(frozen=True)
class SequencerConfig:
    """`[sequencer]`; defaults and reasons in `sequencer/limits.py`."""

    epoch_ms: int = limits.EPOCH_MS
    queue_batches_max: int = limits.QUEUE_BATCHES_MAX
    ack_timeout_ms: int = limits.ACK_TIMEOUT_MS
    max_offset_ms: int = limits.MAX_OFFSET_MS


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP edge's deadlines and connection cap (defaults and reasons: `sequencer/limits.py`)."""

    header_read_timeout_ms: int = limits.HEADER_READ_TIMEOUT_MS
    body_read_timeout_ms: int = limits.BODY_READ_TIMEOUT_MS
    idle_timeout_ms: int = limits.IDLE_TIMEOUT_MS
    connections_max: int = limits.CONNECTIONS_MAX

    def check(self) -> None:
        for name in ("header_read_timeout_ms", "body_read_timeout_ms", "idle_timeout_ms", "connections_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[http] {name} must be at least 1, not {getattr(self, name)}")
        limits.check_http(self.header_read_timeout_ms, self.idle_timeout_ms)


@dataclass(frozen=True)
class ClusterConfig:
    nodes: list[NodeSpec]
    data_dir: Path
    directory: Directory
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def node(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(f"no node with id {node_id}; configured: {[n.id for n in self.nodes]}")

    def check(self) -> None:
        self.log.check()
        if len(self.nodes) < 3 or len(self.nodes) % 2 == 0:
            raise ConfigError(f"a sequencer group needs an odd number of at least 3 replicas, not {len(self.nodes)}")
        limits.check_request_fits(self.log.epoch_bytes_max)
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"node ids must be distinct, not {ids}")
        addresses = [a for n in self.nodes for a in (n.raft, n.http)]
        reused = sorted({a for a in addresses if addresses.count(a) > 1 and not a.endswith(":0")})
        if reused:
            raise ConfigError(f"each node needs its own Raft and HTTP address; {reused} appear more than once")
        self.security.check(self.nodes)
        self.http.check()
        limits.check_epoch_ms(self.sequencer.epoch_ms, self.log.election_timeout_ms_min)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path) -> ClusterConfig:
        _refuse_unknown("the configuration", data, {"nodes", "data_dir", "directory", "sequencer", "log", "security", "http"})
        for required in ("nodes", "directory"):
            if required not in data:
                raise ConfigError(f"the configuration has no [{required}] section; see compose/ordo.toml for one "
                                  f"that works")
        for name, kind in (("sequencer", SequencerConfig), ("log", LogConfig), ("http", HttpConfig)):
            _refuse_unknown(f"[{name}]", data.get(name, {}), set(kind.__dataclass_fields__))
        try:
            security = SecurityConfig.from_dict(data.get("security", {}), base)
            scheme = "https" if security.tls else "http"
            nodes = [NodeSpec(int(n["id"]), str(n["raft"]), str(n["http"]), scheme) for n in data["nodes"]]
            config = cls(
                nodes=nodes,
                data_dir=(base / data.get("data_dir", "data")).resolve(),
                directory=Directory.from_dict(data["directory"]),
                sequencer=SequencerConfig(**data.get("sequencer", {})),
                log=LogConfig(**data.get("log", {})),
                security=security,
                http=HttpConfig(**data.get("http", {})),
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
