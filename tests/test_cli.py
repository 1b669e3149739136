"""The `ordo` command: one clear line for every mistake, and SIGTERM stops a run as Ctrl-C does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sequencer.tools.cluster import write_embedded_config

ORDO = [sys.executable, "-m", "sequencer.tools.cli"]


def _ordo(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*ORDO, *args], capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def _one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-1500:])
    assert "Traceback" not in result.stderr, result.stderr
    assert needle in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ordo")]
    assert len(lines) == 1, result.stderr


def test_version() -> None:
    result = _ordo("--version")
    assert result.returncode == 0 and re.fullmatch(r"ordo \d+\.\d+\.\d+\n", result.stdout), result


@pytest.mark.parametrize("args, needle", [
    (["demo", "--accounts", "1"], "must be at least 2 (a transfer needs two accounts), not 1"),
    (["demo", "--accounts", "0"], "must be at least 2"),
    (["demo", "--batch", "0"], "must be from 1 to 128, not 0"),
    (["demo", "--batch", "500"], "must be from 1 to 128, not 500"),
    (["demo", "--transfers", "0"], "must be at least 1, not 0"),
    (["demo", "--concurrency", "x"], "'x' is not an integer"),
    (["bench", "--duration", "0"], "--duration must be above 0 seconds"),
    (["bench", "--replot", "/nonexistent/results.json"], "--replot: no results file"),
    (["sim", "--seed", "1", "--planted", "nonsense"], "unknown planted bugs"),
])
def test_bad_knobs_get_one_line(args: list[str], needle: str) -> None:
    _one_line_error(_ordo(*args), needle)


def _config(tmp_path: Path, **changes) -> Path:
    path = write_embedded_config(tmp_path)
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, needle", [
    ({"directory": None}, "has no [directory] section"),
    ({"colour": "blue"}, "unknown keys ['colour']"),
    ({"sequencer": {"epoch_millis": 10}}, "[sequencer] has unknown keys ['epoch_millis']"),
])
def test_config_mistakes_get_one_line(tmp_path, change, needle) -> None:
    _one_line_error(_ordo("verify", "--config", str(_config(tmp_path, **change))), needle)


def test_duplicate_addresses_are_refused(tmp_path) -> None:
    path = write_embedded_config(tmp_path)
    data = json.loads(path.read_text())
    data["nodes"][1]["raft"] = data["nodes"][0]["raft"]
    path.write_text(json.dumps(data))
    _one_line_error(_ordo("verify", "--config", str(path)), "each node needs its own Raft and HTTP address")


def test_verify_with_no_cluster_running_says_so(tmp_path) -> None:
    _one_line_error(_ordo("verify", "--config", str(write_embedded_config(tmp_path))), "no replica of the cluster")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.cluster
def test_sigterm_stops_the_demo_like_ctrl_c(tmp_path) -> None:
    proc = subprocess.Popen([*ORDO, "demo", "--transfers", "5000000", "--no-kill", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    root = None
    deadline = time.monotonic() + 120
    seen = []
    try:
        for line in proc.stdout:  # wait for the demo to be under load
            seen.append(line)
            if root is None and (m := re.search(r"(/tmp/ordo-demo-\w+)", line)):
                root = m.group(1)
            if "created and funded" in line or time.monotonic() > deadline:
                break
        assert root is not None, "".join(seen)
        assert _processes_mentioning(root), "the demo's cluster is not running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130, "".join(seen)
        rest = proc.stdout.read()
        assert "interrupted; everything it started was stopped" in rest, rest[-2000:]
        assert "Traceback" not in rest, rest[-3000:]
        assert _processes_mentioning(root) == [], "SIGTERM left processes of the demo running"
        assert not Path(root).exists(), "SIGTERM left the demo's data directory behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_mentioning(root or "/nonexistent"):
            os.kill(pid, signal.SIGKILL)


def test_up_checks_its_topology_before_starting_any_server(tmp_path) -> None:
    topology = (Path(__file__).resolve().parents[1] / "compose" / "ordo.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(topology + "\n[log]\nepoch_bytes_max = 10240\n")
    before = set(Path("/tmp").glob("ordo-up-*"))
    result = _ordo("up", "--config", str(bad))
    _one_line_error(result, "use at least 11161")
    assert "started" not in result.stdout + result.stderr  # no PostgreSQL, no Cassandra
    assert set(Path("/tmp").glob("ordo-up-*")) == before  # and no throwaway folder left behind
