"""Starting values for KARL's learned 2D positional maps (encoder and decoder, shape (width, P, P)).

"random" (the release): N(0, 1/width) per entry. Any two cells are then nearly orthogonal, so a query
projected onto the map scores the cells with spatial white noise: attention starts with no notion of
"nearby", and every 1D token first learns a global summary.
"sincos" (ours, opt-in): MAE-style 2D sin/cos features (half the channels for rows, half for columns) at
frequencies geometrically spaced from 1 rad per cell down to 1 rad per map, so neighbouring cells start
similar and a random query scores a smooth blob. Same parameter and checkpoint keys; it stays learnable.
"""
from __future__ import annotations

import math

import torch

POSITIONAL_EMBEDDING_INITS = ("random", "sincos")


def sincos_features(values: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(n,) values, (k,) angular frequencies -> (n, 2k): [sin(v * f), cos(v * f)]. Shared by the positional
    maps here and the epsilon-condition embeddings (kolmogorov_tokenizers/conditioning.py)."""
    angles = values[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d_map(width: int, size: int) -> torch.Tensor:
    """(width, size, size): channels [sin(y w), cos(y w), sin(x w), cos(x w)] for `width // 4` frequencies
    w from 1 down to 1/size rad per cell; channels left over (width not divisible by 4) are zero."""
    quarter = width // 4
    if quarter == 0:
        raise ValueError(f"sincos positional maps need width >= 4, got {width}")
    freqs = torch.exp(torch.linspace(0.0, -math.log(size), quarter, dtype=torch.float64))  # 1 .. 1/size
    axis = sincos_features(torch.arange(size, dtype=torch.float64), freqs)  # (size, 2 * quarter)
    rows = axis[:, None, :].expand(size, size, -1)  # varies with y
    cols = axis[None, :, :].expand(size, size, -1)  # varies with x
    pad = torch.zeros(size, size, width - 4 * quarter, dtype=torch.float64)
    return torch.cat([rows, cols, pad], dim=2).permute(2, 0, 1).float().contiguous()


def initial_positional_map(kind: str, width: int, size: int) -> torch.Tensor:
    """(width, size, size) starting values of one learned positional map (see the module docstring)."""
    if kind == "random":
        return width ** -0.5 * torch.randn(width, size, size)
    if kind == "sincos":
        return sincos_2d_map(width, size)
    raise ValueError(f"positional_embedding_init must be one of {POSITIONAL_EMBEDDING_INITS}, got {kind!r}")
