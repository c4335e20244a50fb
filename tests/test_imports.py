"""The import graph of ``interp``, ``probes`` and ``circuits`` has no cycles and no package imports
another package's private names.

The graph is built from the source with :mod:`ast` (nothing is imported): every ``import`` and
``from ... import`` statement counts, at module level and inside functions (a function-level
import that closes a cycle is still a cycle: it only hides it until call time). Relative imports
are resolved against the importing module; ``from pkg import name`` is an edge to ``pkg.name``
when that is a module and to ``pkg`` otherwise. Importing a package does not add implicit edges
to its parents (``import a.b.c`` is an edge to ``a.b.c`` only), so a package ``__init__`` that
re-exports its submodules is not a cycle by itself.

Private rule: a module may not import, from a module of *another* top-level package, a name that
starts with an underscore, nor any module whose dotted path has a private component
(``from interp._x import y`` inside ``circuits`` is a violation, as is
``from interp.sinks import _foo``). Private modules of one's own package are fine.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "probes", "circuits")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module the statement loads
    name: str | None  # the name taken from it (``from target import name``), None for ``import target``
    line: int


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def collect_imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    """Every import statement (module level and inside functions) of ``packages``, resolved."""
    mods = module_names(root, packages)
    out: list[Import] = []
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    out.append(Import(mod, a.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                for a in node.names:
                    out.append(Import(mod, target, a.name, node.lineno))
    return out


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (edges into other libraries are dropped)."""
    mods = module_names(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for imp in collect_imports(root, packages):
        cand = f"{imp.target}.{imp.name}" if imp.name and imp.name != "*" else None
        dst = cand if cand in mods else imp.target
        if dst in mods and dst != imp.importer:
            graph[imp.importer].add(dst)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
    return sorted(comps)


def private_violations(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Imports of another top-level package's private modules or private names."""
    mods = module_names(root, packages)
    bad: list[str] = []
    for imp in collect_imports(root, packages):
        top = imp.target.split(".")[0]
        if top not in packages or top == imp.importer.split(".")[0]:
            continue
        parts = imp.target.split(".")
        if imp.name and f"{imp.target}.{imp.name}" in mods:
            parts = [*parts, imp.name]  # ``from pkg import _mod`` imports a module
        elif imp.name and _is_private(imp.name):
            bad.append(f"{imp.importer}:{imp.line} imports private name {imp.name} from {imp.target}")
            continue
        if any(_is_private(p) for p in parts[1:]):
            bad.append(f"{imp.importer}:{imp.line} imports private module {'.'.join(parts)}")
    return bad


def _cycle_message(comps: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = [f"{len(comps)} import cycle(s) (strongly connected components):"]
    for c in comps:
        members = set(c)
        edges = [f"{a} -> {b}" for a in c for b in sorted(graph[a] & members)]
        lines.append("  {" + ", ".join(c) + "}: " + "; ".join(edges))
    return "\n".join(lines)


def test_no_import_cycles():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 50  # the packages were found
    comps = strongly_connected(graph)
    assert not comps, _cycle_message(comps, graph)


def test_no_private_imports_across_packages():
    bad = private_violations(ROOT, PACKAGES)
    assert not bad, "\n".join(bad)


# --- the checker itself can fail --------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def test_checker_finds_cycles_and_private_imports(tmp_path):
    _write(tmp_path, {
        "pa/__init__.py": "from pa.a import f\n",
        "pa/a.py": "from .b import g\n\ndef f():\n    return g()\n",
        # function-level relative import closes the cycle a -> b -> sub.c -> a
        "pa/b.py": "def g():\n    from .sub.c import h\n    return h()\n",
        "pa/sub/__init__.py": "",
        "pa/sub/c.py": "def h():\n    from ..a import f\n    return 1\n",
        "pa/d.py": "import pa.sub.c\n",  # not in a cycle
        "pa/_priv.py": "x = 1\n",
        "pb/__init__.py": "",
        "pb/e.py": "from pa._priv import x\nfrom pa.a import _hidden\nfrom pa import _priv\nfrom pa.a import f\n",
        "pb/f.py": "from pb import e\nfrom pb.e import _ok_same_package\n",
    })
    graph = import_graph(tmp_path, ("pa", "pb"))
    assert graph["pa.b"] == {"pa.sub.c"} and graph["pa.sub.c"] == {"pa.a"} and graph["pb.f"] == {"pb.e"}
    comps = strongly_connected(graph)
    assert comps == [["pa.a", "pa.b", "pa.sub.c"]]
    msg = _cycle_message(comps, graph)
    assert "pa.b -> pa.sub.c" in msg and "pa.sub.c -> pa.a" in msg
    bad = private_violations(tmp_path, ("pa", "pb"))
    assert len(bad) == 3, bad
    assert any("private module pa._priv" in b for b in bad)
    assert any("private name _hidden" in b for b in bad)
    assert not any("_ok_same_package" in b for b in bad)


def test_checker_passes_an_acyclic_package(tmp_path):
    _write(tmp_path, {"pa/__init__.py": "from .a import f\n", "pa/a.py": "from ._b import g\nf = g\n",
                      "pa/_b.py": "import os\ng = os.getcwd\n"})
    graph = import_graph(tmp_path, ("pa",))
    assert strongly_connected(graph) == [] and private_violations(tmp_path, ("pa",)) == []


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
