"""Load checkpoints without executing arbitrary Python code.

`torch.load(..., weights_only=False)` unpickles anything, so a checkpoint downloaded from the internet
could run code on load. The released KARL checkpoints only need tensors, plain containers and one class,
`argparse.Namespace` (the `args` entry), so we load with `weights_only=True` and allow exactly that class.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

# The only non-builtin global a released checkpoint may contain (see checkpoint_formats/README.md).
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

# torch's refusal message names the global, e.g. "Unsupported global: GLOBAL mod.Cls was not an allowed
# global" or "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"; we extract it
# to tell the user what the file wanted to load.
_GLOBAL_PATTERN = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)
_CLASS_PATTERN = re.compile(r"Unsupported class ([\w.]+)")


class CheckpointError(ValueError):
    """A checkpoint file is missing, not a checkpoint, or refused for safety."""


def _offending_global(message: str) -> str | None:
    for pattern in (_GLOBAL_PATTERN, _CLASS_PATTERN):
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load` with `weights_only=True` and the allow-list [argparse.Namespace].

    Raises CheckpointError (one readable line naming the path) when the file is missing, is not a
    torch checkpoint (an HTML error page, a truncated download), or contains other Python objects.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty (interrupted download?): {path}")

    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            # weights_only passed explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override it.
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        offending = _offending_global(message)
        if offending is not None:
            raise CheckpointError(
                f"{path} contains arbitrary Python objects (offending global: {offending}) and was refused "
                f"for safety; only tensors, plain containers and argparse.Namespace are allowed"
            ) from None
        # Any other unpickling failure ("Unsupported operand 60" for '<' of an HTML page, "invalid load
        # key") means the bytes are not a pickle at all.
        detail = _unpickler_detail(message)
        raise CheckpointError(
            f"{path} is not a valid PyTorch checkpoint (an HTML page, a corrupted/truncated download, or a "
            f"pickle feature the weights-only loader does not support){': ' + detail if detail else ''}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError,
            AttributeError, IndexError, OSError) as err:
        # Truncated zip archives raise RuntimeError from the stream reader; HTML pages and other text
        # fail in the legacy unpickler with "invalid load key"; both mean "not a (complete) checkpoint".
        raise CheckpointError(
            f"{path} is not a valid PyTorch checkpoint (truncated download or wrong file?): "
            f"{_first_line(str(err)) or type(err).__name__}"
        ) from None


def _unpickler_detail(message: str) -> str:
    # torch wraps the real reason ("Unsupported operand 60") in a long paragraph; keep just that line.
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("Unsupported", "invalid load key")):
            return line
    return ""


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
