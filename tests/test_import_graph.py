"""Issue #14: an acyclic module graph with module-level imports only.

Edges come from the source (`ast`), not from running it: every `import` / `from ... import` of a
varcompress module, relative ones resolved; `from .pkg import name` where `pkg.name` is a
submodule is an edge to that submodule. Importing `a.b.c` also runs the package `a.b`'s
`__init__` first, so it is an edge to `a.b` too (unless the importer lives inside `a.b`): a
package that re-exports its high-level API must not be imported by what that API needs.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "varcompress"

# Imports kept inside a function on purpose: (module, imported module) -> why.
LAZY = {
    ("varcompress.activated.clustering", "sklearn.cluster"): "sklearn (with scipy) takes ~1.5 s to import; only k-means needs it",
    ("varcompress.testbed.digits", "sklearn.datasets"): "sklearn takes ~1.5 s to import; only the digits set needs it",
    ("varcompress.testbed.digits", "sklearn.model_selection"): "as above",
    ("varcompress.metrics.imagenet_fid", "torch_fidelity.feature_extractor_inceptionv3"): "the optional `fid` extra",
    ("varcompress.engine.engine", "torch._dynamo"): "heavy, needed only with compile",
    ("varcompress.compare.report", "matplotlib"): "the optional `plot` extra, half a second to import",
    ("varcompress.compare.report", "matplotlib.pyplot"): "as above",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _targets(mod: str, is_pkg: bool, node: ast.AST) -> list[str]:
    """The modules an import statement names (varcompress ones get resolved; others as written)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "varcompress":
        return [base]
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, str, str, int]]]:
    """(module-level edges between varcompress modules, function-local imports (module, function, target, line))."""
    edges, local = {m: set() for m in MODULES}, []
    for mod, path in MODULES.items():
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, func: str | None) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(child, child.name)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for t in _targets(mod, is_pkg, child):
                        if func is not None:
                            local.append((mod, func, t, child.lineno))
                        elif t.split(".")[0] == "varcompress":
                            edges[mod].add(t)
                            parts = t.split(".")
                            for i in range(2, len(parts)):  # the packages whose __init__ runs first
                                if not mod.startswith(".".join(parts[:i]) + "."):
                                    edges[mod].add(".".join(parts[:i]))
                visit(child, func)

        visit(ast.parse(path.read_text()), None)
        edges[mod].discard(mod)
    return edges, local


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One shortest cycle of the graph, or None."""
    for start in sorted(edges):
        prev, queue = {start: None}, deque([start])
        while queue:
            v = queue.popleft()
            for w in sorted(edges.get(v, ())):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
    return None


def test_every_import_names_a_module_that_exists():
    edges, _ = _imports()
    missing = sorted({(m, t) for m, ts in edges.items() for t in ts if t not in MODULES})
    assert not missing, f"imports of modules that do not exist: {missing}"


def test_the_module_graph_has_no_cycle():
    edges, _ = _imports()
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_are_module_level_except_the_lazy_on_purpose_ones():
    _, local = _imports()
    found = {(m, t) for m, _, t, _ in local}
    bad = [f"{MODULES[m].relative_to(ROOT.parent)}:{line} ({func}) imports {t}"
           for m, func, t, line in local if (m, t) not in LAZY]
    assert not bad, "function-local imports (hoist them, or list them in LAZY with the reason):\n" + "\n".join(bad)
    stale = sorted(set(LAZY) - found)
    assert not stale, f"LAZY lists imports that are no longer lazy: {stale}"


def test_the_lazy_ones_say_why_in_the_code():
    _, local = _imports()
    for m, _, t, line in local:
        lines = MODULES[m].read_text().splitlines()
        assert "lazy on purpose" in lines[line - 1] + lines[line - 2], f"{MODULES[m]}:{line}: say why {t} is lazy"
