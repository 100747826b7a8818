"""The package is a stack of layers; a module imports only from its own package or from layers below.

Every ``import`` and ``from ... import`` in the source, including the ones inside functions (the lazy
imports), is read with ``ast``; an import that reaches up a layer, or sideways into a peer package of
the same layer, fails here with the file and line. The layers and why each dependency exists are in
docs/design.md ("Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import splatdistill

PACKAGE = Path(splatdistill.__file__).parent

# Lowest first. Units on one row are peers: neither may import the other.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors"),
    ("fileio", "validate", "device"),
    ("scene",),
    ("cameras",),
    ("formats",),
    ("data",),
    ("render",),
    ("ops",),
    ("train", "compress"),
    ("distill",),
    ("view", "demo"),
    ("commands",),
    ("cli",),
    ("__main__",),
]
RANK = {unit: i for i, row in enumerate(LAYERS) for unit in row}


def unit_of(module: str) -> str:
    """``splatdistill.formats.ply`` -> ``formats``; ``splatdistill`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every splatdistill import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = module_of(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "splatdistill"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "splatdistill":
                continue
            # ``from splatdistill import batch`` names a module: count the module
            targets = [f"{name}.{a.name}" if name == "splatdistill" else name for a in node.names]
            found += [(node.lineno, t) for t in targets]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {unit_of(module_of(p)) for p in SOURCES}
    assert units - set(RANK) == set(), "a new top-level module or package: give it a row in LAYERS"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_downward(path):
    own = unit_of(module_of(path))
    bad = []
    for line, target in imported_modules(path):
        unit = unit_of(target)
        if unit == own:
            continue
        if unit not in RANK:
            bad.append(f"{path.name}:{line} imports {target}: not a known layer")
        elif RANK[unit] >= RANK[own]:
            kind = "a peer" if RANK[unit] == RANK[own] else "a higher layer"
            bad.append(
                f"{path.relative_to(PACKAGE)}:{line} imports {target} ({kind}: {unit} is on row "
                f"{RANK[unit]}, {own} on row {RANK[own]})"
            )
    assert not bad, "\n".join(bad)


def test_the_check_catches_an_upward_import(tmp_path):
    """The walker sees lazy imports inside functions and relative imports."""
    fake = PACKAGE / "render" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..train import trainer\n    import splatdistill.cli\n")
    try:
        got = [t for _, t in imported_modules(fake)]
    finally:
        fake.unlink()
    assert got == ["splatdistill.train", "splatdistill.cli"]
    assert all(RANK[unit_of(t)] > RANK["render"] for t in got)
