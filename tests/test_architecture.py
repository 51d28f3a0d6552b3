"""The layers' rules, checked from the code itself (DESIGN.md, "What never imports what"):
every SQL statement lives under ``transcripts.db``, and each layer imports only downwards."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transcripts"
# What builds or runs a statement: only repositories under db/ may.
STATEMENT_BUILDERS = {"select", "insert", "update", "delete", "text", "func", "literal_column"}
STATEMENT_CALLS = {"execute", "scalar", "scalars", "get_one"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        if name.startswith("transcripts.generated"):
            continue
        yield name, ast.parse(path.read_text(), filename=str(path))


MODULES = dict(_modules())


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, and every ``module.attribute`` it imports from one."""
    found: set[str] = set()
    for node in ast.walk(MODULES[name]):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _importers(package: str) -> list[str]:
    return [name for name in MODULES if _within(name, package)]


RULES = [
    # (these modules, must never import, why)
    ("transcripts.db", "transcripts.dialects", "the database layer knows no dialect"),
    ("transcripts.db", "transcripts.services", "repositories hold statements, not rules"),
    ("transcripts.domain", "transcripts.db", "domain objects stand alone"),
    ("transcripts.domain", "transcripts.dialects", "domain objects stand alone"),
    ("transcripts.errors", "transcripts.db", "errors stand alone"),
    ("transcripts.errors", "transcripts.dialects", "errors stand alone"),
    ("transcripts.services", "transcripts.dialects", "services never know a dialect"),
    ("transcripts.dialects", "transcripts.db", "a dialect maps domain objects, not rows"),
    ("transcripts.cli", "transcripts.db.tables", "the CLI goes through services"),
    ("transcripts.demo", "transcripts.db", "the demo goes through services"),
]


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES)
def test_layers_import_only_downwards(layer: str, forbidden: str, why: str) -> None:
    offenders = {
        name: sorted(target for target in _imports(name) if _within(target, forbidden))
        for name in _importers(layer)
    }
    assert not {name: found for name, found in offenders.items() if found}, why


def test_every_statement_lives_under_db() -> None:
    offenders: dict[str, list[str]] = {}
    for name, tree in MODULES.items():
        if _within(name, "transcripts.db"):
            continue
        for node in ast.walk(tree):
            problem = None
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("sqlalchemy")
            ):
                if node.module.startswith("sqlalchemy.dialects"):
                    problem = f"imports {node.module}"
                built = {alias.name for alias in node.names} & STATEMENT_BUILDERS
                if built:
                    problem = f"imports {', '.join(sorted(built))} from {node.module}"
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in STATEMENT_CALLS
            ):
                problem = f"calls .{node.func.attr}() on line {node.lineno}"
            if problem:
                offenders.setdefault(name, []).append(problem)
    assert not offenders


def test_the_checks_see_the_modules_they_judge() -> None:
    # A rule over no modules would pass for nothing.
    for layer, _, _ in RULES:
        assert _importers(layer), layer
    assert "transcripts.services.sessions" in MODULES
    assert "transcripts.db.sessions" in _importers("transcripts.db")
    assert any(
        _within(target, "transcripts.db") for target in _imports("transcripts.services.sessions")
    )
