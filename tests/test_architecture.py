"""The architecture the package docstring claims: no import cycles (imports inside functions
included), and no phase named outside its own modules."""

from __future__ import annotations

import ast
from pathlib import Path

from imgread.phases.registry import PHASES

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "imgread"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every imgread module ``path`` imports, at the top or inside a function; importing
    a.b.c also runs the packages a and a.b (unless the importer is part of them)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    # A package's own __init__ is already running when its modules import each other: an
    # edge from a module to a package it is part of is no cycle.
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in known and m != name and m not in ancestors}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert "imgread.answer.keys" in graph["imgread.answer.scaling"]  # in-function imports count too
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_hidden_cycle():
    # The check cannot pass vacuously: a cycle through an import inside a function is found.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from imgread.answer.keys import CELL\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


def phase_mentions() -> list[str]:
    """'module:line name' for every string literal that is exactly a phase's name, outside
    that phase's own folder (phases/<name>/)."""
    names = set(PHASES)
    out = []
    for name, path in modules().items():
        own = path.parent.name if path.parent.parent.name == "phases" else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names and node.value != own:
                out.append(f"{name}:{node.lineno} {node.value}")
    return out


def test_no_phase_is_named_outside_its_own_modules():
    assert phase_mentions() == []
