"""Architecture: common imports no framework glue; client and server never import each other."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "common": {"flwr", "hydra", "omegaconf", "client", "server", "simulations"},
    "client": {"server", "simulations", "hydra"},
    "server": {"client", "simulations"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["common", "client", "server", "simulations", "conf"])
def test_packages_import_from_this_checkout(package: str) -> None:
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == ROOT / package
