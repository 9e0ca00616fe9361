"""Training stages: what one iteration computes. The generic loop (engine/trainer.py) does the rest.

A stage builds its model, may add optimizers (the discriminators of stages 0 and 2), decides which
optimizer(s) a step updates, and computes the losses of one micro-batch (`train_step`). It hands the
trainer what the trainer cannot know: the extra modules DDP wraps, scalars and images worth logging.
It knows nothing of precision, distribution, accumulation, checkpoint files or logging back ends.

    stage 0  base_tokenizer       engine/stages/base_tokenizer.py   (autoencoder + discriminator)
    stage 1  latent_distillation  engine/stages/latent_distillation.py
    stage 2  full_finetuning      engine/stages/full_finetuning.py  (stages 1 and 2 build KARL: karl.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

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
    phases: Optional[Dict[str, Any]] = None  # the model's per-phase outputs; read by the stage's log hooks
    loss_name: str = "loss"  # the key `loss` is logged under (stage 2's discriminator steps: "d/total")
    shown: Sequence[str] = ()  # keys of `logs` the progress line shows besides the loss terms


class Stage:
    name: str = ""
    label: str = ""  # short name in progress lines when the run counts steps (max_steps); default: name
    main_optimizer: str = "model"
    fp16_ok: bool = True  # False: where precision resolves to fp16, the trainer takes bf16 (or fp32) instead
    keeps_ema: bool = True  # False: no EMA copy of the weights is updated or saved (stage 0 saves its live weights)

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        raise NotImplementedError

    def prepare_model(self, trainer: "Trainer") -> None:
        """After the model is on its device, before DDP wrapping and optimizers (freeze / unfreeze here)."""

    def setup(self, trainer: "Trainer") -> None:
        """After the model is wrapped: add optimizers with trainer.add_optimizer(...), wrap extra trained
        modules with trainer.wrap_ddp(...)."""

    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> Union[str, Sequence[str]]:
        """The optimizer this step updates, or several: each gets its own train_step on the same batch, in
        this order, and all of them step at the end of it (stage 0: autoencoder, then discriminator)."""
        return self.main_optimizer

    def on_optimizer_step(self, optimizer_name: str) -> None:
        """Called after every optimizer step (e.g. to count discriminator / autoencoder steps)."""

    def train_step(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str) -> StepOutput:
        """The losses of one micro-batch images (B, 3, H, W) in [0, 1] for the optimizer `optimizer_name`;
        the trainer back-propagates StepOutput.loss and steps that optimizer at the step's last micro-batch."""
        raise NotImplementedError

    def ddp_modules(self) -> List[nn.Module]:
        """Modules besides the model that the stage wrapped with trainer.wrap_ddp: gradient
        synchronisation waits for the last micro-batch of a step on these too."""
        return []

    def log_scalars(self, trainer: "Trainer", out: StepOutput, images: torch.Tensor) -> Dict[str, float]:
        """Extra scalars at a logging step (rank 0 only; may also write histograms with trainer.logger)."""
        return {}

    def log_images(self, out: StepOutput) -> List[torch.Tensor]:
        """Reconstructions (B, 3, H, W) in [0, 1] to show under the input images in TensorBoard."""
        return []

    def finetune_key_tolerance(self) -> Dict[str, Any]:
        """What a --finetune checkpoint may hold beyond the model's keys, or lack (keyword arguments of
        engine.checkpoint.load_weights: ignore_unexpected, allow_missing prefixes)."""
        return {}

    def behaviour_changes(self, model: nn.Module, ckpt: Dict[str, Any]) -> Optional[Tuple[str, str, str]]:
        """(saved, now, how to keep the saved) texts when `ckpt` was trained with behaviour settings that
        differ from `model`'s, else None. The trainer refuses such a --resume and warns on --finetune."""
        return None

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
        from engine.stages.base_tokenizer import BaseTokenizerStage

        return BaseTokenizerStage()
    raise ValueError(f"unknown stage {name!r}; available: latent_distillation, full_finetuning, base_tokenizer")
