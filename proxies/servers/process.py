"""Child-process plumbing shared by the local server harness.

Owned here: the `[ordo]` progress lines, free loopback ports, log tails for
error messages, tying a server's life to the process that started it, and the
safety net that stops servers a caller forgot.  Callers:
`proxies/servers/postgres.py` and `proxies/servers/cassandra.py` only.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

HOST = "127.0.0.1"

#: Ports are drawn from [PORT_MIN, start of the kernel's ephemeral range).  An
#: outgoing connection may take any ephemeral port at any moment, and a server
#: that is stopped and restarted must get its old port back.  20000 stays clear
#: of the well-known ports of the real services (5432, 7000, 9042).
PORT_MIN = 20000
#: Below this many candidate ports the range is useless; fall back to 1024+.
PORT_RANGE_SIZE_MIN = 1000
#: Random draws before giving up: thousands of free ports make a miss rare.
PORT_DRAWS_MAX = 200
#: Lines of a server log quoted in an error: room for a Java exception and
#: the few lines before it, short enough to read in a CI log.
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES_MAX = 64 * 1024  # read at most this much from the end of a log

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_ports_given: set[int] = set()  # never hand out a port twice in one process
_ports_lock = threading.Lock()
#: Not the `random` module's shared generator: a test that seeds it (to
#: reproduce a run) would make every process draw the same ports.
_port_rng = random.SystemRandom()


class ServerStartError(RuntimeError):
    """A server did not come up.  The message says which, what was waited for, and ends with its log."""


class InstallError(RuntimeError):
    """Something a server needs is missing and could not be installed.  The message says what to run."""


def say(message: str) -> None:
    """One progress line on stderr, flushed, so it shows under CI and `pytest -s`."""
    print(f"[ordo] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ ports


def _port_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - PORT_MIN >= PORT_RANGE_SIZE_MIN:
        return PORT_MIN, low - 1
    if 65535 - high >= PORT_RANGE_SIZE_MIN:
        return high + 1, 65535
    return 1024, 65535


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that nothing listens on right now.

    Another process may still take one before the server binds it; the
    servers retry on "Address already in use" (see `port_clash`).
    """
    low, high = _port_range()
    ports: list[int] = []
    with _ports_lock:
        for _ in range(PORT_DRAWS_MAX):
            port = _port_rng.randint(low, high)
            if port in _ports_given or port in ports or not _bindable(port):
                continue
            ports.append(port)
            if len(ports) == count:
                _ports_given.update(ports)
                return ports
    raise ServerStartError(f"no free loopback port in {low}-{high} after {PORT_DRAWS_MAX} draws")


def port_clash(log_text: str) -> bool:
    """Did a server fail because another process took its port first?"""
    return "Address already in use" in log_text or "could not bind" in log_text


# ------------------------------------------------------------------ logs


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file, or a note saying why there are none."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - LOG_TAIL_BYTES_MAX))
            text = log.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log at {path}: {e.strerror})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path} is empty)"


def log_section(title: str, path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return f"\n--- last {lines} lines of {title} ({path}) ---\n{tail(path, lines)}\n--- end of {title} ---"


# ------------------------------------------------------------------ process lifetime


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` that sends `sig` to the child when this process dies.

    So a pytest run killed with SIGKILL does not leave Cassandra and
    PostgreSQL running.  Linux delivers the signal when the *thread* that
    forked exits, so it is only armed from the main thread: a server started
    from a worker thread would otherwise die with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl ran
            os.kill(os.getpid(), int(sig))

    return arm


def signal_and_wait(proc: subprocess.Popen, sig: signal.Signals, timeout_s: float) -> bool:
    """Send `sig` unless the process already exited; True once it has exited within `timeout_s`."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def wait_for(ready: Callable[[], bool], *, timeout_s: float, interval_s: float,
             died: Callable[[], str | None], what: str) -> None:
    """Poll `ready()` until it is true.

    Raises ServerStartError with the text `died()` returns as soon as that is
    not None (the process exited), or when `timeout_s` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        reason = died()
        if reason is not None:
            raise ServerStartError(reason)
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerStartError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(interval_s)


class Closeable(Protocol):
    def close(self) -> None: ...


#: id(server) -> (pid that started it, server).  The pid keeps a forked child
#: that exits normally from stopping its parent's servers.
_live: dict[int, tuple[int, Closeable]] = {}
_live_lock = threading.Lock()


def track(server: Closeable) -> None:
    """Stop `server` at interpreter exit if its owner never closed it."""
    with _live_lock:
        _live[id(server)] = (os.getpid(), server)


def untrack(server: Closeable) -> None:
    with _live_lock:
        _live.pop(id(server), None)


@atexit.register
def _close_forgotten() -> None:
    with _live_lock:
        servers = [server for pid, server in _live.values() if pid == os.getpid()]
    for server in servers:
        try:
            server.close()
        except Exception as e:  # noqa: BLE001 - exiting anyway; say why and go on to the next
            say(f"could not stop {server!r} at exit: {e}")
