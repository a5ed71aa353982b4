"""The package's structure: imports point down the layers (import-linter contract in
pyproject.toml), no import cycle, no hidden function-level imports of the zoo itself."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"


def test_layers_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: install the dev extras (pip install -e '.[dev]')")
    run = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def _inner_zoo_imports(path: Path) -> list[str]:
    """``file:line`` of every import of a zoo module below a function or class body."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.Import):
                names = [a.name for a in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0:
                names = [inner.module or ""]
            elif isinstance(inner, ast.ImportFrom):
                names = ["zoo (relative)"]
            if any(n == "zoo" or n.startswith("zoo") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    return found


def test_no_function_level_imports_of_the_zoo():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) for hit in _inner_zoo_imports(p)]
    assert not found, f"imports of zoo modules inside functions (move them to the top): {found}"


def test_modules_stay_small():
    # One job per module; the C++ kernel is the one exception the design allows.
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    too_long = {k: v for k, v in sizes.items() if v > 520}
    assert not too_long, f"split these by responsibility: {too_long}"
