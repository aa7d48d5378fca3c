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
