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


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the skipnet package itself (the public API)


def _cross_stage_imports() -> list[tuple[str, str, str, str]]:
    """(module, its stage, imported module, its stage) for every import from one stage into another."""
    return [
        (a, _stage(a), b, _stage(b))
        for a, targets in import_graph().items()
        for b in targets
        if _stage(a) and _stage(b) and _stage(a) != _stage(b)
    ]


def test_no_stage_imports_a_later_stage():
    assert sorted(filter(None, {_stage(m) for m in import_graph()})) == sorted(STAGES)
    wrong = sorted(f"{a} imports {b}" for a, sa, b, sb in _cross_stage_imports() if STAGES.index(sb) > STAGES.index(sa))
    assert wrong == []


# What each stage may import (README, "Layout"): narrower than the order alone. The runtime, which
# apps' servers and CI gates install, does not import training: what it reports of Bias Loss (the
# feature-map variance and the weights) lives in models/features.py, below both.
MAY_IMPORT = {
    "common": set(),
    "models": {"common"},
    "data": {"common"},
    "training": {"common", "models", "data"},
    "runtime": {"common", "models", "data"},
    "export": {"common", "models", "data", "training", "runtime"},
    "bench": {"common", "models", "data", "training", "runtime", "export"},
    "pipeline": set(STAGES) - {"pipeline"},
}


def test_each_stage_imports_only_the_stages_it_may():
    assert set(MAY_IMPORT) == set(STAGES)
    wrong = sorted(f"{a} imports {b}" for a, sa, b, sb in _cross_stage_imports() if sb not in MAY_IMPORT[sa])
    assert wrong == []


def test_the_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _own_files(b) -> set[Path]:
    """A backend's own modules: those its record names, and its converters' and runtime's modules
    (export/NAME_*.py, runtime/NAME_*.py)."""
    named = {b.exporter, b.runtime, *b.runtimes.values(), *b.platforms.values()}
    files = {PACKAGE.parent / (path.split(":")[0].replace(".", "/") + ".py") for path in named}
    return files | set(PACKAGE.glob(f"export/{b.name}_*.py")) | set(PACKAGE.glob(f"runtime/{b.name}_*.py"))


def _name_literals(node, names: set[str]) -> list[str]:
    """Backend or format names (NAME, NAME-...) used as a constant in ``node``."""
    found = []
    for c in ast.walk(node):
        if isinstance(c, ast.Constant) and isinstance(c.value, str):
            if c.value in names or any(c.value.startswith(n + "-") for n in names):
                found.append(c.value)
    return found


def branches_on_backend_names(path: Path, names: set[str], root: Path = PACKAGE.parent) -> list[str]:
    """Comparisons (==, in, startswith/endswith) and dispatch tables keyed by a backend's name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            hits = _name_literals(node, names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("startswith", "endswith"):
            hits = [h for a in node.args for h in _name_literals(a, names)]
        elif isinstance(node, ast.Dict):
            hits = [h for k in node.keys if k is not None for h in _name_literals(k, names)]
        else:
            continue
        out += [f"{path.relative_to(root)}:{node.lineno}: {h!r}" for h in hits]
    return out


def test_no_module_outside_a_backends_own_files_branches_on_its_name():
    from skipnet.common.contract.backends import RECORDS

    own = {PACKAGE / "common" / "contract" / "backends.py"}
    for b in RECORDS:
        own |= _own_files(b)
    names = {b.name for b in RECORDS}
    found = [h for p in sorted(PACKAGE.rglob("*.py")) if p not in own for h in branches_on_backend_names(p, names)]
    assert found == []


def test_the_check_finds_a_branch(tmp_path):
    (tmp_path / "x.py").write_text('if fmt.startswith("coreml") or b == "onnx" or x in ("tflite-int8",):\n    pass\n')
    hits = branches_on_backend_names(tmp_path / "x.py", {"onnx", "tflite", "coreml"}, tmp_path)
    assert sorted(h.rsplit(" ", 1)[1] for h in hits) == ["'coreml'", "'onnx'", "'tflite-int8'"]
