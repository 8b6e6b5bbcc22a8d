"""The package's imports point one way: face -> execution -> stages -> pieces -> values, with no
import circle (issue 12). Every import statement of zoo/ counts, function-level ones too."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ZOO = Path(__file__).parent.parent / "zoo"

# a module's layer: the first match of its dotted name's prefixes
LAYERS = {
    "zoo.cli": 4,  # face
    "zoo.__main__": 4,
    "zoo.dist": 3,  # execution
    "zoo.stages": 2,  # stages
    "zoo.nn": 1,  # pieces
    "zoo.tasks": 1,
    "zoo.store": 1,
    "zoo.hub": 1,
    "zoo.weightspace": 1,
    "zoo.recipe": 0,  # values
    "zoo.layout": 0,
    "zoo.naming": 0,
    "zoo.streams": 0,
    "zoo.errors": 0,
    "zoo": 0,  # the package itself: __version__, SCHEMA_VERSION
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ZOO.rglob("*.py"):
        parts = path.relative_to(ZOO.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The zoo modules a file imports (the longest dotted prefix that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in modules:
                    found.add(".".join(parts[:i]))
                    break
    return found


def test_imports_point_down_and_form_no_circle():
    modules = _modules()
    graph, upward = {}, []
    for name, path in modules.items():
        targets = _imports(path, modules) - {name}
        # importing `zoo` for __version__ is no edge: the package's __init__ imports nothing
        graph[name] = targets - {"zoo"}
        upward += [f"{name} -> {t}" for t in targets if _layer(t) > _layer(name)]
    assert not upward, "imports pointing up a layer:\n" + "\n".join(sorted(upward))
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import circle: {err.args[1]}") from err


def test_no_relative_imports():
    """Absolute imports only: a reader's editor (and grep) follows ``from zoo.x import y``."""
    for path in ZOO.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), path
