"""The package's structure: no import cycles, and explainers built only on published names."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interpkit"
# The modules an explainer author may import from; each publishes its names in __all__.
PUBLISHED = ("interpkit", "interpkit.core", "interpkit.analysis", "interpkit.errors", "interpkit.explainers",
             "interpkit.testing", "interpkit.testing.strategies", "interpkit.viz", "interpkit.zoo", "interpkit.data")
AUTHORS = sorted([*ROOT.glob("plugins/*/src/**/*.py"), *PACKAGE.glob("explainers/*.py"),
                  PACKAGE / "registry" / "builtin.py"])
BUILTIN = PACKAGE / "registry" / "builtin.py"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _runtime_imports(tree: ast.AST):
    """Import nodes outside ``if TYPE_CHECKING:`` blocks (those never run)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def _imported(node, module: str, package: bool) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for one import node."""
    if isinstance(node, ast.Import):
        return [(alias.name, []) for alias in node.names]
    base = module.split(".") if package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [(target, [alias.name for alias in node.names])]


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            for target, names in _imported(node, name, _is_package(path)):
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
                for found in submodules or ([target] if target in files else []):
                    if found != name:
                        graph[name].add(found)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert len(graph) > 40 and "interpkit.core" in graph["interpkit.explainers.gradcam"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _unpublished(path: Path) -> list[str]:
    """Every interpkit name ``path`` uses that its module does not publish in ``__all__``."""
    tree = ast.parse(path.read_text())
    module = _module_name(path) if path.is_relative_to(PACKAGE) else path.stem
    bad, aliases = [], {}
    for node in _runtime_imports(tree):
        for target, names in _imported(node, module, _is_package(path)):
            if not target.startswith("interpkit"):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "interpkit"
                    if alias.name not in PUBLISHED:
                        bad.append(alias.name)
                continue
            own_package = module.rsplit(".", 1)[0] if not _is_package(path) else module
            if path == BUILTIN:
                own_package = "interpkit"  # registers the package's own explainers, metrics and models
            if node.level and target.startswith(own_package):
                continue  # a sibling module of the same built-in package
            if target not in PUBLISHED:
                bad.append(target)
                continue
            exported = getattr(importlib.import_module(target), "__all__", [])
            bad += [f"{target}.{n}" for n in names if n not in exported]
    for node in ast.walk(tree):  # interpkit.name attribute access
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if node.attr not in getattr(importlib.import_module(target), "__all__", []):
                bad.append(f"{target}.{node.attr}")
    return bad


@pytest.mark.parametrize("path", AUTHORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_explainers_use_only_published_names(path):
    assert not _unpublished(path), f"{path.name} uses unpublished names: {_unpublished(path)}"


def test_the_published_names_check_catches_internals(tmp_path):
    source = tmp_path / "reaches_in.py"
    source.write_text("import interpkit\nfrom interpkit.core.gradients import per_target_gradients\n"
                      "from interpkit.core import Explainer, _secret\nx = interpkit.plugins\n")
    assert sorted(_unpublished(source)) == ["interpkit.core._secret", "interpkit.core.gradients", "interpkit.plugins"]


@pytest.mark.slow
def test_every_submodule_is_reachable_on_first_access():
    code = "import interpkit, pkgutil\n" \
           "for m in pkgutil.iter_modules(interpkit.__path__):\n" \
           "    if m.name != '__main__': getattr(interpkit, m.name)\n" \
           "print(interpkit.metrics.Deletion.name)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "deletion", done.stderr[-1000:]


# The layers of docs/architecture.md: a package imports only from its own layer or those below.
LAYERS = {
    "interpkit.errors": 0, "interpkit.version": 0, "interpkit.files": 0,
    "interpkit.core": 1, "interpkit.data": 1,
    "interpkit.analysis": 2, "interpkit.explainers": 2, "interpkit.zoo": 2,
    "interpkit.metrics": 3, "interpkit.dataset": 3, "interpkit.viz": 3, "interpkit.registry": 3,
    "interpkit.train": 3, "interpkit.testing": 3,
    "interpkit.report": 4, "interpkit.viewer": 4, "interpkit.cli": 4,
    "interpkit": 4, "interpkit.__main__": 5,  # the package's own names: the public API over layers 0-3
}


def _package(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def _layering_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        for target in targets:
            source, imported = _package(module), _package(target)
            if LAYERS[imported] > LAYERS[source]:
                found.append(f"{module} (layer {LAYERS[source]}) imports {target} (layer {LAYERS[imported]})")
            if imported == "interpkit.cli" and source not in ("interpkit.cli", "interpkit.__main__"):
                found.append(f"{module} imports the command line's {target}")
    return sorted(found)


def test_every_module_belongs_to_a_layer():
    assert all(module in LAYERS or _package(module) for module in _graph())
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or
            (p.is_dir() and (p / "__init__.py").exists())}
    assert {f"interpkit.{t}" for t in tops if t != "__init__"} <= set(LAYERS)


def test_packages_import_only_from_their_layer_or_below_even_inside_functions():
    assert _layering_violations(_graph()) == []


def test_the_layering_check_sees_an_upward_or_command_line_import():
    graph = {"interpkit.core.explanation": {"interpkit.viz.images"}, "interpkit.report": {"interpkit.cli.commands"}}
    assert _layering_violations(graph) == [
        "interpkit.core.explanation (layer 1) imports interpkit.viz.images (layer 3)",
        "interpkit.report imports the command line's interpkit.cli.commands",
    ]
