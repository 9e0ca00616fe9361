"""Halting: the head that predicts omega per 1D token, its training loss, and the two ways to remove halted
tokens from the decoder (METHOD.md sections 2 and 3).

A token is halted iff omega > threshold (0.75). Halted tokens leave decoder self-attention in both
directions: pair (i, j) is blocked iff halted(i) or halted(j), the diagonal is always kept (no empty row),
2D mask tokens are never halted. The 2D outputs therefore do not depend on halted tokens, so the same
result can be had by dropping them from the sequence (`pack_active_tokens`), which saves compute.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

HALTING_LOSS_REDUCTIONS = ("split", "mean")


def build_halting_mlp(width: int, hidden: int = 512) -> nn.Sequential:
    """Linear(width, 512) -> Tanh -> Linear(512, 1): keys `halting_mlp.0`, `halting_mlp.2` as released."""
    return nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def halted_from_prob(omega: torch.Tensor, threshold: float = 0.75) -> torch.Tensor:
    """omega (B, T) in [0, 1] -> bool (B, T), True = halted (dropped)."""
    return omega > threshold


def halting_loss(logit: torch.Tensor, targets: torch.Tensor, reduction: str = "split") -> torch.Tensor:
    """The halting head's BCE: logit, targets (B, T) -> scalar. Targets are 0 (keep) on the first tokens and
    1 (halt) on the rest, the same columns for every image (LTC: the first T kept, the last dT halted; EIC:
    all kept).

    "split" (the release): mean BCE over the halted columns + mean BCE over the kept ones, so each side weighs
    1 whatever its length (a side with no column adds nothing); "mean": one mean over all B x T entries.
    """
    if reduction == "mean":
        return F.binary_cross_entropy_with_logits(logit, targets)
    if reduction != "split":
        raise ValueError(f"halting loss reduction must be one of {HALTING_LOSS_REDUCTIONS}, got {reduction!r}")
    halt = targets[0] > 0.5  # (T,) the same for every image
    kept = F.binary_cross_entropy_with_logits(logit[:, ~halt], targets[:, ~halt]) if bool((~halt).any()) \
        else logit.new_zeros(())
    if not bool(halt.any()):
        return kept
    return kept + F.binary_cross_entropy_with_logits(logit[:, halt], targets[:, halt])


def keep_mask_from_blocked(blocked: torch.Tensor) -> Optional[torch.Tensor]:
    """blocked (B, L) bool -> attention mask (B, L, L), True = may attend; None when nothing is blocked.

    mask[b, i, j] = not (blocked[b, i] or blocked[b, j]), with the diagonal always True.
    """
    if not bool(blocked.any()):
        return None  # full attention: let SDPA take its unmasked fast path
    free = ~blocked  # (B, L)
    mask = free.unsqueeze(2) & free.unsqueeze(1)  # (B, L, L)
    eye = torch.eye(blocked.shape[1], dtype=torch.bool, device=blocked.device)
    return mask | eye


def decoder_halting_mask(num_2d: int, halted: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Decoder sequence [num_2d mask tokens] + [T 1D tokens]; halted (B, T) -> mask (B, L, L) or None."""
    if halted is None:
        return None
    never = torch.zeros(halted.shape[0], num_2d, dtype=torch.bool, device=halted.device)
    return keep_mask_from_blocked(torch.cat([never, halted], dim=1))


def tile_masks_over_heads(mask: torch.Tensor, heads: int) -> torch.Tensor:
    """The release's per-head masks: mask (B, L, L) -> (B, heads, L, L) where head h of image b gets
    mask[(b * heads + h) % B].

    The release repeats the batch's masks `heads` times (`mask.repeat(heads, 1, 1)`, (heads * B, L, L)) for
    nn.MultiheadAttention, which reads a 3-D mask as (B * heads, L, L) with each image's heads side by side;
    so for B > 1 an image's heads are masked with other images' halting patterns. Its models were trained so.
    """
    B = mask.shape[0]
    return mask.repeat(heads, 1, 1).view(B, heads, *mask.shape[1:])


def pack_active_tokens(tokens: torch.Tensor, halted: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Remove halted tokens: tokens (B, T, D), halted (B, T) -> packed (B, K, D), padding (B, K) bool.

    K = the largest active count in the batch; each row keeps its active tokens in their original order and
    is padded at the end (padding = True there). Position embeddings must already be added.
    """
    B, T, D = tokens.shape
    num_active = (~halted).sum(dim=1)  # (B,)
    K = int(num_active.max()) if B > 0 else 0
    # stable sort of the halted flags puts active tokens first, in order
    order = torch.sort(halted.to(torch.uint8), dim=1, stable=True).indices[:, :K]  # (B, K)
    packed = torch.gather(tokens, 1, order.unsqueeze(-1).expand(B, K, D))
    padding = torch.arange(K, device=tokens.device).unsqueeze(0) >= num_active.unsqueeze(1)  # (B, K)
    return packed, padding
