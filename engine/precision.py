"""Mixed precision as a setting: fp32 (off), bf16 autocast, fp16 autocast + GradScaler."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> fp16 on GPU (the official recipe), fp32 on CPU."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be one of auto, fp32, bf16, fp16; got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is a no-op unless fp16 (bf16 has fp32's exponent range and needs no scaling)."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
