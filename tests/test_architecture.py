"""The house rules of `imgclf/`, checked on its source (AST only, nothing imported, so it is fast).

Every import counts, module-level or inside a function; only `if TYPE_CHECKING:` blocks are skipped
(they never run). Importing `a.b.c` also runs `a` and `a.b`, so package `__init__` files hold no imports.
The rules: the layers below (a unit imports only itself and lower layers; units of one layer are
peers and do not import each other), no import cycle, no ZenML anywhere, nothing that reaches torch or
ZenML from the service, no function over 60 lines, no module over 400 lines.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a unit is `imgclf.<first name>` (a package or a module)
LAYERS: list[set[str]] = [
    {"imgclf.paths", "imgclf.logs", "imgclf.render", "imgclf.provenance", "imgclf.scores"},
    {"imgclf.preprocess"},
    {"imgclf.bundle", "imgclf.data", "imgclf.monitoring", "imgclf.labelling"},
    {"imgclf.augment"},
    {"imgclf.models", "imgclf.stages"},
    {"imgclf.inference", "imgclf.registry"},
    {"imgclf.latency"},
    {"imgclf.train", "imgclf.evaluate", "imgclf.export", "imgclf.drift"},
    {"imgclf.compress", "imgclf.promotion"},
    {"imgclf.serving"},
    {"imgclf.batch"},
    {"imgclf.commands"},
    {"imgclf.cli"},
]
NEVER_IN_CORE = {"zenml"}
NEVER_IN_SERVICE = {"torch", "torchvision", "timm", "zenml"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


@dataclass
class Package:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: dict[str, set[str]] = field(default_factory=dict)  # module -> imgclf modules it runs
    external: dict[str, set[str]] = field(default_factory=dict)  # module -> top-level outside packages


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def scan(root: Path) -> Package:
    """The import graph of the `imgclf` package under `root`."""
    package = Package()
    for path in sorted((root / "imgclf").rglob("*.py")):
        package.modules[_module_name(path, root)] = path
    for name, path in package.modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets.add(base)
                targets.update(
                    f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in package.modules
                )
        package.imports[name] = {m for t in targets for m in _with_parents(t) if m in package.modules and m != name}
        package.external[name] = {t.split(".")[0] for t in targets if t.split(".")[0] != "imgclf"}
    return package


def unit_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_of(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


def layering_violations(package: Package) -> list[str]:
    problems = []
    for module, targets in package.imports.items():
        if module == "imgclf":
            continue
        unit = unit_of(module)
        own = layer_of(unit)
        if own is None:
            problems.append(f"{module}: {unit} is in no layer of tests/test_architecture.py; place it there")
            continue
        for target in sorted(targets):
            other = unit_of(target)
            if target == "imgclf" or other == unit:
                continue
            theirs = layer_of(other)
            if theirs is None or theirs >= own:
                kind = "a peer" if theirs == own else "a higher layer"
                problems.append(f"{module} imports {target}: {other} is {kind} than {unit}")
    return problems


def cycles(package: Package) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for start in package.imports:
        if start in index:
            continue
        work = [(start, iter(sorted(package.imports[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(package.imports[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def reachable(package: Package, module: str) -> tuple[set[str], set[str]]:
    """(imgclf modules, outside packages) that importing `module` can run."""
    seen, todo = set(), [*_with_parents(module)]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(package.imports[current])
    return seen, {name for m in seen for name in package.external[m]}


def service_violations(package: Package) -> list[str]:
    problems = []
    for module in package.modules:
        if module.startswith("imgclf.serving"):
            _, outside = reachable(package, module)
            problems += [f"{module} reaches {name}" for name in sorted(outside & NEVER_IN_SERVICE)]
    return problems


def core_violations(package: Package) -> list[str]:
    return [f"{m} imports {name}" for m, names in package.external.items() for name in sorted(names & NEVER_IN_CORE)]


def size_violations(package: Package) -> list[str]:
    problems = []
    for module, path in package.modules.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            problems.append(f"{module}: {len(text.splitlines())} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{module}.{node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return problems


def init_violations(package: Package) -> list[str]:
    return [
        f"{module}/__init__.py imports {sorted(targets)}"
        for module, targets in package.imports.items()
        if package.modules[module].name == "__init__.py" and (targets or package.external[module])
    ]


@pytest.fixture(scope="module")
def package() -> Package:
    return scan(ROOT)


def test_layers_point_down(package):
    assert layering_violations(package) == []


def test_no_import_cycles(package):
    assert cycles(package) == []


def test_zenml_stays_out_of_the_core(package):
    assert core_violations(package) == []


def test_the_service_reaches_neither_torch_nor_zenml(package):
    assert service_violations(package) == []
    modules, _ = reachable(package, "imgclf.serving.service")
    assert "imgclf.bundle" in modules and "imgclf.models.trained" not in modules  # the scan follows real edges


def test_evaluate_and_export_do_not_import_training(package):
    for module, targets in package.imports.items():
        if unit_of(module) in ("imgclf.evaluate", "imgclf.export"):
            assert not {t for t in targets if unit_of(t) == "imgclf.train"}, module


def test_package_inits_import_nothing(package):
    assert init_violations(package) == []


def test_functions_and_modules_stay_short(package):
    assert size_violations(package) == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("imgclf/serving/predictor.py", "def _lazy():\n    import torch\n", "imgclf.serving.predictor reaches torch"),
        (
            "imgclf/evaluate/metrics.py",
            "from imgclf.train.loop import fit\n",
            "imgclf.evaluate.metrics imports imgclf.train.loop",
        ),
        ("imgclf/data/manifest.py", "def _lazy():\n    import zenml\n", "imgclf.data.manifest imports zenml"),
        ("imgclf/paths.py", "def _lazy():\n    from imgclf.cli import main\n", "imgclf.paths imports imgclf.cli"),
        ("imgclf/paths.py", "def _lazy():\n    from imgclf.data import cache\n", "cycle"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path, module, line, expected):
    """The checks above fail when a forbidden import is added (here to a copy of the package)."""
    shutil.copytree(ROOT / "imgclf", tmp_path / "imgclf")
    target = tmp_path / module
    target.write_text(target.read_text() + "\n\n" + line)
    package = scan(tmp_path)
    assert service_violations(scan(ROOT)) == [] and layering_violations(scan(ROOT)) == []  # the original is clean
    problems = layering_violations(package) + core_violations(package) + service_violations(package)
    if expected == "cycle":
        assert any("imgclf.paths" in c and "imgclf.data.cache" in c for c in cycles(package))
    else:
        assert any(p.startswith(expected) for p in problems), problems
