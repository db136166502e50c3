"""Every third-party module the package imports is declared in pyproject.toml.

CI runs in a fresh virtual environment that installs only what pyproject.toml declares, but a
missing declaration can still hide behind a package that a declared one happens to pull in
(scikit-learn came with scanpy before it was declared). This test reads the imports themselves.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where the two differ
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "skmisc": "scikit-misc", "scvi": "scvi-tools", "umap": "umap-learn",
                   "scib_metrics": "scib-metrics", "mpl_toolkits": "matplotlib", "yaml": "pyyaml", "PIL": "pillow"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    requirements += [r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    return {_normalise(re.split(r"[\s<>=!~\[;]", r.strip(), maxsplit=1)[0]) for r in requirements}


def imported_top_level_modules() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in scgen_ae -> one file importing it."""
    found = {}
    for path in sorted((ROOT / "scgen_ae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "scgen_ae":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def undeclared(declared: set[str]) -> dict[str, str]:
    return {mod: where for mod, where in imported_top_level_modules().items()
            if _normalise(DISTRIBUTION_OF.get(mod, mod)) not in declared}


def test_every_imported_module_is_declared():
    missing = undeclared(declared_distributions())
    assert not missing, f"imported but not declared in pyproject.toml (a fresh machine fails): {missing}"


def test_the_check_reports_a_dropped_declaration():
    # the detector itself: without the lightning and scikit-learn declarations, both are reported
    declared = declared_distributions() - {"lightning", "scikit-learn"}
    assert {"lightning", "sklearn"} <= set(undeclared(declared))


def test_test_extra_pulls_in_every_other_extra():
    """CI installs ``.[test]`` alone; every extra's tests must run there, none skipped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"]) - {"test"}
    self_ref = [r for r in project["optional-dependencies"]["test"] if _normalise(r).startswith("scgen-ae[")]
    assert self_ref, "the test extra does not reference the package's other extras"
    pulled = set(re.search(r"\[(.*)\]", self_ref[0]).group(1).replace(" ", "").split(","))
    assert extras <= pulled, f"extras not installed by CI: {sorted(extras - pulled)}"


# ---------------------------------------------------------------- the package's own import graph

def package_imports() -> dict[str, set[str]]:
    """scgen_ae module -> the scgen_ae modules it imports, at any level (lazy imports inside
    functions count: a cycle through them is still a cycle). Imports of a parent package
    (``from .. import _validate``) count as the module named."""
    files = {}
    for path in (ROOT / "scgen_ae").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                for alias in node.names:
                    targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in files else module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        # the package itself (``import scgen_ae as sa``) and the module's own parents are not edges
        graph[name] = {t for t in targets if t in files and t != name and not name.startswith(f"{t}.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module."""
    order, low, stack, found = {}, {}, [], []

    def visit(node):
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_no_import_cycles_and_no_model_imports_a_front():
    graph = package_imports()
    assert "scgen_ae.models.vae" in graph and graph["scgen_ae.tl._vae"]  # the scan found the package
    assert cycles(graph) == []
    fronts = ("scgen_ae.tl", "scgen_ae.pl", "scgen_ae.cli")
    wrong = {m: sorted(t for t in ts if t.startswith(fronts)) for m, ts in graph.items()
             if m.startswith("scgen_ae.models") and any(t.startswith(fronts) for t in ts)}
    assert wrong == {}


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
