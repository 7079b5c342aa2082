"""The dependency direction of the design card, enforced on the source tree.

secagg <- protocols; dp stands alone; recsys composes them; analysis drives all; the privagg
facade sits above dp and protocols and nothing imports it. A lower layer importing a higher
one (even lazily inside a function) fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("secagg", "protocols", "dp", "recsys", "analysis", "privagg")
ALLOWED: dict[str, set[str]] = {
    "secagg": {"secagg"},
    "protocols": {"protocols", "secagg"},
    "dp": {"dp"},
    "recsys": {"recsys", "secagg", "protocols", "dp"},
    "analysis": set(PACKAGES) - {"privagg"},
    "privagg": {"privagg", "secagg", "protocols", "dp"},
}
# Third-party imports each layer must stay free of (secagg stays light and torch-free).
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "secagg": {"torch", "opacus", "random"},
    "protocols": {"torch", "opacus", "random"},
    "dp": {"random"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_lower_layers(package: str) -> None:
    violations = []
    for path in source_files(package):
        for name in imported_top_levels(path) & set(PACKAGES):
            if name not in ALLOWED[package]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "layering violated:\n" + "\n".join(violations)


@pytest.mark.parametrize("package", sorted(FORBIDDEN_THIRD_PARTY))
def test_security_layers_avoid_forbidden_modules(package: str) -> None:
    violations = []
    for path in source_files(package):
        for name in imported_top_levels(path) & FORBIDDEN_THIRD_PARTY[package]:
            violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_walker_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recsys import trainer\n    import dp.events\n")
    assert imported_top_levels(bad) == {"recsys", "dp"}


def test_every_package_ships_py_typed() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package
