"""Exponential moving average of the trainable weights (decay 0.9999, METHOD.md 4).

The default is a true running EMA. The release instead resets the EMA to the live weights at the start
of every epoch (`reset()` called by the trainer when `ema_reset_every_epoch` is set).
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = decay * ema + (1 - decay) * live for trainable params (frozen ones never change);
        buffers are copied (e.g. the epsilon-curriculum state)."""
        live_params = dict(model.named_parameters())
        ema_params, trained = [], []
        for name, p_ema in self.module.named_parameters():
            p = live_params[name]
            if p.requires_grad:
                ema_params.append(p_ema)
                trained.append(p.detach())
        if ema_params:
            torch._foreach_lerp_(ema_params, trained, 1.0 - self.decay)
        live_buffers = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(live_buffers[name])

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """The release's behaviour: EMA := live weights."""
        self.module.load_state_dict(model.state_dict())

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor], strict: bool = True):
        return self.module.load_state_dict(state, strict=strict)
