"""The layers of the `shared` package, held by a test (as import-linter's `layers` contract would):

    shared.core        pure: the standard library and other core modules only (no azure, requests, sockets,
                       threads or files of its own choosing beyond reading templates)
    shared.adapters    storage, HTTP, credentials: core, and the SDKs
    shared.delivery    destinations and kept deliveries: core and adapters
    shared.app         the process: everything

A module may import its own layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shared"
LAYERS = ("core", "adapters", "delivery", "app")
# Standard-library modules that do I/O or talk to the network: none of them belongs in the pure core.
IMPURE_STDLIB = {"socket", "ssl", "http", "urllib.request", "subprocess", "threading", "asyncio", "selectors",
                 "os", "random", "time"}
CORE_THIRD_PARTY = {"simdjson"}   # pure third-party packages the core may use: a JSON validator (result_body)


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "shared" and parts[1] in LAYERS else None


def test_every_module_of_the_package_is_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    assert all(modules(layer) for layer in LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_its_own_and_lower_layers(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    wrong = [(path.name, name) for path in modules(layer) for name in imports(path)
             if (layer_of(name) or layer) not in allowed or (name.startswith("shared") and not layer_of(name)
                                                             and name not in ("shared",))]
    assert wrong == []


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_the_core_imports_nothing_but_the_standard_library_and_itself(path):
    stdlib = set(sys.stdlib_module_names)
    wrong = []
    for name in imports(path):
        top = name.split(".")[0]
        if name.startswith("shared."):
            if layer_of(name) != "core":
                wrong.append(name)
        elif top == "__future__" or top in CORE_THIRD_PARTY:
            continue
        elif top not in stdlib or top in IMPURE_STDLIB or name in IMPURE_STDLIB:
            wrong.append(name)
    assert wrong == []


def test_the_check_itself_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import requests\nfrom azure.storage.blob import BlobClient\nfrom shared.app.relay import Relay\n")
    assert {"requests", "azure.storage.blob", "shared.app.relay"} <= set(imports(bad))
    assert layer_of("shared.app.relay") == "app"
