"""Layer rules read from the source with `ast` (nothing is imported, so a module that fails to
import cannot hide an edge): no import cycles, every import points down. Layers: cli -> service
-> {training, forgetting} -> common, training and forgetting independent; common/ is stdlib only;
service/ rooms: dist -> release -> pipeline -> tracking -> root modules (settings, errors,
environment). Function-level imports count: they
still tie two modules together, they only hide it until the function runs."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "service", "training", "forgetting", "common")
Edge = tuple[str, int, str]  # (target module, line, file relative to the root)
Graph = dict[str, set[Edge]]
BackEdge = tuple[str, int, str, str]  # (file, line, importer, imported)
# Tiers top to bottom. A module belongs to the longest prefix naming it; prefixes of one tier are
# siblings that must not import each other. Modules no prefix names are not judged.
LAYERS = [["cli"], ["service"], ["training", "forgetting"], ["common"]]
# Plain "service" is the bottom tier: the package __init__ and the root modules below.
ROOMS = [["service.dist"], ["service.release"], ["service.pipeline"], ["service.tracking"],
         ["service"]]
SERVICE_ROOT = {"service", "service.settings", "service.errors", "service.environment"}
# Today forgetting/ imports numpy and scipy at module level, implicit and threadpoolctl inside
# ALS's fit (allowed at module level too). Anything else is reported, not silently allowed.
FORGETTING_THIRD_PARTY = {"numpy", "scipy", "implicit", "threadpoolctl"}


def _modules(root: Path) -> dict[str, Path]:
    """Module name -> file; a package's __init__.py is the module named like the package."""
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(mod: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(absolute dotted name, line, at module level) of every import in the file, nested too.
    `from a import b` gives `a.b`, since b may be a submodule (if not, resolving falls back to
    `a`). Class bodies count as module level: they run at import time."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: `from ..x import y` inside package p.q -> p.x.y
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for a in child.names:
                    yield (base if a.name == "*" else f"{base}.{a.name}"), child.lineno, top
            else:
                func = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                yield from walk(child, top and not func)

    yield from walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)


def import_graph(root: Path) -> Graph:
    """Module -> {(imported project module, line, file)}, self-imports left out."""
    mods = _modules(root)
    graph: Graph = {m: set() for m in mods}
    for mod, path in mods.items():
        for name, line, _ in _imports(mod, path):
            while name and name not in mods:  # longest prefix that is a project module
                name = name.rpartition(".")[0]
            if name and name != mod:
                graph[mod].add((name, line, path.relative_to(root).as_posix()))
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module, each sorted: v and w share one
    when each reaches the other (a search per module is instant at this size)."""
    def reach(v: str) -> set[str]:
        seen: set[str] = set()
        todo = [v]
        while todo:
            for w, _, _ in graph.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    r = {v: reach(v) for v in graph}
    comps = {tuple(sorted({v} | {w for w in r[v] if v in r.get(w, ())})) for v in graph}
    return sorted(list(c) for c in comps if len(c) > 1)


def find_back_edges(graph: Graph, layers: Sequence[Sequence[str]]) -> list[BackEdge]:
    """Imports that point up a tier, or sideways to a sibling prefix of the same tier."""
    rank = {prefix: i for i, tier in enumerate(layers) for prefix in tier}

    def place(module: str) -> str | None:
        hits = [p for p in rank if module == p or module.startswith(p + ".")]
        return max(hits, key=len) if hits else None

    back: list[BackEdge] = []
    for src, edges in graph.items():
        for dst, line, file in edges:
            a, b = place(src), place(dst)
            if a is not None and b is not None and a != b and rank[b] <= rank[a]:
                back.append((file, line, src, dst))
    return sorted(back)


def _lines(edges: list[BackEdge]) -> list[str]:
    return [f"  {f}:{n}: {src} -> {dst}" for f, n, src, dst in sorted(edges)]


def _cycle_report(graph: Graph, cycles: list[list[str]]) -> str:
    lines: list[str] = []
    for comp in cycles:  # with the edges inside it: cutting any one of them breaks the cycle
        lines.append(f"import cycle among {', '.join(comp)}:")
        lines += _lines([(f, n, a, b) for a in comp for b, n, f in graph[a] if b in comp])
    return "\n".join(lines)


def _back_report(back: list[BackEdge], what: str) -> str:
    return "\n".join([f"{len(back)} import(s) pointing up or sideways in {what}:", *_lines(back)])


# --- the real tree -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(ROOT)


def test_no_import_cycles(graph: Graph) -> None:
    if cycles := find_cycles(graph):
        pytest.fail(_cycle_report(graph, cycles), pytrace=False)


def test_layers_point_down(graph: Graph) -> None:
    if back := find_back_edges(graph, LAYERS):
        pytest.fail(_back_report(back, "cli -> service -> {training, forgetting}"), pytrace=False)


def test_service_rooms_point_down(graph: Graph) -> None:
    # A module outside the known rooms would silently count as a root module: name it instead.
    rooms = [p for tier in ROOMS[:-1] for p in tier]
    stray = sorted(m for m in graph if m.split(".")[0] == "service" and m not in SERVICE_ROOT
                   and not any(m == p or m.startswith(p + ".") for p in rooms))
    msgs = [f"service modules in no known room: {', '.join(stray)}"] if stray else []
    if back := find_back_edges(graph, ROOMS):
        msgs.append(_back_report(back, "dist -> release -> pipeline -> tracking -> root"))
    if msgs:
        pytest.fail("\n".join(msgs), pytrace=False)


def test_forgetting_imports_only_numpy_scipy_implicit_and_stdlib_at_module_level() -> None:
    allowed = FORGETTING_THIRD_PARTY | set(sys.stdlib_module_names) | {"forgetting", "common"}
    bad: list[str] = []
    for mod, path in _modules(ROOT).items():
        if mod.split(".")[0] == "forgetting":
            bad += [f"  {path.relative_to(ROOT)}:{line}: {name}" for name, line, top
                    in _imports(mod, path) if top and name.split(".")[0] not in allowed]
    if bad:
        pytest.fail("forgetting/ imports beyond numpy/scipy/implicit/stdlib at module level:\n"
                    + "\n".join(bad), pytrace=False)


def test_common_imports_only_the_standard_library() -> None:
    # Every layer may import common/: it must pull in nothing of the project and no third party.
    allowed = set(sys.stdlib_module_names) | {"common"}
    bad = [f"  {path.relative_to(ROOT)}:{line}: {name}" for mod, path in _modules(ROOT).items()
           if mod.split(".")[0] == "common"
           for name, line, _top in _imports(mod, path) if name.split(".")[0] not in allowed]
    if bad:
        pytest.fail("common/ imports beyond the standard library:\n" + "\n".join(bad), pytrace=False)


# --- planted trees: the checker itself -----------------------------------------------------------

def plant(root: Path, files: dict[str, str]) -> Graph:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return import_graph(root)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    g = plant(tmp_path, {
        "training/__init__.py": "", "training/a.py": "from training import b\n",
        "training/b.py": "def f():\n    from training.a import x\n",
        # a package __init__ importing a submodule that imports the package
        "forgetting/__init__.py": "", "forgetting/c/__init__.py": "from .r import R\n",
        "forgetting/c/r.py": "class R:\n    def fit(self):\n        from forgetting.c import make\n"})
    assert g["training.b"] == {("training.a", 2, "training/b.py")}
    assert find_cycles(g) == [["forgetting.c", "forgetting.c.r"], ["training.a", "training.b"]]
    assert "training/b.py:2: training.b -> training.a" in _cycle_report(g, find_cycles(g))


def test_a_function_level_back_edge_is_found(tmp_path: Path) -> None:
    g = plant(tmp_path, {
        "service/__init__.py": "", "service/settings.py": "",
        "training/__init__.py": "", "training/c.py": "def f():\n    import service.settings\n",
        "forgetting/__init__.py": "", "forgetting/m.py": "from training.c import f\n"})
    assert find_back_edges(g, LAYERS) == [("forgetting/m.py", 1, "forgetting.m", "training.c"),
                                          ("training/c.py", 2, "training.c", "service.settings")]


def test_a_room_back_edge_is_found(tmp_path: Path) -> None:
    g = plant(tmp_path, {
        "service/__init__.py": "", "service/release/__init__.py": "",
        "service/release/stages.py": "", "service/tracking/__init__.py": "",
        "service/tracking/store.py": "import os\nfrom service.release import stages\n"})
    assert find_back_edges(g, ROOMS) == [
        ("service/tracking/store.py", 2, "service.tracking.store", "service.release.stages")]
    assert find_back_edges(g, LAYERS) == []


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    g = plant(tmp_path, {
        "cli/__init__.py": "", "cli/app.py": "from service.dist import app\n",
        "service/__init__.py": "", "service/errors.py": "", "service/dist/__init__.py": "",
        "service/settings.py": "from service.errors import E\n",
        "service/dist/app.py": "def f():\n    from service.release import run\n",
        "service/release/__init__.py": "from ..tracking.store import T\nfrom ..settings import S\n",
        "service/tracking/__init__.py": "", "service/tracking/store.py": "import mlflow\n",
        "training/__init__.py": "import torch\n", "forgetting/linalg.py": "",
        "forgetting/__init__.py": "import numpy\nfrom . import matrix\n",
        "forgetting/matrix.py": "def f():\n    from forgetting import linalg\n"})
    assert g["service.release"] == {("service.tracking.store", 1, "service/release/__init__.py"),
                                    ("service.settings", 2, "service/release/__init__.py")}
    assert find_cycles(g) == [] and find_back_edges(g, LAYERS) == find_back_edges(g, ROOMS) == []
