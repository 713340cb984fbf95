"""Dependencies between gputuned's subpackages point one way, down the data flow.

RANKS below is the one definition of the layering. Data flows
collectors -> store (daemon.core) -> exporter / forecast / tuner decision -> actuation, and the
parts that wire or drive those sit above them. A module may import its own subpackage or a
subpackage of LOWER rank; anything else (a higher rank, or a different subpackage of the same
rank) is a backward edge and fails ``test_no_backward_edges``. Siblings of equal rank stay
independent of each other.

Every import counts: module level, inside functions (lazy imports are still dependencies),
inside ``if TYPE_CHECKING:`` blocks (a type a module names is part of what it depends on), and
``importlib.import_module("gputuned...")`` calls with a literal name. Nothing is imported or
executed: the sources are parsed with :mod:`ast`, and the folder of each import name is read
from pyproject.toml's package-dir table.

Import cycles between modules fail too, outside the rooms still listed in CYCLES_TOLERATED.

Run as a script (``python tests/collectors/test_import_graph.py``) it prints the subpackage
graph (edges with how many module pairs make them), the backward edges and the module cycles,
and exits 1 on a backward edge. It sits beside ``test_only_one_module_imports_pynvml``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# subpackage -> layer rank (lower = closer to the hardware and the data's source)
RANKS: dict[str, int] = {
    # namespace and shared definitions (version, exit codes)
    "gputuned": 0,
    "gputuned.daemon": 0,
    # the senses: device interface, NVML, host and network readers
    "gputuned.collectors": 1,
    # the simulated node beneath the NVML API (built on the device layer's interface)
    "gputuned.collectors.sim": 2,
    # the store, loop, exporter, config, sd_notify
    "gputuned.daemon.core": 3,
    # consumers of the store, each on its own: forecasting, the decision kernel, the control socket
    "gputuned.tuner.forecast": 4,
    "gputuned.tuner.decision": 4,
    "gputuned.daemon.control": 4,
    # changes to the GPUs, reversible
    "gputuned.daemon.actuation": 5,
    # above the kernel: the trainer and its plugin, dashboards, the Zeus-trace research harness
    "gputuned.trainer_plugin": 6,
    "gputuned.dashboards": 6,
    "gputuned.tuner.zeus": 6,
    # the tuner's training: its environment over the simulator, training on Zeus traces
    "gputuned.tuner": 7,
    # the composition root, recording and analysis (builds daemons), the CLI
    "gputuned.daemon.app": 8,
    "gputuned.daemon.record": 9,
    "gputuned.daemon.commands": 10,
}

# Modules ranked with another subpackage than their folder's: ``python -m gputuned`` is the CLI.
PLACED: dict[str, str] = {"gputuned.__main__": "gputuned.daemon.commands"}

# Packages that only group rooms: a package inside one must be ranked on its own.
NAMESPACES: set[str] = {"gputuned", "gputuned.daemon"}

# Rooms where an import cycle between their own modules is still tolerated (to be emptied).
CYCLES_TOLERATED: set[str] = {"gputuned.daemon.app", "gputuned.daemon.commands"}

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Edge:
    """One import: the importing module and the gputuned module it names."""

    importer: str
    imported: str
    line: int


def package_dirs(repo: Path = REPO) -> dict[str, Path]:
    """Import package name -> folder, from pyproject.toml's package-dir table."""
    table = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: repo / folder for name, folder in table.items()}


def modules(repo: Path = REPO) -> dict[str, Path]:
    """Every module of the package: dotted name -> source file."""
    dirs = package_dirs(repo)
    mapped = set(dirs.values())
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(folder / parent in mapped for parent in list(rel.parents)[:-1]):
                continue  # inside a folder mapped on its own
            parts = [pkg, *rel.parent.parts] + ([] if path.stem == "__init__" else [path.stem])
            out[".".join(p for p in parts if p)] = path
    return out


def subpackage(module: str, packages: set[str]) -> str:
    """The subpackage a module is ranked with: PLACED, else the longest package holding it."""
    if module in PLACED:
        return PLACED[module]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in packages:
            return name
    raise KeyError(module)


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The module an import name denotes: itself if a module, else its parent (a name in it)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _names(node: ast.AST, module: str, is_pkg: bool) -> list[str]:
    """The full dotted names one AST node imports (candidates: module or module.attr)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
            base = ".".join(anchor + ([base] if base else []))
        return [f"{base}.{a.name}" for a in node.names] or [base]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def edges(repo: Path = REPO) -> list[Edge]:
    """Every import of a gputuned module by a gputuned module."""
    known = modules(repo)
    out: dict[tuple[str, str], Edge] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in _names(node, module, path.stem == "__init__"):
                if name == "gputuned" or name.startswith("gputuned."):
                    target = _resolve(name, known)
                    out.setdefault((module, target), Edge(module, target, getattr(node, "lineno", 0)))
    return sorted(out.values(), key=lambda e: (e.importer, e.imported))


def cycles(found: list[Edge]) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's SCCs)."""
    graph: dict[str, set[str]] = {}
    for e in found:
        if e.importer != e.imported:
            graph.setdefault(e.importer, set()).add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                out.append(sorted([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def backward(found: list[Edge]) -> list[Edge]:
    """The edges against the layering: to a higher rank or to a sibling of equal rank."""
    packages = set(RANKS)
    bad = []
    for e in found:
        src, dst = subpackage(e.importer, packages), subpackage(e.imported, packages)
        if src != dst and RANKS[dst] >= RANKS[src]:
            bad.append(e)
    return bad


def report(found: list[Edge]) -> str:
    """The subpackage graph (edges with counts, by rank) and the backward edges, as text."""
    packages = set(RANKS)
    count = Counter(
        (subpackage(e.importer, packages), subpackage(e.imported, packages)) for e in found
    )
    lines = ["subpackage graph (importer -> imported: module imports), rank in brackets:"]
    for (src, dst), n in sorted(count.items(), key=lambda kv: (-RANKS[kv[0][0]], kv[0])):
        if src != dst:
            lines.append(f"  [{RANKS[src]}] {src} -> [{RANKS[dst]}] {dst}: {n}")
    bad = backward(found)
    lines.append(f"backward edges: {len(bad)}")
    lines += [f"  {e.importer} -> {e.imported} (line {e.line})" for e in bad]
    loops = cycles(found)
    lines.append(f"module import cycles: {len(loops)}")
    lines += [f"  {' <-> '.join(group)}" for group in loops]
    return "\n".join(lines)


def test_every_package_is_ranked() -> None:
    """A folder nested in a ranked room belongs to it; a new room under a namespace needs a rank."""
    listed = set(package_dirs())
    assert set(RANKS) <= listed, "RANKS names a package pyproject.toml does not have"
    unranked = sorted(p for p in listed - set(RANKS) if subpackage(p, set(RANKS)) in NAMESPACES)
    assert unranked == []


def test_the_daemon_imports_the_simulator_only_when_it_runs_one() -> None:
    check = (
        "import sys\n"
        "import gputuned.daemon.app.daemon, gputuned.daemon.app.components, gputuned.collectors.nvml\n"
        "print(','.join(m for m in sys.modules if m.startswith('gputuned.collectors.sim')))\n"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_every_kind_of_import_is_found(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"gputuned" = "pkg"\n"gputuned.low" = "low"\n"gputuned.high" = "high"\n'
    )
    for folder in ("pkg", "low", "high"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "low" / "base.py").write_text("X = 1\n")
    (tmp_path / "low" / "other.py").write_text("from .base import X\n")
    (tmp_path / "low" / "sub").mkdir()  # a folder inside a package, not mapped on its own
    (tmp_path / "low" / "sub" / "__init__.py").write_text("")
    (tmp_path / "low" / "sub" / "deep.py").write_text("from ..base import X\n")
    (tmp_path / "high" / "app.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "import gputuned.low.base\n"
        "if TYPE_CHECKING:\n    from gputuned.low.other import X\n"
        "def f():\n    from gputuned.high import app\n    return importlib.import_module('gputuned.low')\n"
    )
    found = {(e.importer, e.imported) for e in edges(tmp_path)}
    assert found == {
        ("gputuned.low.other", "gputuned.low.base"),  # relative, the name X resolved to its module
        ("gputuned.low.sub.deep", "gputuned.low.base"),  # two levels up, from a nested folder
        ("gputuned.high.app", "gputuned.low.base"),  # module level
        ("gputuned.high.app", "gputuned.low.other"),  # TYPE_CHECKING
        ("gputuned.high.app", "gputuned.high.app"),  # inside a function
        ("gputuned.high.app", "gputuned.low"),  # importlib with a literal name
    }


def test_the_data_flow_spine_is_seen() -> None:
    pairs = {(e.importer, e.imported) for e in edges()}
    assert ("gputuned.daemon.core.loop", "gputuned.daemon.core.store") in pairs
    assert ("gputuned.daemon.core.loop", "gputuned.collectors.base") in pairs
    assert len(pairs) > 200


def test_backward_edges_are_detected() -> None:
    fake = [
        Edge("gputuned.collectors.gpu", "gputuned.daemon.core.store", 1),  # up the ranks
        Edge("gputuned.tuner.decision.guard", "gputuned.tuner.forecast.eta", 2),  # sibling
        Edge("gputuned.daemon.app.daemon", "gputuned.collectors.nvml", 3),  # down: fine
        Edge("gputuned.collectors.sim.nvml", "gputuned.collectors.sim.state", 4),  # own: fine
    ]
    assert [e.line for e in backward(fake)] == [1, 2]


def test_cycles_are_detected() -> None:
    fake = [Edge("a", "b", 1), Edge("b", "c", 2), Edge("c", "a", 3), Edge("c", "d", 4), Edge("d", "d", 5)]
    assert cycles(fake) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules() -> None:
    packages = set(RANKS)
    loops = [g for g in cycles(edges()) if not all(subpackage(m, packages) in CYCLES_TOLERATED for m in g)]
    assert loops == []


def test_no_backward_edges() -> None:
    found = edges()
    print(report(found))
    bad = backward(found)
    assert bad == [], "backward imports:\n" + "\n".join(f"{e.importer} -> {e.imported}" for e in bad)


if __name__ == "__main__":
    graph = edges()
    print(report(graph))
    sys.exit(1 if backward(graph) else 0)
