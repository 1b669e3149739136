"""A local cluster: sequencer replicas and executors as child processes.

Owned here: spawning, killing and restarting ordo's processes on loopback
ports, for `ordo demo`, `ordo up` and the cluster tests.  Each process logs
to its own file under the cluster's data directory.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sequencer.config import ClusterConfig
from sequencer.security import Scope, new_key, write_keys_file, write_secret

#: Where `provision_security` writes a cluster's secrets, under its data dir.
SECRETS_DIR = "secrets"
OPERATOR_KEY_FILE = "operator.key"


def provision_security(root: Path, tls_hosts: list[str] | None = None, folder: Path | None = None) -> dict[str, str]:
    """A fresh cluster secret and API keys under `root/secrets/`, each file 0600.

    Writes `cluster.secret` (hex), `api_keys.json` (hashes only),
    `executor.key` (the replica-scope token the executor and `ordo verify`
    use) and `operator.key` (an operator token for the demo, the bench and
    the tests).  With `tls_hosts`, also a private CA and a server
    certificate for those names (`ca.pem`, `server.pem`, `server.key`).
    Returns the `[security]` section that names them.
    """
    folder = folder or root / SECRETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    write_secret(folder / "cluster.secret", secrets.token_hex(32))
    operator_token, operator = new_key(Scope.OPERATOR, label="generated operator key")
    executor_token, executor = new_key(Scope.REPLICA, label="generated executor key")
    write_keys_file(folder / "api_keys.json", [operator, executor])
    write_secret(folder / "executor.key", executor_token)
    write_secret(folder / OPERATOR_KEY_FILE, operator_token)
    section = {
        "secret_file": str(folder / "cluster.secret"),
        "api_keys_file": str(folder / "api_keys.json"),
        "executor_key_file": str(folder / "executor.key"),
    }
    if tls_hosts:
        write_tls_files(folder, tls_hosts)
        section.update(tls_cert_file=str(folder / "server.pem"), tls_key_file=str(folder / "server.key"),
                       tls_ca_file=str(folder / "ca.pem"))
    return section


def write_tls_files(folder: Path, hosts: list[str], days: int = 365) -> None:
    """A private CA (`ca.pem`) and a server certificate for `hosts` signed by it.

    For clusters without a PKI of their own: clients trust `ca.pem`.  The CA's
    key is not kept, so nothing else can ever be signed with it.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ordo cluster CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    write_secret(folder / "server.key", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode().strip())


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


def write_cluster_config(
    root: Path, shards: dict[str, dict], replicas: int = 3, tls: bool = False, security: dict | None = None,
    **sections,
) -> Path:
    """A loopback cluster over `shards` (one range over every id): replicas on free ports,
    fresh secrets and keys (`provision_security`, with a TLS certificate for
    127.0.0.1 when `tls`; `security` overrides keys of that section), written
    to `root/cluster.json`.  The one writer of local cluster configs (the
    demo, the bench and the tests); `ordo up` fills in a topology instead.
    """
    ports = free_ports(2 * replicas)
    config = {
        "data_dir": str(root),
        "nodes": [
            {"id": i + 1, "raft": f"127.0.0.1:{ports[2 * i]}", "http": f"127.0.0.1:{ports[2 * i + 1]}"}
            for i in range(replicas)
        ],
        "directory": {"shards": shards, "ranges": [{"first": 1, "last": 2**63 - 2, "shards": sorted(shards)}]},
        "security": {**provision_security(root, ["127.0.0.1", "localhost"] if tls else None), **(security or {})},
        **sections,
    }
    return save_config(root, config)


def save_config(root: Path, config: dict) -> Path:
    """Write `root/cluster.json`, the file every process of the cluster reads: the one place configs are written."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cluster.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_embedded_config(root: Path, shards: int = 2, **options) -> Path:
    """The embedded default: SQLite shard files under `root` (see `write_cluster_config`)."""
    files = {f"s{i}": {"store": "sqlite", "path": str(root / f"shard{i}.sqlite")} for i in range(shards)}
    return write_cluster_config(root, files, **options)


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

    @property
    def operator_token(self) -> str:
        """The operator key `provision_security` wrote for this cluster."""
        path = self.config.data_dir / SECRETS_DIR / OPERATOR_KEY_FILE
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"this cluster has no generated operator key at {path}: {exc.strerror}") from None

    def client(self, seed: int = 0, token: str | None = None):
        """An OrdoClient for this cluster, with the operator key unless told otherwise."""
        from sequencer.client import OrdoClient

        return OrdoClient(self.urls, seed=seed, token=token or self.operator_token,
                          ssl=self.config.security.client_ssl())

    def _spawn(self, args: list[str], log_name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {**os.environ, **self.env, **(extra_env or {})}
        out = open(self.logs / log_name, "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "sequencer.tools.cli", *args, "--config", str(self.config_path)],
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
