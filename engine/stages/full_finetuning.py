"""Stage 2, full finetuning (METHOD.md 4.2): everything trains on pixel losses.

Per phase: L1 + LPIPS + hinge PatchGAN with taming's adaptive generator weight on
`base_tokenizer.last_layer()`. One discriminator per token-count bucket (bucket = num_tokens //
bucket_size; the release: 8 buckets of 32 tokens at 256). The GAN weight follows an epoch schedule
(0 / 0.2 / 0.8) and, once on, the discriminator steps `disc_steps_per_ae_step` times per autoencoder step.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from engine.stages import Stage, StepOutput
from modules.losses import NLayerDiscriminator, build_perceptual_loss, calculate_adaptive_weight, generator_loss, hinge_d_loss
from engine.stages.latent_distillation import base_tokenizer_of, create_karl

if TYPE_CHECKING:
    from engine.config import TrainConfig
    from engine.trainer import Trainer


def gan_weight_at(epoch: int, boundaries: List[int], values: List[float]) -> float:
    """values[i] where i = number of boundaries the epoch is past ("0 for epochs <= 20, 0.2 for <= 100, ...")."""
    return float(values[sum(epoch > b for b in boundaries)])


def build_discriminator(in_channels: int, ndf: int, n_layers: int) -> nn.Module:
    return NLayerDiscriminator(input_nc=in_channels, ndf=ndf, n_layers=n_layers)


class BucketedDiscriminators(nn.Module):
    """One PatchGAN per token-count bucket. forward(x: (B,3,H,W), bucket: (B,)) -> logits (B,1,h,w)."""

    def __init__(self, num: int, ndf: int, n_layers: int) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([build_discriminator(3, ndf, n_layers) for _ in range(num)])

    def forward(self, x: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
        # images are [0, 1]; PatchGANs are trained on [-1, 1] inputs as in taming
        x = x * 2.0 - 1.0
        out: Optional[torch.Tensor] = None
        for b in torch.unique(bucket).tolist():
            idx = (bucket == b).nonzero(as_tuple=True)[0]
            logits = self.discriminators[b](x[idx])
            if out is None:
                out = logits.new_zeros((x.shape[0],) + logits.shape[1:])
            out = out.index_copy(0, idx, logits.to(out.dtype))
        return out


def max_tokens_of(model: nn.Module, input_size: int) -> int:
    ltc = getattr(model, "ltc_budget", None) or getattr(getattr(model, "config", None), "ltc_budget", None)
    if ltc:
        return int(ltc)
    base = base_tokenizer_of(model)
    side = base.grid_size(input_size)
    return side * side


class FullFinetuningStage(Stage):
    name = "full_finetuning"

    def __init__(self) -> None:
        self.disc: Optional[BucketedDiscriminators] = None
        self.disc_ddp: Optional[nn.Module] = None
        self.perceptual: Optional[nn.Module] = None
        self.bucket_size = 32
        self.num_buckets = 8
        self.gan_weight = 0.0
        self.gan_steps = 0  # optimizer steps since the GAN came on (decides D vs autoencoder steps)

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        return create_karl(cfg)

    def prepare_model(self, trainer: "Trainer") -> None:
        base = base_tokenizer_of(trainer.raw_model)
        if base is not None and hasattr(base, "set_trainable"):
            base.set_trainable(True)  # METHOD.md 4.2: base encoder/decoder train too

    def setup(self, trainer: "Trainer") -> None:
        g = trainer.cfg.gan
        self.num_buckets = g.num_discriminators
        max_tokens = max_tokens_of(trainer.raw_model, trainer.cfg.data.input_size)
        self.bucket_size = g.bucket_size or max(1, math.ceil(max_tokens / g.num_discriminators))
        disc = BucketedDiscriminators(g.num_discriminators, g.disc_ndf, g.disc_layers).to(trainer.device)
        self.disc = disc
        self.disc_ddp = trainer.wrap_ddp(disc)
        # "lpips" without the VGG weights raises PerceptualWeightsMissing (never a random network)
        self.perceptual = build_perceptual_loss(g.perceptual)
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(trainer.device).eval().requires_grad_(False)
        trainer.add_optimizer("disc", list(disc.parameters()), lr_scale=g.disc_lr_scale, weight_decay=0.0)

    # --- which optimizer steps --------------------------------------------------------------------------
    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> str:
        g = trainer.cfg.gan
        self.gan_weight = gan_weight_at(epoch, g.weight_boundaries, g.weight_values)
        if self.gan_weight <= 0 or g.disc_steps_per_ae_step == 0:
            return "model"
        # Once on: cycle of (1 autoencoder step, then disc_steps_per_ae_step discriminator steps).
        return "model" if self.gan_steps % (g.disc_steps_per_ae_step + 1) == 0 else "disc"

    def on_optimizer_step(self, optimizer_name: str) -> None:
        if self.gan_weight > 0:
            self.gan_steps += 1

    # --- losses --------------------------------------------------------------------------------------------
    def buckets(self, num_tokens: torch.Tensor) -> torch.Tensor:
        return (num_tokens.long() // self.bucket_size).clamp(0, self.num_buckets - 1)

    def _pixel_loss_fn(self, trainer: "Trainer") -> Callable:
        g = trainer.cfg.gan
        last_layer = base_tokenizer_of(trainer.raw_model).last_layer()

        def pixel_loss(recon: torch.Tensor, images: torch.Tensor, num_tokens: torch.Tensor, phase: str) -> Tuple[torch.Tensor, Dict[str, float]]:
            # recon, images: (B, 3, H, W) in [0, 1]; num_tokens: (B,) or a scalar budget.
            # Log names are bare: the model prefixes them with the phase ("ltc/pix_l1").
            l1 = (recon.float() - images.float()).abs().mean()
            nll = g.l1_weight * l1
            logs = {"pix_l1": l1.item()}
            if self.perceptual is not None:
                p = self.perceptual(recon.float(), images.float()).mean()
                nll = nll + g.perceptual_weight * p
                logs["perceptual"] = p.item()
            loss = nll
            if self.gan_weight > 0:
                counts = torch.as_tensor(num_tokens, device=recon.device).expand(recon.shape[0])
                self.disc.requires_grad_(False)  # generator step: gradients flow through D to the image only
                g_loss = generator_loss(self.disc(recon, self.buckets(counts)).float())
                self.disc.requires_grad_(True)
                w = calculate_adaptive_weight(nll, g_loss, last_layer) if torch.is_grad_enabled() else nll.new_tensor(0.0)
                loss = loss + self.gan_weight * w * g_loss
                logs["g_loss"] = g_loss.item()
                logs["d_weight"] = float(w)
            return loss, logs

        return pixel_loss

    def compute_loss(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str, epoch: int) -> StepOutput:
        if optimizer_name == "model":
            out = trainer.model(images, pixel_loss_fn=self._pixel_loss_fn(trainer))
            logs = dict(out.logs)
            logs["gan_weight"] = self.gan_weight
            return StepOutput(loss=out.loss, losses=dict(out.losses), logs=logs, phases=getattr(out, "phases", None))
        return self._discriminator_loss(trainer, images)

    def _discriminator_loss(self, trainer: "Trainer", images: torch.Tensor) -> StepOutput:
        fakes: List[Tuple[torch.Tensor, torch.Tensor]] = []

        def capture(recon, imgs, num_tokens, phase):
            counts = torch.as_tensor(num_tokens, device=recon.device).expand(recon.shape[0])
            fakes.append((recon.detach(), counts.detach()))
            return recon.new_zeros(()), {}

        with torch.no_grad():
            trainer.raw_model(images, pixel_loss_fn=capture)
        if not fakes:
            raise RuntimeError("the model never called pixel_loss_fn: cannot train the discriminators")
        fake = torch.cat([f for f, _ in fakes])
        bucket = self.buckets(torch.cat([c for _, c in fakes]))
        real = images.repeat(len(fakes), 1, 1, 1)
        logits = self.disc_ddp(torch.cat([real, fake]), torch.cat([bucket, bucket]))
        logits_real, logits_fake = logits.float().chunk(2)
        d_loss = self.gan_weight * hinge_d_loss(logits_real, logits_fake)
        logs = {"d/logits_real": logits_real.mean().item(), "d/logits_fake": logits_fake.mean().item(), "gan_weight": self.gan_weight}
        return StepOutput(loss=d_loss, losses={"d/loss": d_loss}, logs=logs)

    # --- checkpoint ----------------------------------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        return {"discriminator": self.disc.state_dict(), "gan_steps": self.gan_steps}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
        self.gan_steps = int(state.get("gan_steps", 0))
