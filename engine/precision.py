"""Mixed precision as a setting: fp32 (off), bf16 autocast, fp16 autocast + GradScaler.

Which precision "auto" means on a device is decided in one place, kolmogorov_tokenizers.config.choose_precision
(a measured bf16-vs-fp32 probe on CPUs); this module logs that choice and builds the autocast / scaler."""
from __future__ import annotations

import contextlib
import sys
from typing import ContextManager

import torch

from kolmogorov_tokenizers.config import choose_precision


def resolve_precision(precision: str, device: torch.device, verbose: bool = True) -> str:
    """"auto" -> fp16 on CUDA (the official recipe), bf16 on a CPU where it is measurably faster, fp32
    otherwise. Prints the choice and why; explicit bf16 on a CPU without native bf16 prints a warning."""
    chosen, why, warning = choose_precision(precision, device)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if verbose:
        print(f"[precision] {precision} -> {chosen} ({why})", flush=True)
    return chosen


def autocast(precision: str, device: torch.device) -> ContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is a no-op unless fp16 (bf16 has fp32's exponent range and needs no scaling)."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
