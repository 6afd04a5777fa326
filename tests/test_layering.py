"""The layering of ``benchmark/`` and ``methods/`` (DESIGN.md §2), checked on the source.

- ``benchmark.arena`` (what a method may use) imports neither the harness, the reports,
  the CLI nor ``methods``;
- ``benchmark.report`` reads records: of the harness it imports only its records schema;
- the harness and the CLI reach methods only through the registry (``methods``), and the
  harness imports neither the reports nor the CLI;
- a method imports, of ``benchmark``, only the method API ``benchmark.arena``;
- no import cycle anywhere (imports inside functions count too).

Every ``import`` statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "methods")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in known else base


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the project modules it imports (module level and inside functions)."""
    files = module_files(root)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(tree):
            for name in _imported(node, module, is_package, known):
                while name and name not in known:  # `import a.b.c` of a name inside a.b
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that breaks a layering rule."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _under(source, "benchmark.arena"):
                banned = ("benchmark.harness", "benchmark.report", "benchmark.cli", "methods")
                if any(_under(target, b) for b in banned):
                    bad.append(f"{source} imports {target}: the arena must not import it")
            if _under(source, "benchmark.report"):
                if _under(target, "benchmark.harness") and target != "benchmark.harness.records":
                    bad.append(f"{source} imports {target}: reports read records only")
                if _under(target, "methods") or _under(target, "benchmark.cli"):
                    bad.append(f"{source} imports {target}: reports never run methods")
            if _under(source, "benchmark.harness"):
                if _under(target, "methods") and target != "methods":
                    bad.append(f"{source} imports {target}: reach methods through the registry")
                if _under(target, "benchmark.report") or _under(target, "benchmark.cli"):
                    bad.append(f"{source} imports {target}: the harness runs trials only")
            if _under(source, "methods") and _under(target, "benchmark"):
                if target != "benchmark.arena":
                    bad.append(f"{source} imports {target}: a method imports benchmark.arena only")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


# --- the project itself --------------------------------------------------------------------
def test_the_three_parts_exist() -> None:
    files = module_files(ROOT)
    parts = {"benchmark.arena", "benchmark.harness", "benchmark.report", "benchmark.cli"}
    assert parts <= set(files)
    top = [m for m, path in files.items() if path.parent == ROOT / "benchmark"]
    assert sorted(top) == ["benchmark", "benchmark.__main__"], top


def test_layering_holds() -> None:
    assert layering_violations(import_graph()) == []


def test_no_import_cycles() -> None:
    assert import_cycles(import_graph()) == []


def test_methods_import_only_the_method_api() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if _under(module, "methods"):
            assert {t for t in targets if _under(t, "benchmark")} <= {"benchmark.arena"}, module


# --- the checker catches what it should (on a copy of the tree with one bad import) --------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _injected():\n    {line}\n")


def test_an_arena_module_importing_the_harness_is_caught(tree: Path) -> None:
    _append(tree / "benchmark/arena/cost.py", "from benchmark.harness import records")
    assert layering_violations(import_graph(tree)) == [
        "benchmark.arena.cost imports benchmark.harness.records: the arena must not import it"
    ]


def test_a_report_importing_the_runner_is_caught(tree: Path) -> None:
    _append(tree / "benchmark/report/plots.py", "import benchmark.harness.executors")
    violations = layering_violations(import_graph(tree))
    assert violations == [
        "benchmark.report.plots imports benchmark.harness.executors: reports read records only"
    ]


def test_a_method_importing_past_the_api_is_caught(tree: Path) -> None:
    _append(tree / "methods/uniform.py", "from benchmark.arena.recipes.loop import train")
    violations = layering_violations(import_graph(tree))
    assert violations == [
        "methods.uniform imports benchmark.arena.recipes.loop: a method imports benchmark.arena"
        " only"
    ]


def test_a_cycle_through_a_late_import_is_caught(tree: Path) -> None:
    _append(tree / "benchmark/arena/policy.py", "from benchmark.arena.cost import model_cost")
    (cycle,) = import_cycles(import_graph(tree))
    assert {"benchmark.arena.cost", "benchmark.arena.policy"} <= set(cycle)


def test_methods_use_the_task_limit_and_cite_only_the_repository() -> None:
    """No method re-derives the cost limit (``ctx.limit`` is the one object), and no
    project file cites notes outside the repository (``docs/methods/`` holds them)."""
    for path in sorted((ROOT / "methods").rglob("*.py")):
        text = path.read_text()
        for word in ("bitops_w8a8", "size_bits_w8a8"):
            assert word not in text, f"{path.relative_to(ROOT)} names {word}: use ctx.limit"
    for package in (*PACKAGES, "tests", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            cited = "shared" + "/methods"  # spelled apart: this file is searched too
            assert cited not in text, f"{path.relative_to(ROOT)} cites {cited}"
