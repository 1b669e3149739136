"""The layout shows the architecture: layers import only downwards, and nothing imports in a cycle.

Layers, lowest first (a module may import its own layer and the ones below):

0. protocol and pure cores: sequencer/{types, errors, limits, hlc, batcher,
   graph, epochs, wire, security, log_state, core}
1. stores: proxies/ (and its servers/ harness)
2. execution: executor/
3. the ordering service's drivers: sequencer/{log, config, node, api, edge, client}
4. the cluster drivers: sequencer/tools/

Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sequencer", "executor", "proxies")
CORE = {"types", "errors", "limits", "hlc", "batcher", "graph", "epochs", "wire", "security", "log_state", "core"}
SERVICE = {"log", "config", "node", "api", "edge", "client"}


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "proxies":
        return 1
    if parts[0] == "executor":
        return 2
    if parts[:2] == ["sequencer", "tools"]:
        return 4
    if len(parts) == 1:
        return 0  # the package itself
    if parts[1] in CORE:
        return 0
    if parts[1] in SERVICE:
        return 3
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layout.py")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, top_level_only: bool = False, known: dict[str, Path] | None = None) -> set[str]:
    """The modules `path` imports; `from pkg import sub` counts as importing the submodule `pkg.sub`."""
    known = modules() if known is None else known
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _internal(names: set[str], known: dict[str, Path]) -> set[str]:
    return {n for n in names if n in known}


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        layer(name)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_upward_import(name: str) -> None:
    known = modules()
    mine = layer(name)
    upward = sorted(n for n in _internal(imports(known[name], known=known), known) if layer(n) > mine)
    assert not upward, f"{name} (layer {mine}) imports {upward} from a higher layer"


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: _internal(imports(path, True, known), known) - {name} for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_checker_sees_an_upward_import(tmp_path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from executor.state_machine import genesis_hash\n")
    found = imports(module)
    assert "executor.state_machine" in found and layer("executor.state_machine") > layer("proxies.postgres")
