"""Draws the core's module graph from the code (docs/architecture.md).

Reads every ``src/**/*.rs``, names each file's module (``src/store/sqlite.rs``
is ``store::sqlite``), and draws an edge A → B wherever A's code names
``crate::B`` (or ``super::B`` for a sibling). Modules are cut to ``--depth``
path components (default 2: ``store::sqlite``, ``manager::usage``), so the
graph stays readable. Prints a Mermaid flowchart (GitHub renders it), or
Graphviz DOT with ``--dot`` (``… --dot | dot -Tsvg > graph.svg``).

Only the standard library: it runs wherever the repository is checked out.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATE_PATH = re.compile(r"\bcrate((?:::\w+)+)")
SUPER_PATH = re.compile(r"\bsuper((?:::\w+)+)")
USE_GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def module_of(path: Path, src: Path) -> tuple[str, ...]:
    """``src/store/sqlite.rs`` → ("store", "sqlite"); lib.rs and mod.rs name their folder."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "mod", "main"):
        parts.pop()
    return tuple(parts)


def referenced(text: str, here: tuple[str, ...], modules: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The known modules this file's code names (longest known prefix of each path)."""
    paths: list[tuple[str, ...]] = []
    for m in CRATE_PATH.finditer(text):
        paths.append(tuple(m.group(1).split("::")[1:]))
    for m in SUPER_PATH.finditer(text):
        paths.append(here[:-1] + tuple(m.group(1).split("::")[1:]))
    for m in USE_GROUP.finditer(text):
        base = () if m.group(1) == "crate" else here[:-1]
        for item in m.group(2).split(","):
            name = item.strip().split("::")
            if name and name[0]:
                paths.append(base + tuple(name))
    found = set()
    for p in paths:
        for n in range(len(p), 0, -1):
            if p[:n] in modules:
                found.add(p[:n])
                break
    return found


def graph(src: Path, depth: int) -> set[tuple[str, str]]:
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(f, src) for f in files}
    edges = set()
    for f in files:
        here = module_of(f, src)
        if not here:  # lib.rs only re-exports: every module would point at it
            continue
        for target in referenced(f.read_text(encoding="utf-8"), here, modules):
            a, b = "::".join(here[:depth]), "::".join(target[:depth])
            if a != b and not b.startswith(a + "::"):
                edges.add((a, b))
    return edges


def node(name: str) -> str:
    return name.replace("::", "__")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2, help="module path components kept (default 2)")
    parser.add_argument("--dot", action="store_true", help="Graphviz DOT instead of Mermaid")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the crate's src folder")
    args = parser.parse_args(argv)
    if args.depth < 1:
        parser.error("--depth must be at least 1")
    if not args.src.is_dir():
        parser.error(f"{args.src} is not a folder")
    edges = sorted(graph(args.src, args.depth))
    if args.dot:
        print("digraph creditgate {\n  rankdir=LR;")
        print("\n".join(f'  "{a}" -> "{b}";' for a, b in edges))
        print("}")
    else:
        print("flowchart LR")
        print("\n".join(f'  {node(a)}["{a}"] --> {node(b)}["{b}"]' for a, b in edges))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
