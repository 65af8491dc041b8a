"""The service is wired from its parts, never imported by them (no import cycle)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO


def _imports(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    names = set()
    for node in ast.walk(tree):  # TYPE_CHECKING imports count: they are a cycle too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    "path",
    ["pipeline/api.py", "pipeline/http.py", "pipeline/ownership.py", "pipeline/ports.py"],
)
def test_parts_do_not_import_the_service(path: str) -> None:
    assert "pipeline.service" not in _imports(path)
    assert "pipeline.bootstrap" not in _imports(path)
