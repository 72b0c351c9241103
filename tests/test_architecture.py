"""The package's shape: no import cycles, within a stage or between stages."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "skipnet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The skipnet modules ``path`` imports anywhere in it (module level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("skipnet")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("skipnet"):
                continue
            submodules = {f"{target}.{a.name}" for a in node.names} & modules  # `from . import x`: module x
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in target itself
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path, set(modules)) if m in modules and m != name} for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _within_packages(graph):
    """Edges between modules of one package, a package's __init__ importing its own modules left out (it
    re-exports them; a module importing its package's __init__ is what makes that a cycle, and is kept)."""
    same = {}
    for a, targets in graph.items():
        pkg = a if (PACKAGE.parent / a.replace(".", "/") / "__init__.py").exists() else a.rsplit(".", 1)[0]
        same[a] = {b for b in targets if b.rsplit(".", 1)[0] == pkg and b != pkg}
    return same


def test_no_import_cycle_inside_a_package():
    assert _cycles(_within_packages(import_graph())) == []


# The stages in data-flow order (README, "Layout"): a stage imports only stages to its left.
STAGES = ["common", "models", "data", "training", "runtime", "export", "bench", "pipeline"]


def test_no_stage_imports_a_later_stage():
    def stage(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None  # None: the skipnet package itself (the public API)

    assert sorted(filter(None, {stage(m) for m in import_graph()})) == sorted(STAGES)
    wrong = sorted(
        f"{a} imports {b}"
        for a, targets in import_graph().items()
        for b in targets
        if stage(a) and stage(b) and STAGES.index(stage(b)) > STAGES.index(stage(a))
    )
    assert wrong == []


def test_the_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
