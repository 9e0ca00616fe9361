"""Stage 0: train a base tokenizer (VQGAN or KL VAE) from scratch.

Loss (taming / LDM recipe): L1 + perceptual + hinge PatchGAN with taming's adaptive generator weight,
switched on at `disc_start`, plus the latent regulariser (VQ codebook + commitment, or a small KL).
Codebook collapse guard for the VQGAN: l2-normalised codes (a model setting, `l2_normalize_codes`) and
dead-code restarts (`dead_code_restart` here): codes unused for `restart_window` steps are moved onto
random encoder outputs.

`BaseTokenizerTrainingLoss` holds everything a step needs; `run_scripts/base_tokenizer_pretrain.py` drives
it with its own small loop, and `BaseTokenizerStage` plugs it into the generic trainer (engine/trainer.py).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from base_tokenizers.base import AutoencoderOutput, BaseTokenizer
from engine.stages import Stage, StepOutput
from modules.losses import (
    NLayerDiscriminator,
    build_perceptual_loss,
    calculate_adaptive_weight,
    generator_loss,
    hinge_d_loss,
)

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


class BaseTokenizerTrainingLoss(nn.Module):
    """Autoencoder and discriminator losses of one stage-0 step; owns the discriminator and perceptual net."""

    def __init__(self, cfg: BaseTokenizerStageConfig, tokenizer: BaseTokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = tokenizer.kind
        self.discriminator = NLayerDiscriminator(3, cfg.disc_ndf, cfg.disc_layers)
        self.perceptual = build_perceptual_loss(cfg.perceptual)  # raises clearly when weights are missing
        self.monitor = (CodebookMonitor(tokenizer.codebook_size, cfg.restart_window)
                        if tokenizer.codebook_size else None)

    def gan_on(self, step: int) -> bool:
        return step >= self.cfg.disc_start and self.cfg.disc_factor > 0

    def _discriminate(self, images01: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images01 * 2.0 - 1.0)  # taming's discriminator sees [-1, 1]

    def autoencoder_loss(self, tokenizer: BaseTokenizer, out: AutoencoderOutput, images: torch.Tensor,
                         step: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """images, out.reconstruction: (B, 3, H, W) in [0, 1] -> total loss, named (detached) terms."""
        cfg, recon = self.cfg, out.reconstruction.float()
        l1 = (recon - images).abs().mean()
        nll = cfg.l1_weight * l1
        terms: Dict[str, torch.Tensor] = {"rec/l1": l1.detach()}
        if self.perceptual is not None:
            p = self.perceptual(recon, images).mean()
            nll = nll + cfg.perceptual_weight * p
            terms["rec/perceptual"] = p.detach()
        if self.kind == "vae":
            reg = cfg.kl_weight * out.reg_loss / images[0].numel()
            terms["reg/kl"] = out.reg_loss.detach()
        else:
            reg = cfg.codebook_weight * out.reg_loss
            terms["reg/vq"] = out.reg_loss.detach()
        loss = nll + reg
        if self.gan_on(step):
            self.discriminator.requires_grad_(False)  # the generator step does not train D
            g_loss = generator_loss(self._discriminate(recon))
            self.discriminator.requires_grad_(True)
            if torch.is_grad_enabled():
                weight = calculate_adaptive_weight(nll, g_loss, tokenizer.last_layer(), cfg.disc_weight)
            else:
                weight = nll.new_tensor(0.0)
            loss = loss + weight * cfg.disc_factor * g_loss
            terms["gan/g_loss"], terms["gan/d_weight"] = g_loss.detach(), weight
        return loss, terms

    def discriminator_loss(self, images: torch.Tensor, recon: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logits_real = self._discriminate(images)
        logits_fake = self._discriminate(recon.detach().float())
        d_loss = self.cfg.disc_factor * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"gan/d_loss": d_loss.detach(), "gan/logits_real": logits_real.mean().detach(),
                        "gan/logits_fake": logits_fake.mean().detach()}

    def train_step(self, tokenizer: BaseTokenizer, images: torch.Tensor, step: int,
                   opt_ae: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                   autocast: Any) -> Tuple[AutoencoderOutput, Dict[str, torch.Tensor]]:
        """One stage-0 step: an autoencoder update, then a discriminator update once the GAN is on.
        Returns the autoencoder output and the loss terms of both updates."""
        with autocast:
            out = tokenizer(images)
            loss, terms = self.autoencoder_loss(tokenizer, out, images, step)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if self.gan_on(step):
            with autocast:
                d_loss, d_terms = self.discriminator_loss(images, out.reconstruction)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            terms.update(d_terms)
        return out, terms

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
    """Stage 0 for the generic trainer: autoencoder steps, alternating with D steps once the GAN is on."""

    name = "base_tokenizer"

    def __init__(self, config: Optional[BaseTokenizerStageConfig] = None) -> None:
        self.cfg = config or BaseTokenizerStageConfig()
        self._explicit_config = config is not None  # else the trainer's `gan` section fills the shared fields
        self.losses: Optional[BaseTokenizerTrainingLoss] = None
        self.steps = 0
        self._last_latent: Optional[torch.Tensor] = None  # restarts happen before the next forward

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        from base_tokenizers import create_base_tokenizer

        return create_base_tokenizer(cfg.model.base_tokenizer, pretrained_ckpt_path=cfg.model.base_tokenizer_ckpt,
                                     resolution=cfg.data.input_size)

    def prepare_model(self, trainer: "Trainer") -> None:
        trainer.raw_model.set_trainable(True)

    def setup(self, trainer: "Trainer") -> None:
        gan = getattr(trainer.cfg, "gan", None)
        if not self._explicit_config and gan is not None:
            self.cfg = dataclasses.replace(self.cfg, perceptual=gan.perceptual, perceptual_weight=gan.perceptual_weight,
                                           disc_layers=gan.disc_layers, disc_ndf=gan.disc_ndf)
        self.losses = BaseTokenizerTrainingLoss(self.cfg, trainer.raw_model).to(trainer.device)
        trainer.add_optimizer("disc", list(self.losses.discriminator.parameters()), lr_scale=1.0, weight_decay=0.0)

    def optimizer_for_step(self, trainer: "Trainer", epoch: int) -> str:
        return "disc" if self.losses.gan_on(self.steps) and self.steps % 2 == 1 else "model"

    def on_optimizer_step(self, name: str) -> None:
        self.steps += 1

    def compute_loss(self, trainer: "Trainer", images: torch.Tensor, optimizer_name: str, epoch: int) -> StepOutput:
        tokenizer = trainer.raw_model
        if optimizer_name == "disc":
            with torch.no_grad():
                recon = tokenizer.autoencode(images).reconstruction
            loss, terms = self.losses.discriminator_loss(images, recon)
            return StepOutput(loss=loss, losses={"d/loss": loss}, logs={k: v.item() for k, v in terms.items()})
        restarted = self.losses.maybe_restart_codes(tokenizer, self._last_latent)  # from the previous step
        out = trainer.model(images)  # the DDP wrapper when distributed: forward = autoencode
        loss, terms = self.losses.autoencoder_loss(tokenizer, out, images, self.steps)
        logs = {k: v.item() for k, v in terms.items()}
        logs.update(self.losses.codebook_logs(out))
        logs["codebook/restarted"] = float(restarted)
        self._last_latent = None if out.latent is None else out.latent.detach()
        return StepOutput(loss=loss, losses={"ae/loss": loss}, logs=logs)

    def extra_state(self) -> Dict[str, Any]:
        return {"discriminator": self.losses.discriminator.state_dict(), "stage0_steps": self.steps}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if "discriminator" in state:
            self.losses.discriminator.load_state_dict(state["discriminator"])
        self.steps = int(state.get("stage0_steps", 0))


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
        l1_sum += (recon - images).abs().mean(dim=(1, 2, 3)).sum().item()
        mse = (recon - images).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        psnr_sum += (-10.0 * torch.log10(mse)).sum().item()
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
