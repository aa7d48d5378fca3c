"""How the package's layers may depend on each other."""

import ast
from pathlib import Path

import refacex_plugin

PACKAGE = Path(refacex_plugin.__file__).parent


def _core_modules() -> list[Path]:
    """Every module users run: all but the bench (the measurement layer) and the CLI (a front end
    that offers the bench)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0]
        if top == "bench" or top.startswith("cli"):
            continue
        out.append(path)
    return out


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, absolute dotted names)`` of every import statement in ``path``, at any depth of the
    file (lazy imports inside functions count too); ``from . import bench`` names ``...bench``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = ["refacex_plugin", *parts[:-1]]  # where a relative import starts (also for __init__)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.append((node.lineno, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            out.append((node.lineno, [stem, *(f"{stem}.{alias.name}" for alias in node.names)]))
    return out


def _is_bench(name: str) -> bool:
    return name == "refacex_plugin.bench" or name.startswith("refacex_plugin.bench.")


def test_the_core_never_imports_the_bench():
    """The bench measures the core, so it may import the core; the core must run without it."""
    assert len(_core_modules()) > 20  # the walk found the package
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {next(filter(_is_bench, names))}"
        for path in _core_modules()
        for line, names in _imports(path)
        if any(map(_is_bench, names))
    ]
    assert not offenders, "core modules import the bench:\n" + "\n".join(offenders)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules ``path`` imports when it runs, lazily too (inside functions); not those
    imported only for type checking, nor a package's ``__init__`` importing its own submodules."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in _imports_of(node, path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not (is_package and target.startswith(name + ".")):
                out.add(target)
    return out


def _imports_of(node, path: Path) -> list[str]:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = ["refacex_plugin", *parts[:-1]]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = package[: len(package) - node.level + 1] if node.level else []
    stem = ".".join([*base, *([node.module] if node.module else [])])
    return [stem, *(f"{stem}.{alias.name}" for alias in node.names)]


def test_no_import_circle_in_the_package():
    """No module reaches itself through what it imports (lazy imports count: they run too)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _runtime_imports(p, set(paths)) for name, p in paths.items()}
    assert len(graph) > 60 and graph["refacex_plugin.writer"]  # the walk found the package and its imports
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
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
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


FRONT_ENDS = ("refacex_fiftyone", "fiftyone_plugin", "labelstudio_backend")


def test_the_core_never_imports_a_front_end():
    """The FiftyOne API and plugin and the Label Studio backend call the core; the core (but the
    bench, which measures a front end's throughput, and the CLI, itself a front end) imports none."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in _core_modules()
        for line, names in _imports(path)
        for name in names
        if name.split(".")[0] in FRONT_ENDS
    ]
    assert not offenders, "core modules import a front end:\n" + "\n".join(offenders)
