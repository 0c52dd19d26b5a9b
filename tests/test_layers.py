"""The arrows of docs/ARCHITECTURE.md: the core imports no adapter, adapters not each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"
CORE = ["config", "model", "errors", "spoolnames", "shipnames", "backoff", "http", "secrets"]
ADAPTERS = [
    "media",
    "alerts",
    "transport",
    "cdr",
    "publish",
    "spool",
    "roles",
    "store",
    "service_unit",
]


def imported(module: Path) -> set[str]:
    """Every agent module `module` imports, at any depth (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {n for n in names if n == "agent" or n.startswith("agent.")}


def reaches(names: set[str], room: str) -> bool:
    return any(n == f"agent.{room}" or n.startswith(f"agent.{room}.") for n in names)


@pytest.mark.parametrize("core", [c for c in CORE if (AGENT / f"{c}.py").exists()])
def test_the_core_imports_no_adapter(core: str) -> None:
    names = imported(AGENT / f"{core}.py")
    assert [room for room in ADAPTERS if reaches(names, room)] == []


def test_the_checker_sees_an_adapter_import(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    from agent.media.tags import write_tags\n")
    assert reaches(imported(leaky), "media")


@pytest.mark.parametrize(("one", "other"), [("cdr", "transport"), ("transport", "cdr")])
def test_adapters_never_import_each_other(one: str, other: str) -> None:
    for module in (AGENT / one).glob("*.py"):
        assert not reaches(imported(module), other), module.name
