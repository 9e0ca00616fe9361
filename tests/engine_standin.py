"""A tiny stand-in with KARL's training-forward contract, so engine tests do not depend on model sizes.

forward(images01, pixel_loss_fn=None) -> out.loss / out.losses / out.logs / out.phases, a per-batch
budget drawn from the model's own generator (set_sampling_seed, state in the state dict), per-image
draws from the global RNG, a buffer updated every step (like the epsilon curriculum), and a
`base_tokenizer` with last_layer() / set_trainable() / grid_size().
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from base_tokenizers.base import BaseTokenizer


class TinyBase(BaseTokenizer):
    kind = "vqgan"
    embed_dim = 8
    downsample_factor = 4

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 4, stride=4)
        self.dec = nn.ConvTranspose2d(8, 3, 4, stride=4)
        self.set_trainable(False)

    def last_layer(self) -> torch.Tensor:
        return self.dec.weight

    def encode(self, images):
        return self.enc(images)

    def decode(self, latent):
        return self.dec(latent)


@dataclass
class StandInConfig:
    width: int = 16
    max_tokens: int = 16

    def to_dict(self) -> Dict[str, Any]:
        return {"width": self.width, "max_tokens": self.max_tokens}


class StandInKARL(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.config = StandInConfig(width=width)
        self.base_tokenizer = TinyBase()
        self.mix = nn.Sequential(nn.Conv2d(8, width, 1), nn.GELU(), nn.Conv2d(width, 8, 1))
        self.halt = nn.Linear(8, 1)
        self.register_buffer("curriculum", torch.ones(4))
        self.register_buffer("sampling_state", torch.zeros(2, dtype=torch.int64))
        self._gen = torch.Generator()
        self.set_sampling_seed(0)

    def set_sampling_seed(self, seed: int) -> None:
        self._gen.manual_seed(seed)
        self.sampling_state.zero_()
        self.sampling_state[0] = seed

    def _draw_budget(self) -> int:
        # reproducible from the buffer alone: generator re-seeded from (seed, draws so far)
        self._gen.manual_seed(int(self.sampling_state[0]) * 7919 + int(self.sampling_state[1]))
        self.sampling_state[1] += 1
        return int(torch.randint(1, 5, (1,), generator=self._gen)) * 4

    def forward(self, images: torch.Tensor, pixel_loss_fn=None):
        with torch.no_grad():
            target = self.base_tokenizer.encode(images)
        budget = self._draw_budget()
        noise = 0.01 * torch.randn(images.shape[0], 1, 1, 1, device=images.device)  # per-image draw
        pred = self.mix(self.base_tokenizer.encode(images) + noise)
        losses, logs, phases = {}, {"budget": float(budget)}, {}
        for phase in ("eic", "ltc"):
            num_tokens = torch.full((images.shape[0],), budget if phase == "eic" else 16, device=images.device)
            if pixel_loss_fn is None:
                rec = F.mse_loss(pred.float(), target.float())
                recon = None
            else:
                recon = self.base_tokenizer.decode(pred)
                rec, plogs = pixel_loss_fn(recon, images, num_tokens, phase)
                logs.update(plogs)
            halt = torch.sigmoid(self.halt(pred.mean((2, 3)).float())).mean()
            losses[f"{phase}/rec"] = rec
            losses[f"{phase}/halt"] = 0.01 * halt
            phases[phase] = SimpleNamespace(num_tokens=num_tokens, epsilon=torch.full_like(num_tokens, 0.01, dtype=torch.float),
                                            reconstruction=recon)
        with torch.no_grad():
            self.curriculum.mul_(0.99)
        return SimpleNamespace(loss=sum(losses.values()), losses=losses, logs=logs, phases=phases)


def make_dataset(n: int = 32, size: int = 16, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Smooth random images in [0, 1] (learnable), labels 0."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    images = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return torch.utils.data.TensorDataset(images, torch.zeros(n, dtype=torch.long))


# Dotlist overrides that shrink the real karl_demo (on vqgan_demo) to a few-ms step at 32 px.
TINY_KARL = [
    "model.model=karl_demo", "model.base_tokenizer=vqgan_demo", "data.input_size=32",
    "model.overrides.encoder_width=48", "model.overrides.encoder_layers=1", "model.overrides.encoder_heads=2",
    "model.overrides.decoder_width=32", "model.overrides.decoder_layers=1", "model.overrides.decoder_heads=2",
    "model.overrides.bank_size=32", "model.overrides.pos_embed_size=8", "model.overrides.halting_hidden=16",
    "model.overrides.codebook_size=64",
    "model.base_overrides.ch=8", "model.base_overrides.embed_dim=16", "model.base_overrides.codebook_size=64",
    "model.base_overrides.resolution=32",
]


def tiny_argv(output_dir, *extra: str, stage_2_gan_from_epoch: int = 1) -> list:
    """Flags + overrides of a tiny CPU fp32 run (batch 4, 2 epochs, lr 1e-3, no warmup, no LPIPS)."""
    return ["--batch_size", "4", "--epochs", "2", "--warmup_epochs", "0", "--lr", "1e-3", "--device", "cpu",
            "--precision", "fp32", "--output_dir", str(output_dir), "--log_every", "1", "--seed", "0",
            "data.num_workers=0", "image_log_every=0", "gan.perceptual=none", "gan.num_discriminators=2",
            "gan.disc_ndf=8", f"gan.weight_boundaries=[{stage_2_gan_from_epoch - 1}]", "gan.weight_values=[0.0,0.5]",
            "gan.disc_steps_per_ae_step=1", *extra]


def read_metrics(output_dir) -> list:
    import json
    from pathlib import Path

    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
