"""Stage 0: train a base tokenizer (VQGAN or KL VAE) from scratch.

Loss (taming / LDM recipe): L1 + perceptual + hinge PatchGAN with taming's adaptive generator weight,
switched on at `disc_start`, plus the latent regulariser (VQ codebook + commitment, or a small KL).
Codebook collapse guard for the VQGAN: l2-normalised codes (a model setting, `l2_normalize_codes`) and
dead-code restarts (`dead_code_restart` here): codes unused for `restart_window` steps are moved onto
random encoder outputs.

`BaseTokenizerTrainingLoss` holds the losses of a step; `BaseTokenizerStage` runs them in the generic
trainer (engine/trainer.py): each step updates the autoencoder and, once the GAN is on, the discriminator
on the same batch (taming's two optimizers). run_scripts/base_tokenizer_pretrain.py is its command line.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn

from base_tokenizers.base import AutoencoderOutput, BaseTokenizer
from kolmogorov_tokenizers.metrics import l1_per_image, mse_per_image, psnr_from_mse
from engine.stages import Stage, StepOutput
from modules.losses import NLayerDiscriminator, PixelGANLoss

if TYPE_CHECKING:
    from engine.config import TrainConfig
    from engine.trainer import Trainer


@dataclass
class BaseTokenizerStageConfig:
    l1_weight: float = 1.0
    perceptual: str = "lpips"  # "lpips" | "offline_effnet" | "none"; demo runs pass "none" (no VGG weights here)
    perceptual_weight: float = 1.0  # taming
    disc_start: int = 0  # optimizer step at which the GAN terms switch on (taming: disc_start)
    disc_weight: float = 0.8  # taming's ImageNet VQGAN config; multiplies the adaptive weight
    disc_factor: float = 1.0  # taming: scales both GAN losses once on
    disc_layers: int = 3  # METHOD.md 4.2: NLayer PatchGAN, 3 layers
    disc_ndf: int = 64  # METHOD.md 4.2: ndf 64
    codebook_weight: float = 1.0  # VQGAN: weight of codebook + commitment loss (taming)
    # VAE: KL weight relative to LDM's per-image SUM reconstruction loss (LDM uses 1e-6); we report losses
    # per pixel, so the KL is divided by the pixel count too (same gradients up to a global scale).
    kl_weight: float = 1e-6
    dead_code_restart: bool = True  # VQGAN: move unused codes onto encoder outputs (collapse guard)
    restart_window: int = 100  # steps without use after which a code is restarted; also the usage window
    # > 0: train for about this many seconds: after budget_measure_s of steps the run's step count
    # (trainer max_steps, at most what it was) is set from the measured speed, at least min_steps
    time_budget_s: float = 0.0
    budget_measure_s: float = 10.0
    min_steps: int = 1
    disc_start_follows_budget: bool = False  # the budget's step count moves disc_start to half of it


class CodebookMonitor:
    """Code usage over the last `window` steps, batch perplexity, and dead-code restarts."""

    def __init__(self, codebook_size: int, window: int) -> None:
        self.codebook_size = codebook_size
        self.window = window
        self.last_used = torch.zeros(codebook_size, dtype=torch.long)  # step a code was last picked (0 = never)
        self.step = 0
        self.restarted = 0  # total codes restarted

    def update(self, indices: torch.Tensor) -> Dict[str, float]:
        """indices: (B, h, w) codes of this step -> {"codebook/usage", "codebook/perplexity"}."""
        self.step += 1
        counts = torch.bincount(indices.flatten().cpu(), minlength=self.codebook_size).float()
        self.last_used[counts > 0] = self.step
        probs = counts[counts > 0] / counts.sum()
        perplexity = math.exp(-(probs * probs.log()).sum().item())
        used = (self.last_used > 0) & (self.step - self.last_used < self.window)
        return {"codebook/usage": used.float().mean().item(), "codebook/perplexity": perplexity}

    @torch.no_grad()
    def restart_dead_codes(self, quantizer: nn.Module, z: torch.Tensor) -> int:
        """Replace codes unused for `window` steps by random encoder outputs z: (B, C, h, w)."""
        if self.step < self.window:
            return 0  # every code gets a full window before it counts as dead
        dead = (self.step - self.last_used >= self.window).nonzero(as_tuple=True)[0]
        if len(dead) == 0:
            return 0
        weight = quantizer.embedding.weight
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).to(weight.dtype)
        if getattr(quantizer, "l2_normalize", False):
            flat = nn.functional.normalize(flat, dim=-1)
        picked = flat[torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)]
        weight[dead.to(weight.device)] = picked + 1e-3 * flat.std() * torch.randn_like(picked)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(weight, src=0)  # every rank keeps rank 0's codebook
        self.last_used[dead] = self.step  # a fresh window for the new codes
        self.restarted += len(dead)
        return len(dead)


class PairedDiscriminator(nn.Module):
    """forward(real, fake) -> (D(real), D(fake)): two calls (BatchNorm sees each batch on its own, as in
    taming) in one forward of the module, so a DDP wrapper around it sees one forward per backward."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(real), self.discriminator(fake)


class BaseTokenizerTrainingLoss(nn.Module):
    """Autoencoder and discriminator losses of one stage-0 step; owns the discriminator and the pixel
    losses (modules/losses/gan.py: the same L1 + perceptual + GAN code as stage 2)."""

    def __init__(self, cfg: BaseTokenizerStageConfig, tokenizer: BaseTokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = tokenizer.kind
        self.discriminator = NLayerDiscriminator(3, cfg.disc_ndf, cfg.disc_layers)
        self.paired = PairedDiscriminator(self.discriminator)  # the discriminator step's module (DDP-wrapped)
        # raises clearly when the perceptual weights are missing
        self.pixel = PixelGANLoss(cfg.perceptual, l1_weight=cfg.l1_weight, perceptual_weight=cfg.perceptual_weight,
                                  disc_weight=cfg.disc_weight)
        self.monitor = (CodebookMonitor(tokenizer.codebook_size, cfg.restart_window)
                        if tokenizer.codebook_size else None)

    @property
    def perceptual(self) -> Optional[nn.Module]:
        return self.pixel.perceptual

    def gan_on(self, step: int) -> bool:
        return step >= self.cfg.disc_start and self.cfg.disc_factor > 0

    def autoencoder_loss(self, tokenizer: BaseTokenizer, out: AutoencoderOutput, images: torch.Tensor,
                         step: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """images, out.reconstruction: (B, 3, H, W) in [0, 1] -> total loss, named (detached) terms."""
        cfg, recon = self.cfg, out.reconstruction.float()
        nll, pixel_terms = self.pixel.reconstruction_loss(recon, images)
        terms: Dict[str, torch.Tensor] = {f"rec/{k}": v for k, v in pixel_terms.items()}
        if self.kind == "vae":
            reg = cfg.kl_weight * out.reg_loss / images[0].numel()
            terms["reg/kl"] = out.reg_loss.detach()
        else:
            reg = cfg.codebook_weight * out.reg_loss
            terms["reg/vq"] = out.reg_loss.detach()
        loss = nll + reg
        if self.gan_on(step):
            # taming's discriminator sees [-1, 1]
            gan, gan_terms = self.pixel.generator_term(nll, lambda: self.discriminator(recon * 2.0 - 1.0),
                                                       self.discriminator, tokenizer.last_layer(), cfg.disc_factor)
            loss = loss + gan
            terms.update({f"gan/{k}": v for k, v in gan_terms.items()})
        return loss, terms

    def discriminator_loss(self, images: torch.Tensor, recon: torch.Tensor,
                           discriminator: Optional[nn.Module] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Hinge loss of D on real images and detached reconstructions (B, 3, H, W) in [0, 1].
        discriminator: `self.paired` or its DDP wrapper (the default is `self.paired`)."""
        paired = discriminator if discriminator is not None else self.paired
        logits = paired(images * 2.0 - 1.0, recon.detach().float() * 2.0 - 1.0)
        d_loss, terms = self.pixel.discriminator_loss([logits], factor=self.cfg.disc_factor)
        return d_loss, {"gan/d_loss": d_loss.detach(), **{f"gan/{k}": v for k, v in terms.items()}}

    def codebook_logs(self, out: AutoencoderOutput) -> Dict[str, float]:
        """Record this step's codes (VQGAN only): usage over the window and batch perplexity."""
        if self.monitor is None or out.indices is None:
            return {}
        return self.monitor.update(out.indices)

    def maybe_restart_codes(self, tokenizer: BaseTokenizer, z: Optional[torch.Tensor]) -> int:
        """Dead-code restart from encoder outputs z: (B, C, h, w). Call between optimizer steps: it edits the
        codebook in place, which must not happen while a graph that used the codebook awaits backward."""
        if self.monitor is None or not self.cfg.dead_code_restart or z is None:
            return 0
        return self.monitor.restart_dead_codes(tokenizer.vqgan.quantize, z)


class BaseTokenizerStage(Stage):
    """Stage 0 for the generic trainer. Each step: an autoencoder update and, once the GAN is on
    (step >= disc_start), a discriminator update on the same batch and the same (detached)
    reconstructions. Steps are counted in autoencoder updates (= the trainer's global steps)."""

    name = "base_tokenizer"
    label = "stage0"
    fp16_ok = False  # the adaptive GAN weight compares unscaled gradients: bf16 or fp32, never fp16
    keeps_ema = False  # the tokenizer file (<model>.ckpt) holds the live weights; an EMA copy would be unused

    def __init__(self, config: Optional[BaseTokenizerStageConfig] = None) -> None:
        self.cfg = config or BaseTokenizerStageConfig()
        self._explicit_config = config is not None  # else the trainer's `gan` section fills the shared fields
        self.losses: Optional[BaseTokenizerTrainingLoss] = None
        self.disc_ddp: Optional[nn.Module] = None  # losses.paired, DDP-wrapped when distributed
        self.trainer: Optional["Trainer"] = None
        self.steps = 0
        self.budget = None  # engine.schedule_budget.StepBudget while the time budget measures
        self._last_latent: Optional[torch.Tensor] = None  # restarts happen before the next forward
        self._fake: Optional[torch.Tensor] = None  # this step's reconstructions, for the discriminator

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        from base_tokenizers import create_base_tokenizer

        return create_base_tokenizer(cfg.model.base_tokenizer, pretrained_ckpt_path=cfg.model.base_tokenizer_ckpt,
                                     resolution=cfg.data.input_size, **cfg.model.base_overrides)

    def prepare_model(self, trainer: "Trainer") -> None:
        trainer.raw_model.set_trainable(True)

    def setup(self, trainer: "Trainer") -> None:
        gan = getattr(trainer.cfg, "gan", None)
        if not self._explicit_config and gan is not None:
            self.cfg = dataclasses.replace(self.cfg, perceptual=gan.perceptual, perceptual_weight=gan.perceptual_weight,
                                           disc_layers=gan.disc_layers, disc_ndf=gan.disc_ndf)
        self.trainer = trainer
        self.losses = BaseTokenizerTrainingLoss(self.cfg, trainer.raw_model).to(trainer.device)
        self.disc_ddp = trainer.wrap_ddp(self.losses.paired)
        trainer.add_optimizer("disc", list(self.losses.discriminator.parameters()), lr_scale=1.0, weight_decay=0.0)
        if self.cfg.time_budget_s > 0:
            from engine.schedule_budget import StepBudget

            self.budget = StepBudget(self.cfg.time_budget_s, min_steps=self.cfg.min_steps,
                                     max_steps=trainer.cfg.max_steps, measure_s=self.cfg.budget_measure_s,
                                     first_step=self.steps)

    def ddp_modules(self) -> List[nn.Module]:
        return [self.disc_ddp] if self.disc_ddp is not None else []

    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> Union[str, Sequence[str]]:
        return ("model", "disc") if self.losses.gan_on(self.steps) else "model"

    def train_step(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str) -> StepOutput:
        tokenizer = trainer.raw_model
        if optimizer_name == "disc":  # after this step's autoencoder pass: its reconstructions, detached
            loss, terms = self.losses.discriminator_loss(images, self._fake, self.disc_ddp)
            self._fake = None
            logs = {k: v.item() for k, v in terms.items() if k != "gan/d_loss"}
            return StepOutput(loss=loss, losses={"gan/d_loss": loss}, logs=logs, loss_name="gan/d_loss")
        restarted = self.losses.maybe_restart_codes(tokenizer, self._last_latent)  # from the previous step
        out = trainer.model(images)  # the DDP wrapper when distributed: forward = autoencode
        loss, terms = self.losses.autoencoder_loss(tokenizer, out, images, self.steps)
        logs = {k: v.item() for k, v in terms.items()}
        logs.update(self.losses.codebook_logs(out))
        if self.losses.monitor is not None:
            logs["codebook/restarted"] = float(restarted)
        self._last_latent = None if out.latent is None else out.latent.detach()
        self._fake = out.reconstruction.detach()
        return StepOutput(loss=loss, losses={"loss": loss}, logs=logs, phases={"autoencoder": out},
                          shown=[k for k in logs if not k.startswith("gan/logits")])

    def on_optimizer_step(self, optimizer_name: str) -> None:
        if optimizer_name != "model":
            return
        self.steps += 1
        if self.budget is not None:
            self._update_budget()

    def _update_budget(self) -> None:
        """While the time budget measures: once it decides the run's step count, the trainer stops there;
        a resumed run reads it back from step_budget.json (written atomically). Under torchrun every rank
        takes rank 0's decision, so all stop at the same step."""
        from engine.distributed import all_reduce_sum
        from modules.io import atomic_write_text

        t, budget = self.trainer, self.budget
        decided = budget.update(self.steps) if t.dist.is_main else None
        if t.dist.distributed:
            decided = int(all_reduce_sum(torch.tensor([float(decided or 0)], device=t.device)).item()) or None
        if decided is None:
            return
        self.budget = None
        t.cfg.max_steps = decided
        if self.cfg.disc_start_follows_budget:
            self.cfg.disc_start = decided // 2
        if t.dist.is_main:
            atomic_write_text(t.output_dir / "step_budget.json", json.dumps({
                "steps": decided, "steps_per_s": budget.steps_per_s, "time_budget_s": self.cfg.time_budget_s,
                "disc_start": self.cfg.disc_start}) + "\n")
            t.logger.event(f"[stage0] measured {budget.steps_per_s:.2f} steps/s "
                           f"({budget.steps_per_s * t.world_batch:.0f} img/s): {decided} steps fit the "
                           f"{self.cfg.time_budget_s:.0f} s budget")

    def log_images(self, out: StepOutput) -> List[torch.Tensor]:
        return [out.phases["autoencoder"].reconstruction] if out.phases else []

    def extra_state(self) -> Dict[str, Any]:
        """The discriminator, the step count, code usage, and the header that lets
        create_base_tokenizer(name, checkpoint-last.pth) rebuild the tokenizer from this file."""
        from base_tokenizers.checkpoint import OWN_FORMAT_KEY

        tokenizer = self.trainer.raw_model
        monitor = self.losses.monitor
        return {"discriminator": self.losses.discriminator.state_dict(), "step": self.steps,
                "codebook_last_used": None if monitor is None else monitor.last_used,
                OWN_FORMAT_KEY: {"name": getattr(tokenizer, "registry_name", None) or tokenizer.kind,
                                 "kind": tokenizer.kind, "config": dataclasses.asdict(tokenizer.config)}}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if "discriminator" in state:
            self.losses.discriminator.load_state_dict(state["discriminator"])
        self.steps = int(state.get("step", 0))
        monitor = self.losses.monitor
        if monitor is not None and state.get("codebook_last_used") is not None:
            monitor.last_used, monitor.step = state["codebook_last_used"], self.steps
        if self.budget is not None:
            self.budget.first_step = self.steps


@torch.no_grad()
def evaluate_reconstruction(tokenizer: BaseTokenizer, loader: Any, device: torch.device,
                            max_batches: Optional[int] = None) -> Dict[str, float]:
    """Mean L1 and PSNR (data range 1, per image then averaged) of eval-mode reconstructions clamped to
    [0, 1]; the VAE decodes its posterior mean (eval mode)."""
    was_training = tokenizer.training
    tokenizer.eval()
    l1_sum, psnr_sum, count = 0.0, 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
        recon = tokenizer.autoencode(images).reconstruction.float().clamp(0.0, 1.0)
        l1_sum += l1_per_image(recon, images).sum().item()
        # a perfect reconstruction counts as 100 dB, so one such image cannot make the mean infinite
        psnr_sum += psnr_from_mse(mse_per_image(recon, images).clamp_min(1e-10)).sum().item()
        count += images.shape[0]
    tokenizer.train(was_training)
    if count == 0:
        raise ValueError("evaluate_reconstruction: the loader gave no images")
    return {"l1": l1_sum / count, "psnr": psnr_sum / count, "images": float(count)}


@torch.no_grad()
def calibrate_latent_scale(tokenizer: BaseTokenizer, loader: Any, device: torch.device, max_batches: int = 20) -> float:
    """Set a VAE base's latent scale to 1 / std of its posterior means on `loader` (LDM's scale factor), so
    KARL reads and regresses unit-scale latents; returns the new scale. The release's MAR VAE keeps its fixed
    0.2325 (METHOD.md s.2): only bases trained here are calibrated."""
    if tokenizer.kind != "vae":
        raise ValueError(f"calibrate_latent_scale: only VAE bases have a latent scale, not {tokenizer.kind!r}")
    was_training = tokenizer.training
    tokenizer.eval()
    total, total_sq, count = 0.0, 0.0, 0
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        images = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)
        mean = tokenizer.encode(images, sample=False).latent.double() / tokenizer.scale  # unscaled
        total, total_sq, count = total + mean.sum().item(), total_sq + mean.pow(2).sum().item(), count + mean.numel()
    tokenizer.train(was_training)
    if count == 0:
        raise ValueError("calibrate_latent_scale: the loader gave no images")
    std = max((total_sq / count - (total / count) ** 2) ** 0.5, 1e-8)
    tokenizer.scale = tokenizer.config.scale = 1.0 / std
    return tokenizer.scale
