"""The package's layers import only downward, and only the adapter imports ultralytics."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "attention"
# Bottom to top: a module may import its own layer and the layers before it.
LAYERS = ["errors", "cfg", "losses", "blocks", "adapter", "data", "training", "inference", "evaluation", "cli"]
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "attention" and parts[1] in LAYERS else None


def imports(path: Path) -> list[str]:
    """Every module path an import statement in path names (from attention import cfg -> attention.cfg)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "attention":
            out += [f"attention.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: name(p))
def test_imports_go_only_downward(path):
    own = LAYERS.index(layer_of(name(path)))
    for target in imports(path):
        if target.split(".")[0] != "attention":
            continue
        layer = layer_of(target)
        assert layer is not None, f"{name(path)} imports {target}: the package root pulls in every layer"
        assert LAYERS.index(layer) <= own, f"{name(path)} ({LAYERS[own]}) imports {target} ({layer}): upward"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: name(p))
def test_only_the_adapter_imports_ultralytics(path):
    found = [t for t in imports(path) if t.split(".")[0] == "ultralytics"]
    assert not found or layer_of(name(path)) == "adapter", f"{name(path)} imports {found}"


@pytest.mark.parametrize("layer", ["blocks", "losses"])
def test_blocks_and_losses_are_plain_torch(layer):
    for path in (PACKAGE / layer).glob("*.py"):
        for target in imports(path):
            top = target.split(".")[0]
            assert top in {"torch", "attention", "__future__", "math", "numbers", "typing", "contextlib", "dataclasses"}, (
                path, target)


def test_the_package_root_only_wires_the_layers():
    # `import attention`: the blocks register themselves, and the adapter is installed (that is the plugin).
    assert {t for t in imports(PACKAGE / "__init__.py")} <= {"attention.blocks", "attention.adapter",
                                                             "attention.blocks.gate", "attention.blocks.registry"}


def test_the_error_type_is_a_leaf():
    # attention/errors.py sits below every layer, so it may import nothing of the package (nor anything else).
    assert imports(PACKAGE / "errors.py") == []
