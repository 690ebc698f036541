"""The package's shape: no import cycles, no imports hidden in functions, one module per patch."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from af3_cpu_patch.patches import BATCH_PATCHES, PROGRESS_PATCHES

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "af3_cpu_patch"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, top_level_only: bool):
    """(node, imported module names) of af3_cpu_patch imports, at module level or anywhere."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("af3_cpu_patch"):
            yield node, [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("af3_cpu_patch")]
            if names:
                yield node, names


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for _, targets in _imports(ast.parse(path.read_text()), top_level_only=True):
            edges |= {t for t in targets if t in modules and t != name}
        # importing a submodule runs its packages' __init__ first (the root's: by every import, so not an edge)
        graph[name] = edges | {p for t in edges for p in _parents(t)[1:] if p in modules and p != name}
    return graph


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):  # a package's __init__ runs before its modules anyway
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_of_the_package_are_at_module_level():
    hidden = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = {id(node) for node, _ in _imports(tree, top_level_only=True)}
        hidden += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for node, _ in _imports(tree, top_level_only=False)
                   if id(node) not in top]
    assert not hidden, f"function-level imports of af3_cpu_patch: {hidden}"


@pytest.mark.parametrize("patch", BATCH_PATCHES + PROGRESS_PATCHES, ids=lambda p: p.name)
def test_each_patch_lives_in_the_module_named_after_it(patch):
    """``a-b-c`` is declared in ``patches/a_b_c.py`` or, for a family, in the module of one of its prefixes."""
    candidates = [patch.name.split("-")[:n] for n in range(len(patch.name.split("-")), 0, -1)]
    found = [c for c in ("_".join(c) for c in candidates) if (PACKAGE / "patches" / f"{c}.py").is_file()]
    assert found, f"no patches/<prefix>.py for {patch.name}"
    module = sys.modules[f"af3_cpu_patch.patches.{found[0]}"]
    assert patch in module.PATCHES + getattr(module, "LOGITS_PATCHES", ())


def test_importing_the_settings_or_the_engine_needs_no_af3_or_jax():
    code = ("import sys; import af3_cpu_patch.settings, af3_cpu_patch.engine.source_rewrite; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'alphafold3')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
