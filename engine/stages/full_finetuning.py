"""Stage 2, full finetuning (METHOD.md 4.2): everything trains on pixel losses.

Per phase: L1 + LPIPS + hinge PatchGAN with taming's adaptive generator weight on
`base_tokenizer.last_layer()`. One discriminator per token-count bucket (bucket = count // bucket_size
- bucket_offset, clamped; the release: 8 buckets of 32 tokens at 256, offset 1, counted on the EIC
budget). The GAN weight follows an epoch schedule (0 / 0.2 / 0.8) and, once on, the discriminator steps
`disc_steps_per_ae_step` times per autoencoder step. Every `gan.*` choice that differs from the release
is a setting whose default is the release's (docs/DIFFERENCES.md).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from engine.stages import StepOutput
from engine.stages.karl import KARLStage, base_tokenizer_of
from modules.losses import NLayerDiscriminator, PixelGANLoss

if TYPE_CHECKING:
    from engine.trainer import Trainer


def gan_weight_at(epoch: int, boundaries: List[int], values: List[float]) -> float:
    """values[i] where i = number of boundaries the epoch is past ("0 for epochs <= 20, 0.2 for <= 100, ...")."""
    return float(values[sum(epoch > b for b in boundaries)])


def build_discriminator(in_channels: int, ndf: int, n_layers: int) -> nn.Module:
    return NLayerDiscriminator(input_nc=in_channels, ndf=ndf, n_layers=n_layers)


class BucketedDiscriminators(nn.Module):
    """One PatchGAN per token-count bucket.

    forward(x: (B,3,H,W) in [0, 1], bucket: (B,), groups=1) -> logits (B,1,h,w). The batch is cut into
    `groups` equal consecutive parts and each part meets each discriminator in its own call, so BatchNorm
    (training mode) normalises each part with its own statistics (the release's D(real), D(fake) calls).
    signed_inputs: feed 2x - 1 (taming's [-1, 1]) instead of the [0, 1] pixels the release feeds.
    """

    def __init__(self, num: int, ndf: int, n_layers: int, signed_inputs: bool = False) -> None:
        super().__init__()
        self.signed_inputs = signed_inputs
        self.discriminators = nn.ModuleList([build_discriminator(3, ndf, n_layers) for _ in range(num)])

    def forward(self, x: torch.Tensor, bucket: torch.Tensor, groups: int = 1) -> torch.Tensor:
        if self.signed_inputs:
            x = x * 2.0 - 1.0
        if x.shape[0] % groups:
            raise ValueError(f"batch of {x.shape[0]} does not split into {groups} equal groups")
        size = x.shape[0] // groups
        out: Optional[torch.Tensor] = None
        for start in range(0, x.shape[0], size):
            part = bucket[start:start + size]
            for b in torch.unique(part).tolist():
                idx = start + (part == b).nonzero(as_tuple=True)[0]
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


class FullFinetuningStage(KARLStage):
    name = "full_finetuning"

    def __init__(self) -> None:
        self.disc: Optional[BucketedDiscriminators] = None
        self.disc_ddp: Optional[nn.Module] = None  # self.disc, DDP-wrapped when distributed
        self.pixel_loss: Optional[PixelGANLoss] = None  # L1 + LPIPS + GAN terms (modules/losses/gan.py)
        self.bucket_size = 32
        self.num_buckets = 8
        self.gan_weight = 0.0
        self.gan_steps = 0  # optimizer steps since the GAN came on (decides D vs autoencoder steps)
        self.bucket_offset = 1
        self.trainer: Optional["Trainer"] = None

    def prepare_model(self, trainer: "Trainer") -> None:
        base = base_tokenizer_of(trainer.raw_model)
        if base is not None and hasattr(base, "set_trainable"):
            base.set_trainable(True)  # METHOD.md 4.2: base encoder/decoder train too

    def setup(self, trainer: "Trainer") -> None:
        g = trainer.cfg.gan
        self.trainer = trainer
        self.num_buckets = g.num_discriminators
        self.bucket_offset = g.bucket_offset
        max_tokens = max_tokens_of(trainer.raw_model, trainer.cfg.data.input_size)
        self.bucket_size = g.bucket_size or max(1, math.ceil(max_tokens / g.num_discriminators))
        disc = BucketedDiscriminators(g.num_discriminators, g.disc_ndf, g.disc_layers,
                                      signed_inputs=g.disc_inputs == "signed").to(trainer.device)
        self.disc = disc
        self.disc_ddp = trainer.wrap_ddp(disc)
        # train(): LPIPS's dropout acts when gan.perceptual_dropout is set; otherwise it stays in eval mode
        self.pixel_loss = self._build_pixel_loss(g).to(trainer.device).train()
        trainer.add_optimizer("disc", list(disc.parameters()), lr_scale=g.disc_lr_scale,
                              weight_decay=g.disc_weight_decay)

    @staticmethod
    def _build_pixel_loss(g) -> PixelGANLoss:
        return PixelGANLoss(g.perceptual, l1_weight=g.l1_weight, perceptual_weight=g.perceptual_weight,
                            perceptual_signed_inputs=g.perceptual_inputs == "signed",
                            perceptual_dropout=g.perceptual_dropout)

    def ddp_modules(self) -> List[nn.Module]:
        return [self.disc_ddp] if self.disc_ddp is not None else []

    # --- which optimizer steps --------------------------------------------------------------------------
    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> str:
        g = trainer.cfg.gan
        self.gan_weight = gan_weight_at(epoch, g.weight_boundaries, g.weight_values)
        if self.gan_weight <= 0 or g.disc_steps_per_ae_step == 0:
            return "model"
        cycle = g.disc_steps_per_ae_step + 1
        if g.cycle_within_epoch:  # the release: the last step of every cycle, counted from the epoch's start
            step_in_epoch = trainer.batches_done // trainer.cfg.optim.accum_iter
            return "model" if (step_in_epoch + 1) % cycle == 0 else "disc"
        # one continuous cycle: 1 autoencoder step, then disc_steps_per_ae_step discriminator steps
        return "model" if self.gan_steps % cycle == 0 else "disc"

    def on_optimizer_step(self, optimizer_name: str) -> None:
        if self.gan_weight > 0:
            self.gan_steps += 1
        t = self.trainer
        if optimizer_name != "model" and t is not None and t.cfg.ema_update_on_disc_steps:
            t.ema.update(t.raw_model)  # the trainer updates the EMA after autoencoder steps only

    # --- losses --------------------------------------------------------------------------------------------
    def buckets(self, num_tokens: torch.Tensor) -> torch.Tensor:
        return (num_tokens.long() // self.bucket_size - self.bucket_offset).clamp(0, self.num_buckets - 1)

    @staticmethod
    def _counter(cfg_gan) -> Callable[[Any, torch.Tensor, str], torch.Tensor]:
        """counts(num_tokens, recon, phase) -> (B,) token counts that pick the discriminator of a phase.

        "eic_budget": the EIC phase's budget, remembered for the LTC phase of the same forward pass.
        """
        seen: Dict[str, torch.Tensor] = {}

        def counts(num_tokens: Any, recon: torch.Tensor, phase: str) -> torch.Tensor:
            c = torch.as_tensor(num_tokens, device=recon.device).expand(recon.shape[0])
            if cfg_gan.bucket_count == "kept_tokens":
                return c
            if phase == "eic":
                seen["eic"] = c
                return c
            if "eic" not in seen:
                raise RuntimeError(f"gan.bucket_count='eic_budget' needs the EIC phase before phase {phase!r}")
            return seen["eic"]

        return counts

    def _pixel_loss_fn(self, trainer: "Trainer") -> Callable:
        g = trainer.cfg.gan
        last_layer = base_tokenizer_of(trainer.raw_model).last_layer()
        counts_of = self._counter(g)
        if self.pixel_loss is None:  # a stage used without setup() (tests build one by hand)
            self.pixel_loss = self._build_pixel_loss(g).train()
        losses = self.pixel_loss

        def pixel_loss(recon: torch.Tensor, images: torch.Tensor, num_tokens: torch.Tensor, phase: str) -> Tuple[torch.Tensor, Dict[str, float]]:
            # recon, images: (B, 3, H, W) in [0, 1]; num_tokens: (B,) or a scalar budget.
            # Log names are bare: the model prefixes them with the phase ("ltc/pix_l1").
            loss, terms = losses.reconstruction_loss(recon, images)
            logs = {"pix_l1": terms["l1"].item()}
            if "perceptual" in terms:
                logs["perceptual"] = terms["perceptual"].item()
            counts = counts_of(num_tokens, recon, phase)
            if self.gan_weight > 0:
                gan, gan_terms = losses.generator_term(loss, lambda: self.disc(recon, self.buckets(counts)),
                                                       self.disc, last_layer, factor=self.gan_weight)
                loss = loss + gan
                logs["g_loss"] = gan_terms["g_loss"].item()
                logs["d_weight"] = float(gan_terms["d_weight"])
            return loss, logs

        return pixel_loss

    def train_step(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str) -> StepOutput:
        if optimizer_name == "model":
            out = trainer.model(images, pixel_loss_fn=self._pixel_loss_fn(trainer))
            logs = dict(out.logs)
            logs["gan_weight"] = self.gan_weight
            return StepOutput(loss=out.loss, losses=dict(out.losses), logs=logs, phases=getattr(out, "phases", None))
        return self._discriminator_loss(trainer, images)

    def _discriminator_loss(self, trainer: "Trainer", images: torch.Tensor) -> StepOutput:
        g = trainer.cfg.gan
        fakes: List[Tuple[torch.Tensor, torch.Tensor]] = []
        counts_of = self._counter(g)

        def capture(recon, imgs, num_tokens, phase):
            fakes.append((recon.detach(), counts_of(num_tokens, recon, phase).detach()))
            return recon.new_zeros(()), {}

        with torch.no_grad():
            trainer.raw_model(images, pixel_loss_fn=capture)
        if not fakes:
            raise RuntimeError("the model never called pixel_loss_fn: cannot train the discriminators")
        if g.disc_separate_batches:
            # the release, per phase: D(real) and D(fake) in separate calls, loss = sum of the phases' hinges.
            # One call of the (DDP-wrapped) module with 2 x phases groups: [real, fake_eic, real, fake_ltc].
            x = torch.cat([t for fake, _ in fakes for t in (images, fake)])
            bucket = torch.cat([self.buckets(c) for _, c in fakes for _ in range(2)])
            logits = self.disc_ddp(x, bucket, groups=2 * len(fakes)).float().chunk(2 * len(fakes))
            pairs = list(zip(logits[0::2], logits[1::2]))
        else:
            fake = torch.cat([f for f, _ in fakes])
            bucket = self.buckets(torch.cat([c for _, c in fakes]))
            real = images.repeat(len(fakes), 1, 1, 1)
            logits = self.disc_ddp(torch.cat([real, fake]), torch.cat([bucket, bucket]))
            pairs = [logits.float().chunk(2)]
        d_loss, terms = PixelGANLoss.discriminator_loss(pairs, factor=self.gan_weight if g.disc_loss_gan_weighted else 1.0)
        logs = {"d/logits_real": terms["logits_real"].item(), "d/logits_fake": terms["logits_fake"].item(),
                "gan_weight": self.gan_weight}
        return StepOutput(loss=d_loss, losses={"d/loss": d_loss}, logs=logs, loss_name="d/total")

    # --- checkpoint ----------------------------------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        return {"discriminator": self.disc.state_dict(), "gan_steps": self.gan_steps}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
        self.gan_steps = int(state.get("gan_steps", 0))
