"""Agents' code uses only the SDK of Clove: what an agent author has (``pip install
clove-sdk``) is all an agent in this repository may import. The package floors themselves are
import-linter contracts in pyproject.toml (``make lint``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT_DIRS = ("tests/agents", "bench/agents", "examples/agents", "examples/rover/agents", "examples/trading/agents", "hil/agents")


def agent_scripts() -> list[Path]:
    return sorted(p for d in AGENT_DIRS if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


def clove_imports(path: Path) -> list[str]:
    """Every ``clove``/``clove_*`` module the script imports, wherever in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [n for n in names if n == "clove" or n.startswith(("clove.", "clove_"))]
    return found


def test_there_are_agent_scripts_to_check() -> None:
    assert len(agent_scripts()) > 20


@pytest.mark.parametrize("script", agent_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_an_agent_imports_only_the_sdk(script: Path) -> None:
    outside = [m for m in clove_imports(script) if m != "clove_sdk" and not m.startswith("clove_sdk.")]
    assert not outside, f"{script.relative_to(ROOT)} imports {outside}: agents may use only clove_sdk"
