"""Convolutional encoder/decoder family shared by the VQGAN (MAGE/MaskGIT) and the KL VAE (LDM/MAR).

Both released networks are the same family: ResNet blocks (GroupNorm(32) + SiLU), a down path, a middle
block, an up path with nearest-neighbour upsampling, GroupNorm + SiLU + conv at the ends. They differ in a
few details, which are constructor arguments here so each network states them in one place:

| detail                         | MaskGIT/MAGE VQGAN             | LDM/MAR VAE                     |
|--------------------------------|--------------------------------|---------------------------------|
| bias in res-block convs        | no                             | yes                             |
| res-block shortcut (ch change) | 1x1 conv on the block OUTPUT   | 1x1 conv on the block input     |
| downsampling                   | 2x2 average pooling            | stride-2 conv, pad (0,1,0,1)    |
| attention                      | none                           | encoder levels + both mids      |
| decoder blocks per level       | num_res_blocks                 | num_res_blocks + 1              |
| encoder conv_out kernel        | 1x1                            | 3x3                             |

Parameter names follow taming/LDM (`encoder.down.<i>.block.<j>.conv1`, `decoder.up.<i>.upsample.conv`,
`mid.block_1`, `mid.attn_1`, ...), i.e. those of the released checkpoints
(tests/checkpoint_formats/*.json); `self.up[i]` is level i even though the decoder runs it last.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32  # GroupNorm groups in both families
GROUPNORM_EPS = 1e-6  # taming/LDM and flax's GroupNorm default


def normalize(channels: int, groups: int = GROUPS) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=GROUPNORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv3x3, norm-SiLU-conv3x3, plus a residual.

    shortcut_on_output=True reproduces MaskGIT (and hence the MAGE weights): when the channel count
    changes, the 1x1 shortcut conv maps the block's OUTPUT (out -> out) and the result is `h + conv(h)`;
    the input is dropped. That is what the released weights were trained with (their shortcut is
    [out, out, 1, 1]), so we keep it rather than "fix" it.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, shortcut_on_output: bool = False,
                 dropout: float = 0.0, norm_groups: int = GROUPS) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.shortcut_on_output = shortcut_on_output
        self.norm1 = normalize(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = normalize(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        if in_channels != out_channels:
            shortcut_in = out_channels if shortcut_on_output else in_channels
            self.nin_shortcut = nn.Conv2d(shortcut_in, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, Cin, H, W) -> (B, Cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels == self.out_channels:
            return x + h
        if self.shortcut_on_output:
            return h + self.nin_shortcut(h)
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (LDM's `AttnBlock`)."""

    def __init__(self, channels: int, norm_groups: int = GROUPS) -> None:
        super().__init__()
        self.norm = normalize(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, 1, HW, C): one head; SDPA's default scale C^-0.5 is LDM's scale.
        q, k, v = (t(y).reshape(b, 1, c, h * w).transpose(-1, -2) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the resolution: stride-2 conv with LDM's asymmetric (0,1,0,1) padding, or 2x2 average pooling
    (MaskGIT, no parameters)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour then a 3x3 conv (both families)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int, attention: bool, block_kwargs: dict) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, **block_kwargs)
        self.attn_1 = AttnBlock(channels, block_kwargs["norm_groups"]) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, **block_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _level(blocks: list[nn.Module], attns: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    return level


class Encoder(nn.Module):
    """images (B, 3, H, W) -> features (B, out_channels, H/f, W/f) with f = 2 ** (len(ch_mult) - 1)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, resolution: int,
                 attn_resolutions: Sequence[int], out_channels: int, in_channels: int = 3,
                 conv_bias: bool = True, conv_in_bias: bool = True, shortcut_on_output: bool = False,
                 conv_downsample: bool = True, mid_attention: bool = True, conv_out_kernel: int = 3,
                 dropout: float = 0.0, norm_groups: int = GROUPS) -> None:
        super().__init__()
        block_kwargs = dict(bias=conv_bias, shortcut_on_output=shortcut_on_output, dropout=dropout,
                            norm_groups=norm_groups)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=conv_in_bias)
        self.down = nn.ModuleList()
        channels, res = ch, resolution
        for i, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(channels, ch * mult, **block_kwargs))
                channels = ch * mult
                if res in attn_resolutions:
                    attns.append(AttnBlock(channels, norm_groups))
            level = _level(blocks, attns)
            if i < len(ch_mult) - 1:
                level.downsample = Downsample(channels, conv_downsample)
                res //= 2
            self.down.append(level)
        self.mid = MidBlock(channels, mid_attention, block_kwargs)
        self.norm_out = normalize(channels, norm_groups)
        self.conv_out = nn.Conv2d(channels, out_channels, conv_out_kernel, padding=conv_out_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """latent (B, z_channels, h, w) -> images (B, 3, h*f, w*f) in the network's own pixel range."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, resolution: int,
                 attn_resolutions: Sequence[int], z_channels: int, out_channels: int = 3,
                 conv_bias: bool = True, shortcut_on_output: bool = False, extra_block: bool = True,
                 mid_attention: bool = True, dropout: float = 0.0, norm_groups: int = GROUPS) -> None:
        super().__init__()
        block_kwargs = dict(bias=conv_bias, shortcut_on_output=shortcut_on_output, dropout=dropout,
                            norm_groups=norm_groups)
        channels = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = MidBlock(channels, mid_attention, block_kwargs)
        levels: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + int(extra_block)):
                blocks.append(ResnetBlock(channels, ch * ch_mult[i], **block_kwargs))
                channels = ch * ch_mult[i]
                if res in attn_resolutions:
                    attns.append(AttnBlock(channels, norm_groups))
            level = _level(blocks, attns)
            if i > 0:
                level.upsample = Upsample(channels)
                res *= 2
            levels.insert(0, level)  # self.up[i] is level i (checkpoint naming), run from the top down
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(channels, norm_groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
