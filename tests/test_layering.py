"""The packages import downward only: modules < base_tokenizers < kolmogorov_tokenizers < engine < evaluation.

A user who only encodes images installs and imports the model package; it must not pull in the training
engine or the evaluation code (their dependencies, their import time, their failure modes). Checked two ways:
every import statement in the source (including imports inside functions), and a real import + encode with
the upper packages made unimportable.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = {"modules", "base_tokenizers", "kolmogorov_tokenizers", "engine", "evaluation", "research", "benchmarks",
           "run_scripts", "tests"}
# package -> the project packages it may import (itself included)
ALLOWED = {
    "modules": {"modules"},
    "base_tokenizers": {"modules", "base_tokenizers"},
    "kolmogorov_tokenizers": {"modules", "base_tokenizers", "kolmogorov_tokenizers"},
    "engine": {"modules", "base_tokenizers", "kolmogorov_tokenizers", "engine"},
    "evaluation": {"modules", "base_tokenizers", "kolmogorov_tokenizers", "engine", "evaluation"},
}


def imported_project_packages(path: Path, package: str) -> dict[str, int]:
    """Top-level project packages imported anywhere in `path` -> first line number."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]  # relative imports stay in the package
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PROJECT:
                found.setdefault(top, node.lineno)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_floors_below_it(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, package
    upward = [f"{path.relative_to(REPO)}:{line} imports {top}"
              for path in files for top, line in imported_project_packages(path, package).items()
              if top not in ALLOWED[package]]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from engine.data import load_image\n    from . import sibling\n")
    assert imported_project_packages(source, "kolmogorov_tokenizers") == {"engine": 2, "kolmogorov_tokenizers": 3}


BLOCKED_IMPORT = textwrap.dedent("""
    import importlib, pkgutil, sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("engine", "evaluation", "research"):
                raise ImportError(f"blocked upward import: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import torch
    import kolmogorov_tokenizers
    for info in pkgutil.walk_packages(kolmogorov_tokenizers.__path__, "kolmogorov_tokenizers."):
        if not info.name.endswith("__main__"):  # importing it runs the CLI
            importlib.import_module(info.name)
    from kolmogorov_tokenizers import load_image, load_tokenizer
    from PIL import Image
    Image.new("RGB", (80, 64), (200, 40, 40)).save(sys.argv[1])
    model = load_tokenizer("demo")
    _, _, info = model.encode(load_image(sys.argv[1], 64), desired_reconstruction_quality=0.05)
    print("tokens", int(info["num_tokens"].sum()) if isinstance(info, dict) else "ok")
""")


def test_the_model_package_imports_and_encodes_with_engine_and_evaluation_unimportable(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, str(tmp_path / "red.png")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tokens" in proc.stdout


def test_evaluation_takes_only_the_data_pipeline_from_the_engine():
    engine_imports = []
    for path in sorted((REPO / "evaluation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            engine_imports += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                               if n.split(".")[0] == "engine" and not n.startswith("engine.data")]
    assert not engine_imports, "\n".join(engine_imports)
