"""Installs what the local servers need, once per machine.

Owned here: the apt-get installs (PostgreSQL, JDK 17, Maven), the
unprivileged user PostgreSQL runs as, and the Cassandra jars cached under
`~/.cache/ordo/cassandra-<version>/lib`.  Every step first looks for what is
already there, so only a fresh machine pays for it, and every step holds one
machine-wide lock so parallel test processes do not install twice.
Callers: `proxies/servers/postgres.py` and `proxies/servers/cassandra.py`.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from proxies.servers.process import InstallError, log_section, say

#: apt-get may wait this long for another apt/dpkg to release its lock.
APT_LOCK_WAIT_S = 300
#: One Maven run fetches ~100 jars (~70 MB); on a slow mirror that can take
#: minutes, and a run that takes longer than this is stuck, not slow.
MAVEN_TIMEOUT_S = 1200
#: How often a long download says it is still going.
PROGRESS_INTERVAL_S = 10.0
#: PostgreSQL refuses to run as root; this user is created when no
#: `postgres` user exists (the Debian package creates `postgres`).
PG_FALLBACK_USER = "ordo"
JAVA_MAJOR = 17  # Cassandra 5.0 runs on 11 and 17; the flags in cassandra.py are 17's


def cache_dir() -> Path:
    """`$ORDO_CACHE_DIR`, else `$XDG_CACHE_HOME/ordo`, else `~/.cache/ordo`."""
    if os.environ.get("ORDO_CACHE_DIR"):
        return Path(os.environ["ORDO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ordo"


@contextmanager
def install_lock() -> Iterator[None]:
    """One installer at a time on this machine (parallel pytest workers, `ordo up`)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------ apt


def _privileged(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return argv
    if shutil.which("sudo"):
        return ["sudo", "-n", *argv]  # -n: never prompt; CI has no stdin
    raise InstallError(f"not root and no sudo: run `{' '.join(argv)}` as root, then try again")


def apt_install(packages: list[str], why: str) -> None:
    """`apt-get update && apt-get install -y packages`, non-interactively, output shown."""
    say(f"{why}: installing {' '.join(packages)} with apt-get (once per machine; takes a minute)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
    lock_wait = f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}"
    steps = [
        ["apt-get", "-q", "-o", lock_wait, "update"],
        ["apt-get", "-q", "-y", "-o", lock_wait, "--no-install-recommends", "install", *packages],
    ]
    started = time.monotonic()
    for argv in steps:
        argv = _privileged(argv)
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise InstallError(f"`{' '.join(argv)}` exited with {done.returncode}; its output is above")
    say(f"installed {' '.join(packages)} in {time.monotonic() - started:.1f} s")


# ------------------------------------------------------------------ PostgreSQL


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def _find_pg_bin() -> Path | None:
    override = os.environ.get("ORDO_PG_BINDIR")
    if override:
        if not (Path(override) / "initdb").is_file():
            raise InstallError(f"ORDO_PG_BINDIR={override} has no initdb")
        return Path(override)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    return found[-1].parent if found else None


def postgres_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<v>/bin`, installing Debian's `postgresql` if there is none."""
    found = _find_pg_bin()
    if found:
        return found
    with install_lock():
        found = _find_pg_bin()  # another process may have installed it while we waited
        if not found:
            apt_install(["postgresql"], "no initdb under /usr/lib/postgresql/*/bin")
            found = _find_pg_bin()
    if not found:
        raise InstallError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb appeared")
    return found


def postgres_os_user() -> str | None:
    """The user to run initdb/postgres as: None when not root (run as ourselves).

    As root: `postgres` if it exists, else PG_FALLBACK_USER, created with useradd.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", PG_FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    with install_lock():
        try:
            pwd.getpwnam(PG_FALLBACK_USER)
        except KeyError:
            say(f"creating system user {PG_FALLBACK_USER!r} to run PostgreSQL (it refuses to run as root)")
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            PG_FALLBACK_USER], check=True, stdin=subprocess.DEVNULL)
    return PG_FALLBACK_USER


# ------------------------------------------------------------------ Java and Maven


def _java_major(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def _java_candidates() -> Iterator[Path]:
    if os.environ.get("JAVA_HOME"):
        yield Path(os.environ["JAVA_HOME"]) / "bin" / "java"
    yield from sorted(Path("/usr/lib/jvm").glob(f"*{JAVA_MAJOR}*/bin/java"))
    on_path = shutil.which("java")
    if on_path:
        yield Path(on_path)


def _find_java() -> Path | None:
    for java in _java_candidates():
        if java.is_file() and _java_major(java) == JAVA_MAJOR:
            return java
    return None


def java17() -> Path:
    """A JDK 17 `java`: $JAVA_HOME, /usr/lib/jvm, PATH; else apt-get install openjdk-17-jre-headless."""
    found = _find_java()
    if found:
        return found
    with install_lock():
        found = _find_java()
        if not found:
            apt_install([f"openjdk-{JAVA_MAJOR}-jre-headless"], f"Cassandra needs Java {JAVA_MAJOR}")
            found = _find_java()
    if not found:
        raise InstallError(f"no Java {JAVA_MAJOR} found after installing it; set JAVA_HOME to a JDK {JAVA_MAJOR}")
    return found


def maven() -> Path:
    """`mvn` from PATH; else apt-get install maven."""
    found = shutil.which("mvn")
    if not found:
        with install_lock():
            found = shutil.which("mvn")
            if not found:
                apt_install(["maven"], "fetching Cassandra needs Maven")
                found = shutil.which("mvn")
    if not found:
        raise InstallError("no mvn on PATH after installing maven")
    return Path(found)


# ------------------------------------------------------------------ Cassandra jars


def _tree_mib(root: Path) -> float:
    total = 0
    for path in root.rglob("*"):
        try:
            total += path.stat().st_size
        except OSError:
            pass  # Maven renames files while we count
    return total / 2**20


def _report_progress(repo: Path, stop: threading.Event, started: float) -> None:
    while not stop.wait(PROGRESS_INTERVAL_S):
        say(f"  ... {_tree_mib(repo):.0f} MiB fetched so far ({time.monotonic() - started:.0f} s)")


def _run_maven(mvn: Path, java: Path, version: str, target: Path, repo: Path, log_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="ordo-mvn-"))
    try:
        pom = work / "pom.xml"
        pom.write_bytes(resources.files("proxies.servers").joinpath("pom.xml").read_bytes())
        java_home = java.resolve().parent.parent
        argv = [str(mvn), "-B", "-q", "-f", str(pom), f"-Dmaven.repo.local={repo}",
                f"-Dcassandra.version={version}", "dependency:copy-dependencies",
                f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
        with open(log_path, "w") as log:
            done = subprocess.run(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "JAVA_HOME": str(java_home)}, timeout=MAVEN_TIMEOUT_S,
                                  check=False)
    except subprocess.TimeoutExpired:
        raise InstallError(f"Maven did not finish fetching Cassandra {version} in {MAVEN_TIMEOUT_S} s"
                           + log_section("Maven's output", log_path)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise InstallError(f"Maven could not fetch Cassandra {version} (exit {done.returncode}); "
                           "is Maven Central reachable?" + log_section("Maven's output", log_path))


def cassandra_lib_dir(version: str) -> Path:
    """`<cache>/cassandra-<version>/lib` with cassandra-all and every runtime jar, fetched once.

    A `.complete` marker is written last, so a download cut short is redone,
    never trusted.  Maven's own repository (`<cache>/m2`) is deleted after.
    """
    home = cache_dir() / f"cassandra-{version}"
    lib = home / "lib"
    if (home / ".complete").is_file():
        return lib
    java, mvn = java17(), maven()  # before the lock: they take it themselves to install
    with install_lock():
        if (home / ".complete").is_file():
            return lib
        home.mkdir(parents=True, exist_ok=True)
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)
        repo = cache_dir() / "m2"
        say(f"fetching Cassandra {version} and its dependencies from Maven Central into {lib} "
            "(once per machine; about 70 MB)")
        started = time.monotonic()
        stop = threading.Event()
        reporter = threading.Thread(target=_report_progress, args=(repo, stop, started), daemon=True)
        reporter.start()
        try:
            _run_maven(mvn, java, version, partial, repo, home / "maven.log")
        finally:
            stop.set()
            reporter.join()
        if not (partial / f"cassandra-all-{version}.jar").is_file() or not list(partial.glob("jamm-*.jar")):
            raise InstallError(f"Maven finished but {partial} lacks cassandra-all-{version}.jar or jamm"
                               + log_section("Maven's output", home / "maven.log"))
        partial.rename(lib)
        (home / ".complete").write_text(f"{version}\n")
        shutil.rmtree(repo, ignore_errors=True)  # lib/ holds copies of every jar Maven kept there
        jars = len(list(lib.glob("*.jar")))
        say(f"fetched {jars} jars ({_tree_mib(lib):.0f} MiB) in {time.monotonic() - started:.1f} s")
    return lib
