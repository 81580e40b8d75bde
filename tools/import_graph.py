"""The import graph of the library and the lab: cycles between modules, imports of the lab by the
library, and which modules a statement loads.

Run from the repository root: ``python tools/import_graph.py [--package src/repadapter
--package src/repadapter_lab] [--load "import repadapter"] [--load "from repadapter.cli import
build_parser; build_parser()"]`` (the two packages are the default). Imports inside functions
count too (marked "lazy"): a cycle through a lazy import still ties two modules together, even
though Python resolves it at run time. Exit status 1 when there is a cycle, or when a module of
the first package (the library) imports one of a later one (the lab).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> dict[str, bool]:
    """The package modules that ``path`` imports, each mapped to True when only lazily."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        lazy = id(node) not in top
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found[target] = found.get(target, True) and lazy
    return found


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def loaded_by(statement: str, package: str) -> list[str]:
    """The package's modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    mine = f"m == {package!r} or m.startswith({package!r} + '.')"
    probe = f"import sys\n{statement}\nprint('\\n'.join(sorted(m for m in sys.modules if {mine})))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return run.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--package",
        action="append",
        type=Path,
        help="a package folder; the first is the library (default: src/repadapter, src/repadapter_lab)",
    )
    parser.add_argument(
        "--load", action="append", default=[], help="a Python statement to run; lists what it loads"
    )
    args = parser.parse_args()
    roots = [p.resolve() for p in args.package or [Path("src/repadapter"), Path("src/repadapter_lab")]]
    names = {module_name(p, root): p for root in roots for p in sorted(root.rglob("*.py"))}
    graph = {name: imports_of(path, name, set(names)) for name, path in names.items()}
    found = cycles(graph)
    counts = ", ".join(f"{sum(_in(m, root.name) for m in names)} in {root.name}" for root in roots)
    print(f"{len(names)} modules ({counts}), {sum(len(v) for v in graph.values())} imports between them")
    print(f"import cycles: {len(found)}")
    for component in found:
        members = set(component)
        edges = [
            f"{a} -> {b}{' (lazy)' if graph[a][b] else ''}"
            for a in component
            for b in sorted(graph[a])
            if b in members
        ]
        print(f"- {len(component)} modules: " + "; ".join(edges))
    library, others = roots[0].name, [root.name for root in roots[1:]]
    upward = [
        f"{a} -> {b}{' (lazy)' if lazy else ''}"
        for a in sorted(graph)
        if _in(a, library)
        for b, lazy in sorted(graph[a].items())
        if any(_in(b, other) for other in others)
    ]
    if others:
        print(f"imports of {', '.join(others)} by {library}: {len(upward)}")
        for edge in upward:
            print(f"- {edge}")
    for statement in args.load:
        for root in roots:
            modules = loaded_by(statement, root.name)
            total = sum(_in(m, root.name) for m in names)
            print(f"{statement!r} loads {len(modules)} of {total} {root.name} modules: {', '.join(modules)}")
    return 1 if found or upward else 0


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


if __name__ == "__main__":
    sys.exit(main())
