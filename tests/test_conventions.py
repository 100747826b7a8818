"""Tests use the package's public names only.

Every ``tests/*.py`` is read with ``ast``. A test fails here when it imports an underscore name from
``splatdistill`` (``from splatdistill.x import _name``, at any depth, also inside functions), or reaches
one through a name it imported from ``splatdistill`` (``spz._name``, ``monkeypatch.setattr(cli, "_name",
...)``). Dunder names (``__file__``) are public. Attributes of objects the test made itself
(``trainer._memo``) are not imports and are not checked. Make the name public or test through the
public API instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = "splatdistill"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _from_package(module: str | None) -> bool:
    return module is not None and (module == PACKAGE or module.startswith(PACKAGE + "."))


def private_uses(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: what`` for every use of a private ``splatdistill`` name in ``source``."""
    tree = ast.parse(source, filename)
    found: list[tuple[int, str]] = []
    bound: set[str] = set()  # local names bound to something imported from the package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _from_package(node.module):
            for part in node.module.split("."):
                if _private(part):
                    found.append((node.lineno, f"imports from the private module {node.module}"))
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"imports {alias.name} from {node.module}"))
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _from_package(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append((node.lineno, f"imports the private module {alias.name}"))
                    bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append((node.lineno, f"uses {ast.unparse(node)}"))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target, attr = node.args[0], node.args[1]
            if (
                name in ("setattr", "getattr", "delattr", "hasattr")
                and isinstance(target, ast.Name)
                and target.id in bound
                and isinstance(attr, ast.Constant)
                and isinstance(attr.value, str)
                and _private(attr.value)
            ):
                found.append((node.lineno, f"{name}({target.id}, {attr.value!r})"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(set(found))]


def test_no_test_uses_a_private_name():
    problems = []
    for path in sorted(TESTS.glob("*.py")):
        problems += private_uses(path.read_text(encoding="utf-8"), path.name)
    assert not problems, "private splatdistill names used by tests:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "code",
    [
        "from splatdistill.formats.spz import _frame_flip\n",
        "from splatdistill.formats.spz import read_spz, _frame_flip as flip\n",
        "def f():\n    from splatdistill.compress.pipeline import _fit\n",
        "from splatdistill.formats import spz\nspz._frame_flip(1, 2, 3)\n",
        "import splatdistill.formats.spz as spz\nx = spz._SH_SIGNS\n",
        "import splatdistill.formats.spz\nsplatdistill.formats.spz._frame_flip\n",
        "from splatdistill.formats import _private_module\n",
        "from splatdistill.formats._private_module import thing\n",
        "import splatdistill.cli as cli\ndef t(monkeypatch):\n    monkeypatch.setattr(cli, '_parse', None)\n",
        "from splatdistill.scene.gaussians import GaussianScene\nGaussianScene._knn\n",
    ],
)
def test_a_private_name_is_found(code):
    problems = private_uses(code)
    assert len(problems) == 1, problems
    assert problems[0].startswith("<string>:")


def test_public_names_and_own_objects_pass():
    code = (
        "import numpy as np\n"
        "import splatdistill\n"
        "from splatdistill.formats import spz\n"
        "from splatdistill.formats.spz import frame_flip, read_spz\n"
        "from helpers import _local_thing\n"  # not the package's
        "path = splatdistill.__file__\n"
        "spz.frame_flip(1, 2, 3)\n"
        "header = spz.read_spz_header('x')\n"
        "header._cache\n"  # an object the test made, not an import
        "np._private\n"
        "setattr(header, '_x', 1)\n"
    )
    assert private_uses(code) == []
