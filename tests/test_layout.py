"""The code's layout holds: layers import downwards only, no import circle, no module past 550 lines.

The layers (bertqa/__init__.py says what each holds), lowest first:

    bertqa.data < bertqa.model < bertqa.on_device < bertqa.operations < bertqa.model_maker
        < components (and bertqa_artifacts) < pipeline (and pipeline.options)
        < local_runner, kubeflow_runner (peers: neither imports the other) < bertqa_cli

The library is everything under bertqa/: it never imports the components, the pipeline, a runner
or the command line (bertqa_cli), which sit above it.

Every import counts, including those inside functions (a lazy import is still a dependency):
an edge a -> b needs layer(b) <= layer(a), and the project's modules form no cycle. A package
importing its own submodules (bertqa_cli/__init__ -> bertqa_cli.main) is an edge like any other;
the implicit import of a submodule's parent package is not.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PROJECT_ROOTS = ("bertqa", "bertqa_cli", "components", "pipeline", "local_runner", "kubeflow_runner",
                 "bertqa_artifacts")
MAX_LINES = 550

# (module prefix, layer); the longest matching prefix decides.
LAYERS = (
    ("bertqa.data", 0),
    ("bertqa.model", 1),
    ("bertqa.on_device", 2),
    ("bertqa.operations", 3),
    ("bertqa.model_maker", 4),
    ("bertqa", 4),  # bertqa/__init__.py: imports nothing
    ("bertqa_artifacts", 5),
    ("components", 5),
    ("pipeline", 6),
    ("local_runner", 7),
    ("kubeflow_runner", 7),
    ("bertqa_cli", 8),
)
# Modules of one layer that must not import each other: each runner chooses paths, an orchestrator
# and a metadata store, and reads the pipeline's options from pipeline.options.
PEERS = ("local_runner", "kubeflow_runner")
# What the library under bertqa/ never imports, lazily or not.
ABOVE_THE_LIBRARY = ("components", "pipeline", "bertqa_artifacts", "local_runner", "kubeflow_runner", "bertqa_cli")
# The library layers, which the components wrap: none of them may import TFX.
NO_TFX = ("bertqa.data", "bertqa.model", "bertqa.on_device", "bertqa.operations")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, pathlib.Path]:
    files = {}
    for root in PROJECT_ROOTS:
        if (REPO / f"{root}.py").exists():
            files[root] = REPO / f"{root}.py"
        for path in sorted((REPO / root).rglob("*.py")) if (REPO / root).is_dir() else ():
            files[module_name(path)] = path
    return files


def imported_names(source: str) -> set[str]:
    """Every module name an import statement anywhere in `source` names (X, X.Y for `from X import Y`)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a `from X import Y` of a submodule Y is X.Y)."""
    graph = {}
    for name, source in sources.items():
        edges = set()
        for imported in imported_names(source):
            if imported in sources:
                # `from X import Y` names both X and X.Y; Y is a module of X's, so the edge is to X.Y alone
                # unless X itself is imported for a name of its own.
                edges.add(imported)
        for imported in list(edges):
            parent = imported.rpartition(".")[0]
            if parent in edges and not _imports_name_of(sources[name], parent, sources):
                edges.discard(parent)
        edges.discard(name)
        graph[name] = edges
    return graph


def _imports_name_of(source: str, package: str, sources: dict[str, str]) -> bool:
    """Whether `source` imports `package` itself, or a name from it that is not one of its submodules."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name == package for alias in node.names):
            return True
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package
                and any(f"{package}.{alias.name}" not in sources for alias in node.names)):
            return True
    return False


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> int:
    matches = [(len(prefix), rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layout.py")
    return max(matches)[1]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import upwards, every import between the peers, and every import from the library (bertqa.*)
    of something above it, one line each."""
    def top(module: str) -> str:
        return module.split(".")[0]

    found = set()
    for a, targets in graph.items():
        for b in targets:
            if layer(b) > layer(a):
                found.add(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})")
            if top(a) in PEERS and top(b) in PEERS and top(a) != top(b):
                found.add(f"{a} imports its peer {b}: options both runners take belong in pipeline.options")
            if top(a) == "bertqa" and top(b) in ABOVE_THE_LIBRARY:
                found.add(f"{a} (the library) imports {b}, which sits above it")
    return sorted(found)


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in project_files().items()}


def test_the_project_has_the_layered_packages(sources):
    for package in ("bertqa.data", "bertqa.model", "bertqa.on_device", "bertqa.operations", "bertqa_cli"):
        assert package in sources, f"{package} is missing"
        assert ast.get_docstring(ast.parse(sources[package])), f"{package} has no docstring saying what it holds"
        assert "May import" in sources[package] or "may use" in sources[package]


def test_no_module_is_longer_than_the_limit():
    long = {str(path.relative_to(REPO)): n for root in ("bertqa", "components")
            for path in (REPO / root).rglob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_circle_between_project_modules(sources):
    cycle = find_cycle(import_graph(sources))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_lower_layers_never_import_higher_ones(sources):
    assert layer_violations(import_graph(sources)) == []


def test_the_library_layers_do_not_import_tfx(sources):
    offenders = sorted(name for name, source in sources.items()
                       if name.startswith(NO_TFX) and any(n == "tfx" or n.startswith("tfx.")
                                                          for n in imported_names(source)))
    assert offenders == []


# --- the checks themselves fail on what they look for --------------------------------------------


def test_find_cycle_finds_a_lazy_import_circle():
    sources = {
        "components.trainer.module": "from components.trainer import child_process\n",
        "components.trainer.child_process": "def main():\n    from components.trainer import module\n",
        "components.trainer": "",
    }
    cycle = find_cycle(import_graph(sources))
    assert cycle is not None and set(cycle) == {"components.trainer.module", "components.trainer.child_process"}


def test_find_cycle_accepts_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycle(graph) is None


def test_layer_violations_names_an_upward_import():
    sources = {
        "bertqa.model.evaluation": "def f():\n    from bertqa.on_device.runtime import TfliteQaRunner\n",
        "bertqa.on_device.runtime": "from bertqa.model import serving\n",
        "bertqa.model.serving": "",
        "bertqa.model": "",
    }
    assert layer_violations(import_graph(sources)) == [
        "bertqa.model.evaluation (layer 1) imports bertqa.on_device.runtime (layer 2)"]


def test_layer_violations_names_the_library_importing_the_pipeline_or_a_runner():
    sources = {
        "bertqa.model_maker.question_answer": "def f():\n    from pipeline import options\n",
        "bertqa.operations.lineage": "import local_runner\n",
        "pipeline.options": "",
        "pipeline": "",
        "local_runner": "",
    }
    assert layer_violations(import_graph(sources)) == [
        "bertqa.model_maker.question_answer (layer 4) imports pipeline.options (layer 6)",
        "bertqa.model_maker.question_answer (the library) imports pipeline.options, which sits above it",
        "bertqa.operations.lineage (layer 3) imports local_runner (layer 7)",
        "bertqa.operations.lineage (the library) imports local_runner, which sits above it"]


def test_layer_violations_names_a_runner_importing_its_peer():
    sources = {"kubeflow_runner": "def parse_args():\n    import local_runner\n", "local_runner": ""}
    assert layer_violations(import_graph(sources)) == [
        "kubeflow_runner imports its peer local_runner: options both runners take belong in pipeline.options"]


def test_the_command_line_sits_above_the_runners(sources):
    """bertqa_cli runs the local runner (bertqa run, retrain) and compiles with the Kubeflow one."""
    graph = import_graph(sources)
    cli_imports = set().union(*(targets for name, targets in graph.items() if name.startswith("bertqa_cli")))
    assert {"local_runner", "kubeflow_runner"} <= cli_imports
    assert layer("bertqa_cli.main") > layer("local_runner") == layer("kubeflow_runner") > layer("pipeline.options")


def test_a_module_outside_every_layer_is_refused():
    with pytest.raises(AssertionError, match="in no layer"):
        layer("somewhere_else.module")


def test_the_slowest_modules_conftest_schedules_first_are_test_modules_here():
    """A renamed module would silently fall back to the end of make test's queue."""
    from conftest import SLOWEST_MODULES

    missing = [name for name in SLOWEST_MODULES if not (REPO / "tests" / name).is_file()]
    assert not missing, f"tests/conftest.py SLOWEST_MODULES names no such module: {missing}"
    assert len(set(SLOWEST_MODULES)) == len(SLOWEST_MODULES)
