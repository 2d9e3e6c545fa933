"""Imports point one way: runtime <- devices <- converters <- sdk (issue 12, item 32).

Every module of the four layers is parsed (not imported: lazy imports inside functions
count too) and each import is resolved to an absolute module name; an import of a higher
layer fails the test with the file and line.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: folder -> (package it installs as, layer rank; higher ranks may import lower ones)
LAYERS = {"runtime": ("edgepack.runtime", 0), "devices": ("edgepack.devices", 1),
          "converters": ("edgepack.converters", 2), "sdk": ("edgepack", 3)}


def layer_of(module: str) -> int | None:
    """The layer rank of an absolute module name, None outside edgepack."""
    if module != "edgepack" and not module.startswith("edgepack."):
        return None
    for package, rank in sorted(LAYERS.values(), key=lambda pr: -len(pr[0])):
        if module == package or module.startswith(package + "."):
            return rank
    return None


def module_name(path: Path, folder: str) -> str:
    package = LAYERS[folder][0]
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def imports_of(path: Path, name: str):
    """(line, absolute module) for every import statement in the file."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "edgepack":
                yield node.lineno, target
            for alias in node.names:  # `from edgepack import devices` imports edgepack.devices
                yield node.lineno, f"{target}.{alias.name}"


def upward_imports() -> list[str]:
    found = []
    for folder, (_, rank) in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = module_name(path, folder)
            for line, target in imports_of(path, name):
                target_rank = layer_of(target)
                if target_rank is None or target_rank <= rank:
                    continue
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return found


def test_no_import_points_up_the_layers():
    assert upward_imports() == []


def test_resolver_catches_an_upward_import(tmp_path):
    # The checker itself must see relative, absolute and lazy imports.
    code = ("def f():\n    from edgepack.benchmark import time_calls\n"
            "from ..conversion import convert\nimport edgepack.cli.main\n")
    fake = tmp_path / "speed.py"
    fake.write_text(code)
    targets = [t for _, t in imports_of(fake, "edgepack.converters.int8.speed")]
    assert "edgepack.benchmark" in targets and "edgepack.cli.main" in targets
    assert "edgepack.converters.conversion" in targets  # `..` from converters.int8
    fake.write_text("from edgepack import devices, convert\n")
    targets = [t for _, t in imports_of(fake, "edgepack.converters.pipeline")]
    assert targets == ["edgepack.devices", "edgepack.convert"]
    assert layer_of("edgepack.benchmark") == 3 and layer_of("edgepack.runtime.benchmark") == 0
    assert layer_of("edgepack.devices.check") == 1 and layer_of("numpy") is None


def test_benchmark_reexport_is_the_runtime_one():
    import edgepack.benchmark as sdk_benchmark
    import edgepack.runtime.benchmark as runtime_benchmark
    assert sdk_benchmark.time_interleaved is runtime_benchmark.time_interleaved
    assert sdk_benchmark.BenchResult is runtime_benchmark.BenchResult
