"""The layering of DESIGN.md §3 holds for every import at any depth, function-level ones included.

features ← models ← training / serving ← clm, with simulation on its own: an import inside a function is
still a dependency (it only fails later), so the whole syntax tree of every module is walked, not just
its top. `importlib.import_module("...")` with a literal name counts as an import too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# which of our packages each package may import (itself always)
ALLOWED: dict[str, frozenset[str]] = {
    "features": frozenset(),
    "models": frozenset({"features"}),
    "training": frozenset({"features", "models"}),
    "serving": frozenset({"features", "models"}),
    "simulation": frozenset(),
    "clm": frozenset({"features", "models", "training", "serving", "simulation"}),
}
OURS = frozenset(ALLOWED)


@dataclass(frozen=True)
class Import:
    module: str  # dotted name of the importing module
    path: Path
    line: int
    target: str  # dotted name imported


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """`from ..x import y` inside `module` → the absolute name of `x`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([name] if name else [])])


def imports_of(path: Path, root: Path = ROOT) -> Iterator[Import]:
    """Every import in the file, at any depth: `import x`, `from x import y` (relative ones resolved) and
    `importlib.import_module("x")` / `__import__("x")` with a literal name."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = (
                resolve_relative(module, path.name == "__init__.py", node.level, node.module)
                if node.level
                else node.module or ""
            )
            yield Import(module, path, node.lineno, target)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield Import(module, path, node.lineno, node.args[0].value)


def layering_violations(root: Path = ROOT) -> list[str]:
    """One line per forbidden import: `path:line: module imports target (package may import only ...)`."""
    found = []
    for package in sorted(ALLOWED):
        for path in sorted((root / package).rglob("*.py")):
            for imp in imports_of(path, root):
                top = imp.target.split(".")[0]
                if top in OURS and top != package and top not in ALLOWED[package]:
                    may = ", ".join(sorted(ALLOWED[package])) or "nothing of ours"
                    found.append(
                        f"{imp.path.relative_to(root)}:{imp.line}: {imp.module} imports {imp.target} "
                        f"({package} may import only: {may})"
                    )
    return found


def test_no_package_imports_against_the_layering() -> None:
    violations = layering_violations()
    assert not violations, "forbidden imports (DESIGN.md §3):\n" + "\n".join(violations)


def test_the_scan_sees_function_level_relative_and_importlib_imports(tmp_path: Path) -> None:
    """The checker itself: a breach hidden in a function, a relative import or importlib is caught."""
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "features" / "deep.py").write_text("def f():\n    from training.train import train\n")
    (tmp_path / "simulation" / "rel.py").write_text("from ..clm import cli\n")
    (tmp_path / "models" / "dyn.py").write_text("import importlib\nimportlib.import_module('serving.app')\n")
    (tmp_path / "serving" / "ok.py").write_text(
        "import features.jobs\nfrom . import ok\nfrom models import x\n"
    )
    (tmp_path / "training" / "bad.py").write_text("import os\n\n\nclass A:\n    import serving.app\n")
    violations = layering_violations(tmp_path)
    assert [v.split(": ", 1)[0] for v in violations] == [
        "features/deep.py:2",
        "models/dyn.py:2",
        "simulation/rel.py:1",
        "training/bad.py:5",
    ], violations
    assert "features.deep imports training.train (features may import only: nothing of ours)" in violations[0]
