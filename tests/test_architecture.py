"""The layers of docs/architecture.md hold: every module sits in exactly one layer of the
import-linter contract, no import cycle exists between modules (imports inside functions
included), and no import of another top-level package hides inside a function outside the
command-line modules (where each one is marked ``# lazy``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("optics", "deid", "hardware", "calibration", "captures")
CLI_PACKAGES = ("optics.cli", "deid.cli", "hardware.cli")


def _contracts() -> list[dict]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["tool"]["importlinter"]["contracts"]


def _layers() -> list[list[str]]:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    return [[m.strip() for m in layer.replace("|", ":").split(":")] for layer in layers["layers"]]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _within(module: str, parent: str) -> bool:
    return module == parent or module.startswith(parent + ".")


def _module_files() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for f in (REPO / top).rglob("*.py"):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def test_every_module_sits_in_exactly_one_layer(graph):
    layers = _layers()
    missing, doubled = [], []
    for m in sorted(graph.modules):
        if m in PACKAGES:  # the top-level packages' __init__ modules import nothing
            continue
        hits = [i for i, layer in enumerate(layers) if any(_within(m, x) for x in layer)]
        if not hits:
            missing.append(m)
        elif len(hits) > 1:
            doubled.append(m)
    assert not missing, f"modules in no layer of pyproject.toml's contract: {missing}"
    assert not doubled, f"modules in two layers: {doubled}"


def test_top_level_packages_import_nothing(graph):
    for top in PACKAGES:
        assert not graph.find_modules_directly_imported_by(top), top


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(edges.get(w, ()))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_no_import_cycles(graph):
    """grimp reads every import statement of a file, inside functions too."""
    edges = {m: set(graph.find_modules_directly_imported_by(m)) - {m} for m in graph.modules}
    # a package's __init__ importing its own submodules is how re-exports work, not a cycle
    for m, targets in edges.items():
        edges[m] = {t for t in targets if not _within(m, t)}
    assert _cycles(edges) == []


def test_no_package_cycles(graph):
    """Nor between packages: each module counted as its package (hardware.sim, deid.faces, ...)."""
    files = _module_files()
    pkg = {m: m if f.name == "__init__.py" else m.rsplit(".", 1)[0] for m, f in files.items()}
    edges: dict[str, set[str]] = {p: set() for p in pkg.values()}
    for m in graph.modules:
        for t in graph.find_modules_directly_imported_by(m):
            a, b = pkg[m], pkg[t]
            if a != b and not _within(a, b) and not _within(b, a):
                edges[a].add(b)
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _function_level_imports(path: Path, module: str):
    """``(line, imported module, the line's text)`` for imports inside functions."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    is_pkg = path.name == "__init__.py"
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".") if is_pkg else module.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names = [base]
            else:
                continue
            for name in names:
                yield node.lineno, name, lines[node.lineno - 1]


def test_no_hidden_cross_package_imports():
    hidden, unmarked = [], []
    for module, path in sorted(_module_files().items()):
        top = module.split(".")[0]
        in_cli = any(_within(module, c) for c in CLI_PACKAGES) or module == "optics.__main__"
        for line, name, text in _function_level_imports(path, module):
            other = name.split(".")[0]
            if other not in PACKAGES or other == top:
                continue
            if not in_cli:
                hidden.append(f"{path.relative_to(REPO)}:{line} imports {name}")
            elif "# lazy" not in text:
                unmarked.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not hidden, "cross-package imports inside functions: " + "; ".join(hidden)
    assert not unmarked, "CLI lazy imports without a '# lazy' comment: " + "; ".join(unmarked)


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
