"""VQGAN base tokenizer: MAGE's MaskGIT-style convolutional VQGAN (f16, 1024 codes x 256 at 256 px).

Pixel range [0, 1] in and out, as MAGE. KARL reads the pre-quantisation grid z (`latent`) and must
reproduce the quantised grid z_q (`target`); `decode` maps any grid in code space back to pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from base_tokenizers.base import AutoencoderOutput, BaseEncoding, BaseTokenizer
from base_tokenizers.blocks import Decoder, Encoder


@dataclass
class VQGANConfig:
    """Sizes of the network. Defaults = the official ImageNet VQGAN (METHOD.md section 2, checked against
    checkpoint_formats/vqgan_mage_imagenet.json)."""

    resolution: int = 256  # training image side
    ch: int = 128  # base channel width
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)  # 5 levels -> f16
    num_res_blocks: int = 2
    # The release's YAML lists attention at resolution 16, but MAGE's MaskGIT-style network builds no
    # attention layers: the released weights have none. Empty keeps the model equal to the weights.
    attn_resolutions: Tuple[int, ...] = ()
    embed_dim: int = 256  # code vector size C
    codebook_size: int = 1024  # K
    commitment: float = 0.25  # beta of the VQ commitment term (VQ-VAE / taming)
    # Guard against codebook collapse when training from scratch: compare l2-normalised vectors (cosine
    # distance). The MAGE weights were trained with plain Euclidean distance: keep False to load them.
    l2_normalize_codes: bool = False
    # MaskGIT's res-block shortcut maps the block OUTPUT and drops the input when the width changes
    # (blocks.ResnetBlock); the MAGE weights need it. False = the usual shortcut on the input, which carries
    # the image through the width changes of small models trained from scratch (a 250-step tiny VQGAN
    # recovered image colours clearly better with it: see docs/CHECKPOINTS.md).
    maskgit_shortcut: bool = True
    # GroupNorm groups (32 in both releases). With narrow layers (ch 32) 32 groups normalise every channel
    # on its own, which erases flat colours; the demo configs use fewer groups.
    norm_groups: int = 32
    dropout: float = 0.0


class CodebookQuantizer(nn.Module):
    """Nearest-code vector quantiser over a (B, C, h, w) grid with a straight-through gradient.

    Parameter name `embedding.weight` (K, C), as in the released checkpoint (`quantize.embedding.weight`).
    """

    def __init__(self, codebook_size: int, dim: int, commitment: float = 0.25, l2_normalize: bool = False) -> None:
        super().__init__()
        self.commitment = commitment
        self.l2_normalize = l2_normalize
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codes(self) -> torch.Tensor:  # (K, C) the vectors z_q is made of
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_normalize else w

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:  # (B, h, w) -> (B, C, h, w)
        return self.codes()[indices].permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z: (B, C, h, w) -> z_q (B, C, h, w) straight-through, loss (scalar), indices (B, h, w)."""
        b, c, h, w = z.shape
        if self.l2_normalize:
            z = F.normalize(z, dim=1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)  # (BhW, C)
        codes = self.codes()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; computed in fp32 so ties do not flip under autocast
        with torch.autocast(device_type=z.device.type, enabled=False):
            f32, c32 = flat.float(), codes.float()
            dist = f32.pow(2).sum(1, keepdim=True) - 2 * f32 @ c32.t() + c32.pow(2).sum(1)[None]
        indices = dist.argmin(dim=1).view(b, h, w)
        z_q = self.lookup(indices).to(z.dtype)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commitment_loss = F.mse_loss(z, z_q.detach())
        loss = codebook_loss + self.commitment * commitment_loss
        z_q = z + (z_q - z).detach()
        return z_q, loss, indices


class VQGANNetwork(nn.Module):
    """encoder -> quantize -> decoder; parameter names are those of the MAGE checkpoint."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        shared = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                      resolution=cfg.resolution, attn_resolutions=cfg.attn_resolutions, dropout=cfg.dropout,
                      norm_groups=cfg.norm_groups, conv_bias=False, shortcut_on_output=cfg.maskgit_shortcut,
                      mid_attention=False)  # MaskGIT family
        self.encoder = Encoder(**shared, out_channels=cfg.embed_dim, conv_in_bias=False, conv_downsample=False,
                               conv_out_kernel=1)
        self.decoder = Decoder(**shared, z_channels=cfg.embed_dim, extra_block=False)
        self.quantize = CodebookQuantizer(cfg.codebook_size, cfg.embed_dim, cfg.commitment, cfg.l2_normalize_codes)


class VQGANTokenizer(BaseTokenizer):
    """MAGE VQGAN behind the BaseTokenizer interface; the network lives at `.vqgan`."""

    kind = "vqgan"
    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.vqgan = VQGANNetwork(config)
        self.embed_dim = config.embed_dim
        self.codebook_size = config.codebook_size
        self.downsample_factor = 2 ** (len(config.ch_mult) - 1)
        self.set_trainable(False)

    def encode(self, images: torch.Tensor) -> BaseEncoding:
        """images: (B, 3, H, W) in [0, 1] -> z (B, C, h, w), z_q (B, C, h, w), indices (B, h, w)."""
        z = self.vqgan.encoder(images)
        z_q, _, indices = self.vqgan.quantize(z)
        return BaseEncoding(latent=z, target=z_q, indices=indices)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: (B, C, h, w) in code space (z_q or a soft mix of codes) -> (B, 3, H, W) in [0, 1]."""
        return self.vqgan.decoder(latent)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:  # (B, h, w) -> (B, 3, H, W)
        return self.decode(self.vqgan.quantize.lookup(indices))

    def autoencode(self, images: torch.Tensor) -> AutoencoderOutput:
        z = self.vqgan.encoder(images)
        z_q, vq_loss, indices = self.vqgan.quantize(z)
        return AutoencoderOutput(reconstruction=self.decode(z_q), reg_loss=vq_loss, indices=indices, latent=z)

    def codebook(self) -> torch.Tensor:
        return self.vqgan.quantize.codes()

    def last_layer(self) -> torch.Tensor:
        return self.vqgan.decoder.conv_out.weight
