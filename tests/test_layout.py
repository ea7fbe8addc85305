"""The package layout stays as docs/architecture.md draws it: no module of vecstore imports another
in a cycle, and the layers only import downwards.

Imports are read from the source with ``ast`` (function-level ones included: a lazy import is still
a dependency), so the test needs no import side effects and names every offending module.
"""

from __future__ import annotations

import ast
import os
import sys


PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vecstore")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def source_modules() -> dict[str, str]:
    """Module name -> file path for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                out[module_name(path)] = path
    return out


def imports_of(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The vecstore modules that module ``name`` imports (anywhere in its body)."""
    is_package = path.endswith("__init__.py")
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vecstore":
                    found.add(_known(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vecstore":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else _known(target, modules))
    found.discard(name)
    return found


def _known(dotted: str, modules: dict[str, str]) -> str:
    while dotted not in modules and "." in dotted:
        dotted = dotted.rpartition(".")[0]
    return dotted


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


# Layers from the bottom up (docs/architecture.md): a module may import its own layer and those
# below it, never one above.
LAYERS = [
    {"errors", "_version", "_runtime"},
    {"kernels"},
    {"codecs", "encoders"},
    {"format"},
    {"ingest", "progress"},
    {"query", "plan", "filters"},
    {"store"},
    {"shards"},
    {""},  # vecstore/__init__.py: the public API
    {"bench"},
    {"cli", "__main__"},
]


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and docs/architecture.md")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_imports_only_go_down_the_layers():
    found = upward_imports(import_graph())
    assert not found, "imports that go up a layer (see docs/architecture.md):\n" + "\n".join(found)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among vecstore modules:\n" + "\n".join(" <-> ".join(c) for c in found)


if __name__ == "__main__":  # print the cycles and upward imports (none, when the layout holds)
    graph = import_graph()
    print(f"{len(graph)} modules; import cycles:", *[" <-> ".join(c) for c in cycles(graph)] or ["none"], sep="\n  ")
    print("imports that go up a layer:", *upward_imports(graph) or ["none"], sep="\n  ")
