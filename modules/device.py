"""The one device resolver for every command line (model CLI, training, evaluation, benchmarks, research).

Accepted: "auto" (a CUDA GPU when one is visible, else the CPU), "cpu", "cuda", "cuda:N" and "mps".
"auto" never picks MPS: some operators the model uses fall back to the CPU there, so it is opt-in.
"""
from __future__ import annotations

import re
from typing import Optional

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_CUDA_INDEXED = re.compile(r"cuda:(\d+)")


class DeviceError(ValueError):
    """A device string that is not valid, or names a device this machine does not have."""


def check_device_name(name: str, option: str = "--device") -> None:
    """Syntax only (no hardware check), for validating a saved or parsed config on any machine."""
    if not isinstance(name, str) or not (name in ("auto", "cpu", "cuda", "mps") or _CUDA_INDEXED.fullmatch(name)):
        raise DeviceError(f"{option} must be {DEVICE_CHOICES}, got {name!r}")


def resolve_device(name: Optional[str] = "auto", option: str = "--device",
                   local_rank: Optional[int] = None) -> torch.device:
    """`name` -> a torch.device this machine has; DeviceError (one line naming `option`) otherwise.

    None means "auto". `local_rank` (a torchrun process's GPU) turns "auto" / "cuda" into cuda:<local_rank>;
    without it "cuda" stays the current CUDA device.
    """
    name = "auto" if name is None else name
    check_device_name(name, option)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"{option} mps requested but MPS is not available; use {option} cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"{option} {name} requested but no CUDA GPU is available; use {option} cpu or auto")
    if name == "cuda":
        return torch.device("cuda") if local_rank is None else torch.device("cuda", local_rank)
    index = int(name.split(":")[1])
    if index >= torch.cuda.device_count():
        raise DeviceError(f"{option} {name} requested but only {torch.cuda.device_count()} CUDA device(s) are "
                          f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)
