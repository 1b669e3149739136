"""A real single-node Apache Cassandra 5.0 on loopback, in a temporary directory.

Owned here: the JVM command line, the rendered cassandra.yaml and
logback.xml, starting, stopping (clean or killed) and restarting on the same
data directory and ports, and the readiness check.  Callers:
`proxies/servers/pytest_fixtures.py`, `python -m proxies.servers up`, and
tests that stop or kill the server to simulate an outage or a crash.

The server is `org.apache.cassandra:cassandra-all` from Maven Central (jars
cached by `install.cassandra_lib_dir`), started as
`java ... org.apache.cassandra.service.CassandraDaemon` on JDK 17 with the
module flags of Cassandra's conf/jvm17-server.options and the jamm agent.

    with CassandraServer.start() as cs:
        cluster = cs.cluster(); session = cluster.connect()
        cs.stop(); cs.restart()      # same data, same ports
        cs.kill(); cs.restart()      # a crash: the commitlog is replayed

A start costs about 8 CPU-seconds (5-8 s on an idle 2-core machine, more
on a busy one); the yaml and the -D properties below remove every wait that
only matters with peers, and QUICK_JIT_FLAGS most of the JIT's work.
"""

from __future__ import annotations

import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from proxies.servers import install
from proxies.servers.process import (
    HOST,
    ServerStartError,
    die_with_parent,
    free_ports,
    log_section,
    port_clash,
    say,
    signal_and_wait,
    tail,
    track,
    untrack,
    wait_for,
)

#: The newest 5.0.x on Maven Central when this was written; bump it here.
CASSANDRA_VERSION = "5.0.9"
CLUSTER_NAME = "ordo"
LOCAL_DC = "datacenter1"  # what SimpleSnitch calls the only datacenter
PROTOCOL_VERSION = 5  # Cassandra 5 speaks v3-v5; cassandra-driver 3.29+ speaks v5

#: 1 GiB holds the tests' data and 64 MiB memtables with room to spare.
HEAP_MAX = "1g"
#: Below HEAP_MAX on purpose: as root Cassandra mlockall()s every committed
#: page at start, and committing 1 GiB up front costs ~4 s of start-up.
HEAP_INITIAL = "256m"
START_TIMEOUT_S_DEFAULT = 180.0  # 5-8 s normally; CI machines can be far slower
STOP_GRACE_S_DEFAULT = 30.0  # a clean stop flushes memtables: ~3 s here
KILL_WAIT_S = 10.0
READY_POLL_S = 0.25
CQL_CHECK_TIMEOUT_S = 10.0  # one readiness query; the server is local
PORT_CLASH_RETRIES = 3  # another process took a port between our check and the bind

#: From Cassandra 5.0's conf/jvm17-server.options ("JPMS" section): the JDK
#: internals Cassandra, jamm and netty reach into.
JDK17_MODULE_FLAGS = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    # Same file, "Netty Options": direct buffers through Unsafe, 4.1.75 defaults.
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

#: G1 as in jvm17-server.options, minus G1HeapRegionSize=16m (meant for big
#: heaps: it would cut a 1 GiB heap into only 64 regions).
JVM_FLAGS = (
    f"-Xms{HEAP_INITIAL}", f"-Xmx{HEAP_MAX}", "-Xss256k",
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300",
    "-XX:+ExitOnOutOfMemoryError",  # a half-dead node is worse than a dead one
    "-XX:+PerfDisableSharedMem",  # no hsperfdata files in /tmp
    "-Djava.net.preferIPv4Stack=true",
)

#: C1 only: the C2 compiler spends ~4 of the ~13 CPU-seconds a start costs,
#: on code that a test run leaves before it pays back (measured on 2 cores:
#: 12.8 -> 8.4 CPU-s per start).  Benchmarks pass quick_jit=False for C2's
#: faster steady state.
QUICK_JIT_FLAGS = ("-XX:TieredStopAtLevel=1",)

#: Waits that exist for the sake of peers.  A single node has none.
FAST_START_PROPERTIES = {
    "cassandra.skip_wait_for_gossip_to_settle": "0",
    "cassandra.ring_delay_ms": "0",
    "cassandra.superuser_setup_delay_ms": "0",
    "cassandra.shutdown_announce_in_ms": "0",  # saves 2 s on every stop
}

#: cassandra.yaml lines per `commitlog_sync` mode.  The commitlog reader
#: replays a segment only up to its last sync marker, so in `periodic` mode a
#: SIGKILL loses the writes acknowledged since the last sync (up to the
#: period), page cache or not.  `batch` acknowledges a write only after its
#: fsync (concurrent writes share one), so `kill()` loses nothing; it is the
#: default because the fault tests kill the node and count what survived.
#: `periodic` is for benchmarks that never kill it.
COMMITLOG_SYNC_MODES = {
    "batch": "commitlog_sync: batch",
    "periodic": "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms",
}

_DIRS = ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "triggers", "logs", "tmp", "conf")


class CassandraServer:
    """One single-node Cassandra: its directory, ports and JVM."""

    host = HOST

    def __init__(self, root: Path, version: str, lib: Path, java: Path, keep: bool,
                 commitlog_sync: str = "batch", quick_jit: bool = True) -> None:
        self.commitlog_sync = commitlog_sync
        self.quick_jit = quick_jit
        self.root = root
        self.version = version
        self.lib = lib
        self.java = java
        self.keep = keep
        self.port = 0  # CQL (native transport)
        self.storage_port = 0  # inter-node messaging; bound even with one node
        self.log_path = root / "logs" / "system.log"
        self.stdout_path = root / "logs" / "stdout.log"
        self.release_version: str | None = None
        self._proc: subprocess.Popen | None = None
        self._launched_at = 0.0
        self._ever_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"CassandraServer({self.host}:{self.port}, {self.root})"

    # -------------------------------------------------------------- public API

    @classmethod
    def start(cls, *, keep: bool = False, timeout_s: float = START_TIMEOUT_S_DEFAULT, wait: bool = True,
              version: str = CASSANDRA_VERSION, commitlog_sync: str = "batch",
              quick_jit: bool = True) -> CassandraServer:
        """Start a fresh node in a temporary directory on free loopback ports.

        `commitlog_sync` is "batch" (an acknowledged write survives `kill()`)
        or "periodic" (faster writes; a kill loses the last 10 s of them).
        `quick_jit=False` turns the C2 compiler back on: slower start, faster
        steady state (benchmarks).

        `wait=False` returns as soon as the JVM is launched, so a caller can
        start other things meanwhile; it must then call `wait_ready()`.
        `keep=True` leaves the directory behind on `close()`.
        """
        if commitlog_sync not in COMMITLOG_SYNC_MODES:
            raise ValueError(f"commitlog_sync must be one of {sorted(COMMITLOG_SYNC_MODES)}, not {commitlog_sync!r}")
        java = install.java17()
        lib = install.cassandra_lib_dir(version)
        server = cls(Path(tempfile.mkdtemp(prefix="ordo-cassandra-")), version, lib, java, keep, commitlog_sync,
                     quick_jit)
        track(server)
        try:
            server._fresh_ports_and_dirs()
            server._launch()
            if wait:
                server.wait_ready(timeout_s)
        except BaseException:
            server.close()
            raise
        return server

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> None:
        """Block until CQL answers `SELECT release_version FROM system.local`."""
        for attempt in range(1, PORT_CLASH_RETRIES + 1):
            try:
                self._wait_cql(timeout_s)
                return
            except ServerStartError:
                clash = port_clash(tail(self.log_path)) or port_clash(tail(self.stdout_path))
                if self._ever_ready or attempt == PORT_CLASH_RETRIES or not clash:
                    raise
                say(f"cassandra lost port {self.port} or {self.storage_port} to another process; trying others")
                self._fresh_ports_and_dirs()
                self._launch()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    def cluster(self, **options: Any):
        """A `cassandra.cluster.Cluster` for this node (not yet connected); the caller shuts it down."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy

        options.setdefault("protocol_version", PROTOCOL_VERSION)
        if "load_balancing_policy" not in options:  # the driver refuses legacy options mixed with profiles
            profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=LOCAL_DC))
            options.setdefault("execution_profiles", {EXEC_PROFILE_DEFAULT: profile})
        return Cluster([self.host], port=self.port, **options)

    def stop(self, timeout_s: float = STOP_GRACE_S_DEFAULT) -> None:
        """SIGTERM (Cassandra drains and flushes), then SIGKILL after `timeout_s`.  Data stays."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        started = time.monotonic()
        clean = signal_and_wait(proc, signal.SIGTERM, timeout_s)
        if not clean:
            say(f"cassandra on port {self.port} still up {timeout_s:.0f} s after SIGTERM; sending SIGKILL")
            signal_and_wait(proc, signal.SIGKILL, KILL_WAIT_S)
        self._proc = None
        say(f"cassandra on {self.host}:{self.port} stopped in {time.monotonic() - started:.1f} s")

    def kill(self) -> None:
        """SIGKILL, as in a crash; the next start replays the commitlog.

        With commitlog_sync="batch" every acknowledged write survives; with
        "periodic" those of the last 10 s may not.
        """
        if self._proc is not None:
            signal_and_wait(self._proc, signal.SIGKILL, KILL_WAIT_S)
            say(f"cassandra on {self.host}:{self.port} killed")
        self._proc = None

    def restart(self, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> None:
        """Stop if running, then start again on the same data directory and ports."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; start a new one")
        self.stop()
        self._launch()
        self._wait_cql(timeout_s)

    def ensure_running(self, timeout_s: float = START_TIMEOUT_S_DEFAULT) -> None:
        """Start the node again if a test stopped it and did not restart it."""
        if not self.running:
            self.restart(timeout_s)

    def close(self) -> None:
        """Stop the node and delete its directory (unless started with keep=True).  Idempotent."""
        if self._closed:
            return
        try:
            if self.keep:
                self.stop()
            else:  # the data is about to be deleted: a clean shutdown would only flush it first
                self.kill()
        finally:
            self._closed = True
            untrack(self)
            if self.keep:
                say(f"kept cassandra directory {self.root}")
            else:
                shutil.rmtree(self.root, ignore_errors=True)

    def to_dict(self) -> dict[str, Any]:
        """Where to reach the node, for another process (see `python -m proxies.servers up`)."""
        return {"host": self.host, "port": self.port, "storage_port": self.storage_port,
                "local_dc": LOCAL_DC, "protocol_version": PROTOCOL_VERSION, "version": self.version,
                "commitlog_sync": self.commitlog_sync, "quick_jit": self.quick_jit,
                "data_dir": str(self.root / "data"), "log": str(self.log_path), "pid": self.pid}

    def __enter__(self) -> CassandraServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- internals

    def _fresh_ports_and_dirs(self) -> None:
        """Empty directories and new ports; only before the node has ever started."""
        for name in _DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir(parents=True)
        self.port, self.storage_port = free_ports(2)
        values = {"host": self.host, "root": str(self.root), "cluster_name": CLUSTER_NAME,
                  "native_port": self.port, "storage_port": self.storage_port, "log_path": str(self.log_path),
                  "commitlog_sync": COMMITLOG_SYNC_MODES[self.commitlog_sync]}
        for name in ("cassandra.yaml", "logback.xml"):
            template = string.Template(resources.files("proxies.servers").joinpath(name).read_text())
            (self.root / "conf" / name).write_text(template.substitute(values))

    def _command(self) -> list[str]:
        jamm = sorted(self.lib.glob("jamm-*.jar"))
        if not jamm:
            raise ServerStartError(f"no jamm jar in {self.lib}; delete {self.lib.parent} to fetch again")
        properties = {
            "cassandra-foreground": "yes",  # keep stdout/stderr open: JVM errors land in stdout.log
            "cassandra.config": (self.root / "conf" / "cassandra.yaml").as_uri(),
            "cassandra.storagedir": str(self.root),
            "cassandra.logdir": str(self.root / "logs"),
            "cassandra.triggers_dir": str(self.root / "triggers"),
            "logback.configurationFile": (self.root / "conf" / "logback.xml").as_uri(),
            "java.io.tmpdir": str(self.root / "tmp"),  # netty unpacks its native library here
            **FAST_START_PROPERTIES,
        }
        jit = QUICK_JIT_FLAGS if self.quick_jit else ()
        return [str(self.java), "-cp", f"{self.lib}/*", *JVM_FLAGS, *jit, f"-javaagent:{jamm[-1]}",
                *JDK17_MODULE_FLAGS, *(f"-D{k}={v}" for k, v in properties.items()),
                "org.apache.cassandra.service.CassandraDaemon"]

    def _launch(self) -> None:
        self._launched_at = time.monotonic()
        with open(self.stdout_path, "ab") as out:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                self._command(), cwd=self.root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not the JVM's
                preexec_fn=die_with_parent(signal.SIGTERM))

    def _wait_cql(self, timeout_s: float) -> None:
        verb = "restarted" if self._ever_ready else "started"
        try:
            wait_for(self._cql_answers, timeout_s=timeout_s, interval_s=READY_POLL_S, died=self._exit_reason,
                     what=f"cassandra on {self.host}:{self.port} (CQL)")
        except ServerStartError as e:
            self.kill()
            raise ServerStartError(f"{e}{log_section('the cassandra log', self.log_path)}"
                                   f"{log_section('the JVM output', self.stdout_path, 15)}") from None
        self._ever_ready = True
        say(f"cassandra {self.release_version} {verb} on {self.host}:{self.port} "
            f"in {time.monotonic() - self._launched_at:.1f} s")

    def _exit_reason(self) -> str | None:
        code = self._proc.poll() if self._proc else None
        return None if code is None else f"cassandra exited with {code} while starting on port {self.port}"

    def _cql_answers(self) -> bool:
        try:  # a plain TCP probe first: the driver logs a warning for every refused connection
            socket.create_connection((self.host, self.port), timeout=1.0).close()
        except OSError:
            return False
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable

        cluster = self.cluster(connect_timeout=CQL_CHECK_TIMEOUT_S, control_connection_timeout=CQL_CHECK_TIMEOUT_S)
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local", timeout=CQL_CHECK_TIMEOUT_S).one()
        except (NoHostAvailable, DriverException, OSError):
            return False
        finally:
            cluster.shutdown()
        self.release_version = row.release_version
        return True
