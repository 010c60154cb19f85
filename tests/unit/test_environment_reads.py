"""Only a handler reads its environment, once, at import: nothing in the shared layer does.

The local stack sets ``os.environ`` to a function's environment only while its handler module
imports (as Lambda gives each function its own), so code that read ``os.environ`` later would
see another world locally than in AWS. DESIGN.md: no code below the handler reads it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.template_support import REPO

LAYER_SOURCES = sorted((REPO / "layers").rglob("*.py"))
HANDLER_SOURCES = sorted((REPO / "functions").rglob("*.py"))


_NAMES = ("environ", "environb", "getenv", "putenv")


def environment_reads(tree: ast.AST) -> list[ast.AST]:
    """Every ``os.environ`` / ``os.getenv`` / ``os.putenv`` use, and ``from os import environ``-likes."""
    return [
        node
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in _NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )
        or (isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in _NAMES for a in node.names))
    ]


def test_the_check_finds_each_way_of_reading_the_environment() -> None:
    # Given code that reads the environment in each way the check knows
    source = "import os\nfrom os import getenv\na = os.environ['A']\nb = os.getenv('B', 'x')\n"

    # Then each is found (three reads: the import and the two attribute uses)
    assert len(environment_reads(ast.parse(source))) == 3


def test_there_is_layer_code_to_check() -> None:
    assert any(path.name == "settings.py" for path in LAYER_SOURCES)


@pytest.mark.parametrize("path", LAYER_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_layer_code_reads_the_environment(path: Path) -> None:
    reads = environment_reads(ast.parse(path.read_text(), filename=str(path)))
    assert not reads, f"{path.relative_to(REPO)} reads os.environ at lines {[n.lineno for n in reads]}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", HANDLER_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_handlers_pass_os_environ_only_to_container_from_environ(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed = {
        id(arg)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "from_environ"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "Container"
        for arg in call.args
    }
    others = [node for node in environment_reads(tree) if id(node) not in allowed]
    assert not others, f"{path.relative_to(REPO)} reads os.environ outside Container.from_environ"
