"""Training stages: what one iteration computes. The generic loop (engine/trainer.py) does the rest.

A stage builds its model, may add optimizers (stage 2's discriminators), decides which optimizer an
optimizer step belongs to, and computes the losses of one micro-batch. It knows nothing of precision,
distribution, accumulation, checkpoint files or logging.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from engine.config import TrainConfig
    from engine.trainer import Trainer


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar that is back-propagated
    losses: Dict[str, torch.Tensor]  # named terms (checked for NaN/Inf one by one)
    logs: Dict[str, float] = field(default_factory=dict)
    phases: Optional[Dict[str, Any]] = None  # the model's per-phase outputs (token counts, reconstructions)


class Stage:
    name: str = ""
    main_optimizer: str = "model"

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        raise NotImplementedError

    def prepare_model(self, trainer: "Trainer") -> None:
        """After the model is on its device, before DDP wrapping and optimizers (freeze / unfreeze here)."""

    def setup(self, trainer: "Trainer") -> None:
        """After the model is wrapped: add optimizers with trainer.add_optimizer(...)."""

    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> str:
        return self.main_optimizer

    def on_optimizer_step(self, optimizer_name: str) -> None:
        """Called after every optimizer step (e.g. to count discriminator / autoencoder steps)."""

    def compute_loss(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str, epoch: int) -> StepOutput:
        raise NotImplementedError

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        pass


def get_stage(name: str) -> Stage:
    """The stage called `name`; stage modules are imported only when asked for."""
    if name == "latent_distillation":
        from engine.stages.latent_distillation import LatentDistillationStage

        return LatentDistillationStage()
    if name == "full_finetuning":
        from engine.stages.full_finetuning import FullFinetuningStage

        return FullFinetuningStage()
    if name == "base_tokenizer":
        from engine.stages.base_tokenizer import BaseTokenizerStage  # stage 0, written by the base-tokenizer helper

        return BaseTokenizerStage()
    raise ValueError(f"unknown stage {name!r}; available: latent_distillation, full_finetuning, base_tokenizer")
