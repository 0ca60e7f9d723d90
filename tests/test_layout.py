"""The package's layering: imports point only down the stages, so a newcomer can read it bottom-up."""
import ast
from pathlib import Path

import lverse_core

PKG = Path(lverse_core.__file__).parent
# lower number = lower layer; a module may import its own layer and the layers below it
LAYERS = {"config": 0, "hardware": 0, "report": 0, "provenance": 0, "data": 1, "models": 2, "training": 3,
          "sampling": 4, "evaluation": 5, "pipeline": 6}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every lverse_core module a file imports, at the top or inside a function (lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("lverse_core"):
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package uses absolute imports")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lverse_core"))
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _modules():
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    loose = [m for m in _modules() if m not in ("lverse_core", "lverse_core.__main__") and _layer(m) is None]
    assert not loose, f"modules outside the stage layers: {loose}"


def test_imports_only_point_down():
    upward = []
    for mod, path in _modules().items():
        mine = _layer(mod)
        if mine is None:  # the package's __init__ and __main__ sit above everything
            continue
        for imp in _imports(path):
            theirs = _layer(imp)
            if theirs is not None and theirs > mine:
                upward.append(f"{mod} -> {imp}")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    mods = _modules()
    graph = {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()
             if not m.endswith("__init__") and m != "lverse_core"}
    # a package's __init__ re-exporting its own modules is not a cycle of the modules themselves
    for m in graph:
        graph[m] = {i for i in graph[m] if not m.startswith(i + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_contract_names_at_the_top_level():
    from lverse_core import AugVAE, BiART, load_profile
    from lverse_core.models.augvae import AugVAE as A
    from lverse_core.models.biart import BiART as B

    assert AugVAE is A and BiART is B and callable(load_profile)
