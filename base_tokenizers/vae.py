"""KL VAE base tokenizer: the LDM/MAR autoencoder (KL-16: f16, 16 latent channels at 256 px).

Callers pass and get [0, 1] images. MAR's network works in [-1, 1], and by default the wrapper converts
(`pixel_range="signed"`); the KARL release instead feeds [0, 1] straight in and reads the decoder's raw
output as [0, 1] (`pixel_range="unit"`), which KARL selects with its `vae_pixel_range` setting. KARL reads
the scaled latent `sample * 0.2325` (METHOD.md section 2) and regresses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from base_tokenizers.base import AutoencoderOutput, BaseEncoding, BaseTokenizer
from base_tokenizers.blocks import Decoder, Encoder


PIXEL_RANGES = ("signed", "unit")


@dataclass
class VAEConfig:
    """Defaults = MAR's KL-16 VAE (METHOD.md section 2, checked against
    checkpoint_formats/vae_kl16_mar_imagenet.json)."""

    resolution: int = 256
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)  # f16
    num_res_blocks: int = 2
    attn_resolutions: Tuple[int, ...] = (16,)  # encoder levels with attention (the 16x16 level)
    # MAR's decoder has attention only in its middle block (no `decoder.up.*.attn` in the weights).
    decoder_attn_resolutions: Tuple[int, ...] = ()
    z_channels: int = 16
    embed_dim: int = 16  # latent channels C KARL reads
    scale: float = 0.2325  # KARL/MAR latent scale: latent = sample * scale (METHOD.md section 2)
    # The release feeds KARL's predicted SCALED latent to the decoder without dividing by `scale`
    # (METHOD.md section 2); True reproduces that for released VAE-based KARL checkpoints.
    decode_scaled_latent: bool = False
    # None: sample the posterior in train mode, use its mean in eval mode (deterministic encodings).
    # True / False: always sample / always use the mean. A frozen base is always in eval mode, so a
    # frozen VAE gives the mean unless this is True (the release samples: set True for parity).
    sample_posterior: Optional[bool] = None
    # "signed": map [0, 1] images to [-1, 1] for the network and its output back (MAR's convention).
    # "unit": the network sees [0, 1] images and its raw output is the [0, 1] image (the KARL release,
    # METHOD.md section 2); KARL sets this from its own config (KARLConfig.vae_pixel_range).
    pixel_range: str = "signed"
    norm_groups: int = 32  # GroupNorm groups (see VQGANConfig.norm_groups)
    dropout: float = 0.0


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from the encoder's 2C output channels."""

    def __init__(self, moments: torch.Tensor) -> None:  # moments: (B, 2C, h, w)
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # LDM's clamp keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def kl(self) -> torch.Tensor:  # (B,) KL to N(0, I), summed over latent elements
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    """encoder -> quant_conv -> posterior; post_quant_conv -> decoder. Names are MAR's."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        shared = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                      resolution=cfg.resolution, dropout=cfg.dropout, norm_groups=cfg.norm_groups)  # LDM family
        self.encoder = Encoder(**shared, attn_resolutions=cfg.attn_resolutions, out_channels=2 * cfg.z_channels)
        self.decoder = Decoder(**shared, attn_resolutions=cfg.decoder_attn_resolutions, z_channels=cfg.z_channels)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:  # x: (B, 3, H, W) in [-1, 1]
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # z: (B, C, h, w) unscaled -> [-1, 1] images
        return self.decoder(self.post_quant_conv(z))


class VAETokenizer(BaseTokenizer):
    """MAR KL VAE behind the BaseTokenizer interface; the network lives at `.vae`."""

    kind = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.vae = self._build_network(config)
        self.embed_dim = config.embed_dim
        self.codebook_size = None
        self.downsample_factor = self._downsample_factor(config)
        self.scale = config.scale
        self.decode_scaled_latent = config.decode_scaled_latent
        self.sample_posterior = config.sample_posterior
        self.pixel_range = getattr(config, "pixel_range", "signed")
        if self.pixel_range not in PIXEL_RANGES:
            raise ValueError(f"pixel_range must be one of {PIXEL_RANGES}, got {self.pixel_range!r}")
        self.set_trainable(False)

    def _build_network(self, config: VAEConfig) -> nn.Module:
        """The network at `.vae`: anything with `posterior(x in [-1, 1])` and `decode(z)` (patch_vae.py)."""
        return AutoencoderKL(config)

    def _downsample_factor(self, config: VAEConfig) -> int:
        return 2 ** (len(config.ch_mult) - 1)

    def _latent(self, posterior: DiagonalGaussian, sample: Optional[bool]) -> torch.Tensor:
        if sample is None:
            sample = self.sample_posterior if self.sample_posterior is not None else self.training
        return (posterior.sample() if sample else posterior.mean) * self.scale

    def _to_network(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's input (see VAEConfig.pixel_range)."""
        return images if self.pixel_range == "unit" else images * 2.0 - 1.0

    def _from_network(self, output: torch.Tensor) -> torch.Tensor:
        """The network's output -> [0, 1] images, not clamped."""
        return output if self.pixel_range == "unit" else (output + 1.0) / 2.0

    def encode(self, images: torch.Tensor, sample: Optional[bool] = None) -> BaseEncoding:
        """images: (B, 3, H, W) in [0, 1] -> scaled latent (B, C, h, w) as both latent and target.

        sample: override the posterior choice (see VAEConfig.sample_posterior)."""
        latent = self._latent(self.vae.posterior(self._to_network(images)), sample)
        return BaseEncoding(latent=latent, target=latent, indices=None)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: (B, C, h, w) scaled latent -> (B, 3, H, W) in [0, 1]."""
        z = latent if self.decode_scaled_latent else latent / self.scale
        return self._from_network(self.vae.decode(z))

    def autoencode(self, images: torch.Tensor) -> AutoencoderOutput:
        posterior = self.vae.posterior(self._to_network(images))
        z = posterior.sample() if self.training else posterior.mean
        reconstruction = self._from_network(self.vae.decode(z))
        return AutoencoderOutput(reconstruction=reconstruction, reg_loss=posterior.kl().mean(), latent=posterior.mean)

    def last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight
