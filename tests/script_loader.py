"""Load a run_scripts/*.py file as a module, so tests call its main(argv) in-process (no subprocess)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

RUN_SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"


def load_run_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, RUN_SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pretrain(*argv: str) -> int:
    """run_scripts/base_tokenizer_pretrain.py main(argv) -> exit code."""
    return load_run_script("base_tokenizer_pretrain").main(list(argv))
