"""The architecture the package docstring claims, checked by import (the AST of every module,
imports inside functions included):

- the rooms are the folders of ``src/imgread``: each sub-package of ``imgread`` is a room
  (answer, cli, dataset, ...), each sub-package of ``imgread.phases`` a phase's own folder,
  and ``phases/base.py`` and ``phases/registry.py`` the phases room's shared contract;
- a phase's modules are imported only from its own folder and the entry points (the cli room,
  the root ``bench`` and ``__main__``): never by another phase, the answer or any other room;
- no import cycle; no ``__init__.py`` imports from another room (no cross-room re-export);
- no phase is named as a string outside its own folder;
- no file of ``src/`` or ``workflow/`` is over the line limit;
- the tests mirror the rooms: one folder of ``tests/`` per room (``tests/phases/<phase>`` for a
  phase's own), the end-to-end runs of the workflow (marked ``workflow`` or ``slurm``) in
  ``tests/workflow/`` and only there, what they share in ``tests/support/``.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from imgread.phases.registry import BUILTIN, PHASES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "imgread"
TESTS = ROOT / "tests"
# Beside the rooms' folders: the end-to-end runs and what the tests share
TEST_FOLDERS = {"workflow", "support"}
END_TO_END = {"workflow", "slurm"}  # the pytest marks of a run of the real workflow
# The entry points may wire a phase's own modules (a command of its own); every other room
# reaches a phase only through the registry and the Phase contract.
ENTRY_ROOMS = {"cli"}
ENTRY_MODULES = {"imgread.bench", "imgread.__main__"}
MAX_LINES = 450


def packages_in(folder: Path) -> list[str]:
    """The sub-packages of ``folder`` (folders holding an ``__init__.py``), by name."""
    return sorted(d.name for d in folder.iterdir() if (d / "__init__.py").is_file())


class Package:
    """A copy of the package tree at ``root`` (``.../imgread``): its modules, rooms and imports."""

    def __init__(self, root: Path = PACKAGE):
        self.root = root
        self.rooms = packages_in(root)
        self.phase_folders = packages_in(root / "phases") if "phases" in self.rooms else []
        self.paths = {self.module_name(p): p for p in sorted(root.rglob("*.py"))}
        self.direct = {name: self.direct_imports(name) for name in self.paths}

    def module_name(self, path: Path) -> str:
        parts = [self.root.name, *path.relative_to(self.root).with_suffix("").parts]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def room(self, module: str) -> str:
        """``phases/<phase>`` for a phase's folder, the sub-package for any other room
        (``storage`` for storage.http too), ``imgread`` for the root modules."""
        parts = module.split(".")[1:]
        if parts and parts[0] in self.rooms:
            if parts[0] == "phases" and len(parts) > 1 and parts[1] in self.phase_folders:
                return f"phases/{parts[1]}"
            return parts[0]
        return self.root.name

    def phase_of(self, module: str) -> str | None:
        """The phase whose folder holds ``module``; None for every other module."""
        room = self.room(module)
        return room.partition("/")[2] if room.startswith("phases/") else None

    def direct_imports(self, name: str) -> set[str]:
        """Every imgread module ``name`` names in an import, at the top or inside a function:
        ``from a.b import c`` names a.b.c where that is a module, a.b otherwise."""
        path = self.paths[name]
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
                    f"{base}.{a.name}" if f"{base}.{a.name}" in self.paths else base
                    for a in node.names
                ]
            for target in targets:
                while target and target not in self.paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        return found

    def graph(self) -> dict[str, set[str]]:
        """The import graph: importing a.b.c also runs the packages a and a.b, except those
        the importer is part of (their ``__init__`` is already running: no cycle)."""
        out = {}
        for name, targets in self.direct.items():
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            runs = {".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 2)}
            out[name] = {m for m in runs if m in self.paths and m != name and m not in ancestors}
        return out

    def phase_imports(self) -> list[str]:
        """'importer -> imported' for every import of a phase's module from outside its own
        folder and the entry points."""
        out = []
        for importer, targets in sorted(self.direct.items()):
            if self.room(importer) in ENTRY_ROOMS or importer in ENTRY_MODULES:
                continue
            for target in sorted(targets):
                phase = self.phase_of(target)
                if phase is not None and self.phase_of(importer) != phase:
                    out.append(f"{importer} -> {target}")
        return out

    def init_imports(self) -> list[str]:
        """'importer -> imported' for every import an ``__init__.py`` makes from another room."""
        return [
            f"{name} -> {target}"
            for name, targets in sorted(self.direct.items())
            if self.paths[name].name == "__init__.py"
            for target in sorted(targets)
            if self.room(target) != self.room(name)
        ]

    def phase_mentions(self) -> list[str]:
        """'module:line name' for every string literal that is exactly a phase's name, outside
        that phase's own folder (phases/<name>/)."""
        names = set(PHASES) | set(self.phase_folders)
        out = []
        for name, path in self.paths.items():
            own = self.phase_of(name)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in names and node.value != own:
                    out.append(f"{name}:{node.lineno} {node.value}")
        return out


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


def test_the_rooms_are_the_folders_of_the_package():
    pkg = Package()
    assert {"answer", "cli", "dataset", "decoders", "phases", "storage", "trial"} <= set(pkg.rooms)
    # Every built-in phase has its own folder, and every phase folder is a registered phase.
    assert pkg.phase_folders == sorted(p.split(":")[0].split(".")[2] for p in BUILTIN)
    assert set(pkg.phase_folders) <= set(PHASES)
    assert pkg.room("imgread.phases.registry") == pkg.room("imgread.phases.base") == "phases"
    assert pkg.room("imgread.phases.dataloader.phase") == "phases/dataloader"
    assert pkg.room("imgread.storage.http.netns") == "storage"
    assert pkg.room("imgread.errors") == "imgread"


def test_the_package_has_no_import_cycle():
    graph = Package().graph()
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


def test_a_phase_is_imported_only_from_its_own_folder_and_the_entry_points():
    found = Package().phase_imports()
    assert found == [], "a phase's module imported from outside its folder:\n" + "\n".join(found)


def test_no_init_imports_from_another_room():
    found = Package().init_imports()
    assert found == [], "__init__.py importing from another room:\n" + "\n".join(found)


def test_the_checks_catch_real_imports_added_to_a_copy(tmp_path):
    # The checks cannot pass vacuously: real imports appended to a copy of the package are
    # reported, exactly those and nothing else.
    copy = tmp_path / "imgread"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = PACKAGE / "phases" / "dataloader" / "phase.py"
    assert "TUNING" in {
        t.id
        for n in ast.parse(target.read_text(encoding="utf-8")).body
        if isinstance(n, ast.Assign | ast.AnnAssign)
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }, "the import the test appends must be real"
    added = {
        "phases/load/phase.py": "from imgread.phases.dataloader.phase import TUNING",
        "answer/stats.py": "def _f():\n    from imgread.phases.dataloader.phase import TUNING",
        "instruments/__init__.py": "from imgread.errors import UserError",
    }
    before = Package(copy)
    for rel, line in added.items():
        with (copy / rel).open("a", encoding="utf-8") as f:
            f.write(f"\n{line}\n")
    after = Package(copy)
    assert set(before.phase_imports()) <= set(after.phase_imports())
    assert set(after.phase_imports()) - set(before.phase_imports()) == {
        "imgread.phases.load.phase -> imgread.phases.dataloader.phase",
        "imgread.answer.stats -> imgread.phases.dataloader.phase",
    }
    assert set(after.init_imports()) - set(before.init_imports()) == {
        "imgread.instruments -> imgread.errors"
    }
    # The entry points may import a phase's module.
    with (copy / "cli" / "options.py").open("a", encoding="utf-8") as f:
        f.write("\nfrom imgread.phases.dataloader.phase import TUNING\n")
    assert Package(copy).phase_imports() == after.phase_imports()


def test_no_phase_is_named_outside_its_own_folder():
    assert Package().phase_mentions() == []


def test_no_file_is_over_the_line_limit():
    files = [
        p
        for folder in (SRC, ROOT / "workflow")
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".py", ".smk") and p.is_file()
    ]
    assert len(files) > 20  # the walk found the sources
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in files
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == [], f"files over {MAX_LINES} lines:\n" + "\n".join(long)


def end_to_end_marks(path: Path) -> dict[str, bool]:
    """Each test function of the module at ``path``: whether it is marked ``workflow`` or
    ``slurm`` (by a decorator or by the module's ``pytestmark``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def marked(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Attribute) and n.attr in END_TO_END and "mark" in ast.unparse(n)
            for n in ast.walk(node)
        )

    module = any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and marked(n)
        for n in tree.body
    )
    return {
        n.name: module or any(marked(d) for d in n.decorator_list)
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    }


def test_the_tests_are_in_a_folder_per_room():
    pkg = Package()
    allowed = {*pkg.rooms, *(f"phases/{p}" for p in pkg.phase_folders), *TEST_FOLDERS}
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 20  # the walk found the tests
    folders = {p.parent.relative_to(TESTS).as_posix() for p in modules}
    assert folders - {"."} <= allowed, f"test folders that are no room: {folders - allowed}"
    loose = [p.name for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name]
    assert loose == [], f"tests at the root of tests/, to move into their room's folder: {loose}"
    for folder in {TESTS / f for f in folders} | {TESTS / f for f in TEST_FOLDERS}:
        # same-named modules of two rooms would collide without it
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"
    assert not list((TESTS / "support").glob("test_*.py"))


def test_the_end_to_end_runs_are_in_tests_workflow_and_only_there():
    wrong = []
    for path in sorted(TESTS.rglob("test_*.py")):
        inside = path.parent == TESTS / "workflow"
        for name, marked in end_to_end_marks(path).items():
            if marked != inside:
                wrong.append(f"{path.relative_to(ROOT)}::{name} (marked: {marked})")
    assert wrong == [], "tests/workflow/ holds exactly the workflow and slurm tests:\n" + "\n".join(
        wrong
    )
    # The check cannot pass vacuously: it sees both kinds of mark.
    marks = end_to_end_marks(TESTS / "workflow" / "test_ceiling_workflow.py")
    assert marks and all(marks.values())
    assert not any(end_to_end_marks(TESTS / "instruments" / "test_ceiling.py").values())
