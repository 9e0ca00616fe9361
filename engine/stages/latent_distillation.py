"""Stage 1, latent-distillation pretraining (METHOD.md 4.1): base tokenizer frozen, loss in token space."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from engine.stages import StepOutput
from engine.stages.karl import KARLStage, base_tokenizer_of

if TYPE_CHECKING:
    from engine.trainer import Trainer


class LatentDistillationStage(KARLStage):
    name = "latent_distillation"

    def prepare_model(self, trainer: "Trainer") -> None:
        base = base_tokenizer_of(trainer.raw_model)
        if base is not None and hasattr(base, "set_trainable"):
            base.set_trainable(False)  # METHOD.md 4.1: frozen in stage 1

    def train_step(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str) -> StepOutput:
        out = trainer.model(images, pixel_loss_fn=None)  # KARL's forward computes its losses (karl.py)
        return StepOutput(loss=out.loss, losses=dict(out.losses), logs=dict(out.logs), phases=getattr(out, "phases", None))
