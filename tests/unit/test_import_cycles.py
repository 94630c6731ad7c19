"""No import cycle in the package, counting the imports made inside functions too: a lazy import hides a
cycle from Python's import machinery, not from the design (review §5: C1 the store and the default
models, C2 the runner and the projector, C3 the knot in ``notebook/``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ollama_magic"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports, at top level or inside a function; ``from . import x``
    counts as an import of ``x`` when ``x`` is a module, else of the package. ``TYPE_CHECKING`` imports
    are left out: they never run."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for child in node.body for n in ast.walk(child)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_notebook_package_has_no_import_cycle() -> None:
    knots = [c for c in cycles(import_graph()) if any(m.startswith("ollama_magic.notebook") for m in c)]
    assert knots == []


def test_the_store_and_the_default_models_are_in_no_import_cycle() -> None:
    c1 = {"ollama_magic.defaults", "ollama_magic.store.store", "ollama_magic.engine.capabilities",
          "ollama_magic.tiny_vision"}
    assert [c for c in cycles(import_graph()) if c1 & set(c)] == []


def test_the_package_has_no_import_cycle_at_all() -> None:
    assert cycles(import_graph()) == []


if __name__ == "__main__":  # the whole package's cycles: python tests/unit/test_import_cycles.py [ROOT]
    import sys

    for component in cycles(import_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE)):
        print(len(component), " ".join(component))
