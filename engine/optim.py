"""AdamW with MAE-style parameter groups and a per-iteration warmup + half-cycle cosine schedule."""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, no_decay_names: Sequence[str] = ()) -> List[dict]:
    """Two groups: decayed weights, and biases / 1-D params (norms, embeddings of size (D,)) without decay.

    Frozen parameters (requires_grad False, e.g. the stage-1 base tokenizer) are left out.
    no_decay_names: extra exact names to exclude from decay (e.g. learned tokens).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in no_decay_names:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def build_adamw(params: Iterable, lr: float, betas: Sequence[float]) -> torch.optim.AdamW:
    # foreach is the default on CPU/GPU; fused is not used so CPU and GPU take the same arithmetic path.
    return torch.optim.AdamW(params, lr=lr, betas=(float(betas[0]), float(betas[1])))


def lr_at(epoch_float: float, base_lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Linear warmup from 0 to base_lr, then half-cycle cosine to min_lr (MAE's schedule).

    epoch_float: fractional epoch = epoch + step_in_epoch / steps_per_epoch (stepped per iteration).
    """
    if epoch_float < warmup_epochs:
        return base_lr * epoch_float / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    progress = min((epoch_float - warmup_epochs) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
