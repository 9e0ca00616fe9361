"""Stage 1, latent-distillation pretraining (METHOD.md 4.1): base tokenizer frozen, loss in token space."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.stages import Stage, StepOutput

if TYPE_CHECKING:
    from engine.config import TrainConfig
    from engine.trainer import Trainer


def create_karl(cfg: "TrainConfig") -> nn.Module:
    """The KARL model named in cfg.model on its base tokenizer (loud warning when the base is untrained)."""
    from base_tokenizers import create_base_tokenizer
    from kolmogorov_tokenizers.registry import create_model

    m = cfg.model
    base_kwargs = dict(m.base_overrides)
    ckpt = m.base_tokenizer_ckpt
    if ckpt is None:
        from base_tokenizers.registry import default_checkpoint_path

        default = default_checkpoint_path(m.base_tokenizer)
        ckpt = str(default) if default.is_file() else None
    if ckpt is None:
        warnings.warn(
            f"\n{'!' * 78}\n!! base tokenizer {m.base_tokenizer!r} has NO trained weights (no --base_tokenizer_ckpt and no "
            f"default file):\n!! it runs with RANDOM weights. Fine for a smoke test, meaningless for real training.\n{'!' * 78}",
            stacklevel=2,
        )
    base = create_base_tokenizer(m.base_tokenizer, pretrained_ckpt_path=ckpt, **base_kwargs)
    overrides = dict(m.overrides)
    overrides.setdefault("input_size", cfg.data.input_size)
    return create_model(m.model, base_tokenizer=base, quantize_latent=m.quantize_latent,
                        factorize_latent=m.factorize_latent, **overrides)


def base_tokenizer_of(model: nn.Module):
    return getattr(model, "base_tokenizer", None)


class LatentDistillationStage(Stage):
    name = "latent_distillation"

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        return create_karl(cfg)

    def prepare_model(self, trainer: "Trainer") -> None:
        base = base_tokenizer_of(trainer.raw_model)
        if base is not None and hasattr(base, "set_trainable"):
            base.set_trainable(False)  # METHOD.md 4.1: frozen in stage 1

    def compute_loss(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str, epoch: int) -> StepOutput:
        out = trainer.model(images, pixel_loss_fn=None)
        return StepOutput(loss=out.loss, losses=dict(out.losses), logs=dict(out.logs), phases=getattr(out, "phases", None))
