"""One check for NaN/Inf weights, shared by training (resume, finetune), loading a tokenizer, the CLI and
evaluation: a model with non-finite weights computes garbage (black images, "perfect" calibration) while
every command would otherwise exit 0, so it is refused where it is loaded."""

from __future__ import annotations

from typing import Any, List, Mapping

import torch

from modules.io.safe_load import CheckpointError


def nonfinite_tensors(state: Mapping[str, Any]) -> List[str]:
    """Names of the floating-point tensors of `state` (a state dict) that hold a NaN or an Inf."""
    bad = []
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                bad.append(name)
    return bad


def check_finite_weights(state: Mapping[str, Any], source: Any, what: str = "weights") -> None:
    """Raise CheckpointError (one line naming `source` and the first bad tensors) if any tensor is NaN/Inf."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise CheckpointError(f"{source}: {len(bad)} of {len(state)} {what} tensor(s) hold NaN/Inf "
                              f"(e.g. {shown}); the model is broken (a diverged run?), refusing to use it")
