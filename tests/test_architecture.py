"""The project's shape (docs/ARCHITECTURE.md): imports between its own modules form no circle, and the problem and
network packages stand below the harness."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGES = ("bench", "models", "tasks")


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its code (function-level imports included)."""
    modules = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from bench import registry` imports the module bench.registry
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert graph["bench.runner"] >= {"bench.train", "bench.grid"}  # the graph is really read
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_models_and_tasks_stand_below_the_harness():
    graph = import_graph()
    offenders = {name: sorted(t for t in targets if t.startswith("bench"))
                 for name, targets in graph.items() if name.split(".")[0] in ("models", "tasks")}
    assert not {k: v for k, v in offenders.items() if v}


#: the layers of docs/ARCHITECTURE.md, lowest first: a module imports only modules of its own layer or below. A new
#: module fails `test_imports_point_down_the_layers` until it is given a layer here (and in ARCHITECTURE.md).
LAYERS = [
    ("problems and networks", ("tasks", "models")),
    # `bench` alone is the package's __init__ (its version), which `from bench import registry` also names
    ("leaf services", ("bench", "bench.metrics", "bench.stats", "bench.survival", "bench.text", "bench.options",
                       "bench.errors", "bench.provenance", "bench.folders", "bench.labels", "bench.results",
                       "bench.bounded", "bench.gpu")),
    ("registry", ("bench.registry",)),
    ("configuration", ("bench.config", "bench.grid")),
    ("training", ("bench.evaluate", "bench.forward", "bench.hooks", "bench.train", "bench.preflight",
                  "bench.protocol")),
    ("running a suite", ("bench.runner", "bench.local_backend", "bench.ray_backend", "bench.bundles")),
    ("output", ("bench.report",)),
    ("entry points", ("bench.trained", "bench.perf", "bench.api", "bench.cli", "bench.__main__")),
]
MAX_LINES = 700


def layer_of(module: str) -> int | None:
    """The layer of `module`: that of the longest entry of LAYERS that is the module or a package holding it."""
    best = None
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (number, len(prefix))
    return None if best is None else best[0]


def test_imports_point_down_the_layers():
    graph = import_graph()
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_architecture.py LAYERS: {unplaced}"
    upward = sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                    for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))
    assert not upward, "imports running back up:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("bench.report.tables") > layer_of("bench.results") > layer_of("tasks.base")
    assert layer_of("bench.stats") < layer_of("bench.train") < layer_of("bench.cli") == len(LAYERS) - 1
    assert layer_of("bench") == 1 and layer_of("somewhere.else") is None


def test_no_source_file_is_a_storeroom():
    """One job per file: no module of the package is over MAX_LINES lines."""
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert len(sizes) > 30
    assert not {path: n for path, n in sizes.items() if n > MAX_LINES}
