"""A package's import graph, read from its sources with ast (nothing is imported to build it).

Every `import` and `from ... import` statement counts, wherever it stands: at the top, under
`if TYPE_CHECKING:`, inside a function. A lazy or type-only import still ties two modules
together (the type checker, a reader and the next refactoring all follow it), so hiding an
import does not hide a cycle. Relative imports are resolved; `from pkg import name` is an edge to
the submodule `pkg.name` when there is one, else to `pkg`. Importing `a.b.c` also runs `a` and
`a.b` first, but those implicit edges to parent packages are not counted: a parent is always
initialised before its submodules, so they cannot form a cycle of partial initialisations.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(repr=False)
class ImportGraph:
    """Modules of one package, the package modules each imports, and the outside ones."""

    internal: dict[str, set[str]] = field(default_factory=dict)
    """module → the package's modules it imports."""
    external: dict[str, set[str]] = field(default_factory=dict)
    """module → the top-level names of everything else it imports (stdlib, third party)."""

    def __repr__(self) -> str:
        return f"<ImportGraph of {len(self.internal)} modules>"

    def cycles(self) -> list[list[str]]:
        """One cycle through each strongly connected group of modules, as [a, b, ..., a]."""
        return [_cycle_in(self.internal, group) for group in _groups(self.internal)]

    def reach(self, start: str) -> dict[str, list[str]]:
        """Every package module start imports, directly or through others: its import chain."""
        chains = {start: [start]}
        pending = deque([start])
        while pending:
            name = pending.popleft()
            for target in sorted(self.internal[name]):
                if target not in chains:
                    chains[target] = [*chains[name], target]
                    pending.append(target)
        return chains

    def chains_to(self, start: str, forbidden: Iterable[str]) -> list[list[str]]:
        """Import chains from start to each forbidden outside package it reaches."""
        forbidden = set(forbidden)
        found = []
        for name, chain in self.reach(start).items():
            found += [[*chain, top] for top in sorted(self.external[name] & forbidden)]
        return found


def read_package(root: Path) -> ImportGraph:
    """The import graph of the package whose directory is root (its subpackages included)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        files[name] = (path, is_package)
    graph = ImportGraph()
    for name, (path, is_package) in files.items():
        inside, outside = _imports(name, path, is_package, files.keys())
        graph.internal[name] = inside - {name}
        graph.external[name] = outside
    return graph


def _imports(
    name: str, path: Path, is_package: bool, known: Iterable[str]
) -> tuple[set[str], set[str]]:
    known = set(known)
    package = name.partition(".")[0]
    # What `from . import x` starts from: a package's own name, a module's package.
    here = name.split(".") if is_package else name.split(".")[:-1]
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _longest_known(alias.name, known)
                if target is not None:
                    inside.add(target)
                elif alias.name.partition(".")[0] != package:
                    outside.add(alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.partition(".")[0] != package:
                outside.add(source.partition(".")[0])
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    inside.add(submodule)
                else:
                    target = _longest_known(source, known)
                    if target is not None:
                        inside.add(target)
    return inside, outside


def _longest_known(dotted: str, known: set[str]) -> str | None:
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _groups(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (or one importing itself): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges[node]:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def _cycle_in(edges: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    pending = deque([start])
    while pending:
        node = pending.popleft()
        for target in sorted(edges[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                pending.append(target)
    raise AssertionError(f"no cycle in the strongly connected group {group}")
