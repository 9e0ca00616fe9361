"""Result types of the training step and of the inference API, and the checks on user input."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch

EpsilonArg = Union[float, Sequence[float], torch.Tensor]


@dataclass
class PhaseOutput:
    """One phase (EIC or LTC) of a training iteration."""

    budget: int  # T of this phase
    epsilon: torch.Tensor  # (B,) epsilon condition (bin value) fed to the encoder
    num_tokens: torch.Tensor  # (B,) active tokens (EIC: T; LTC: T - #halted)
    mask: torch.Tensor  # (B, T) bool, True = active
    # (B, 3, H, W) raw pixels: stage 2 both phases (with grad); stage 1 EIC only (the no-grad eps0 decode)
    reconstruction: Optional[torch.Tensor] = None
    # (B,) EIC only: eps0, each image's measured mean L1 error, the condition LTC is given (snapped to a bin)
    eps0: Optional[torch.Tensor] = None


@dataclass
class TrainOutput:
    loss: torch.Tensor  # scalar, sum of losses
    losses: Dict[str, torch.Tensor]  # e.g. eic/rec, eic/quant, eic/halt, ltc/rec, ltc/quant, ltc/halt
    logs: Dict[str, float]
    phases: Dict[str, PhaseOutput]


@dataclass
class ActiveTokens:
    """One image's active 1D tokens."""

    tokens: torch.Tensor  # (n, D)
    positions: torch.Tensor  # (n,) slot of each token among the T (the decoder's 1D position)
    indices: Optional[torch.Tensor] = None  # (n,) code ids when the model is quantised

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class EncodeResult:
    """`embedding, reconstruction, info = model.encode(images)`.

    embedding:      list of ActiveTokens, one per image
    reconstruction: (B, 3, H, W) in [0, 1]
    info:           num_tokens (B,), mask (B, T) active, tokens (B, T, D), indices (B, T) or None,
                    halting_prob (B, T), epsilon (B,) the binned condition, budget (int)
    """

    embedding: List[ActiveTokens]
    reconstruction: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.embedding, self.reconstruction, self.info))

    @property
    def num_tokens(self) -> torch.Tensor:
        return self.info["num_tokens"]


# --- input checks (clear messages naming the allowed values) --------------------------------------------

def check_images(images: Any, input_size: int, factor: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"images is an empty batch (shape {tuple(images.shape)}); pass at least one image")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor with values in [0, 1], got dtype {images.dtype}")
    H, W = images.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"image size {H}x{W} is not a multiple of the base tokenizer's factor {factor}; "
                         f"this model takes {input_size}x{input_size}")
    if H != input_size or W != input_size:
        raise ValueError(f"image size {H}x{W} does not match the model's input size {input_size}x{input_size}; "
                         f"resize/crop first (e.g. Resize({input_size}) + CenterCrop({input_size}))")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"image values must be finite and in [0, 1], got range "
                         f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")


def check_budget(budget: Any, bank_size: int) -> int:
    if isinstance(budget, torch.Tensor) and budget.numel() == 1:
        budget = budget.item()
    if isinstance(budget, bool) or not isinstance(budget, int) and not (
            isinstance(budget, float) and budget.is_integer()):
        raise TypeError(f"input_token_budget must be an integer in [1, {bank_size}], got {budget!r}")
    budget = int(budget)
    if not 1 <= budget <= bank_size:
        raise ValueError(f"input_token_budget must be in [1, {bank_size}] (the model's token bank), got {budget}")
    return budget


def check_epsilon(epsilon: EpsilonArg, batch_size: int, max_bin: float, device: torch.device) -> torch.Tensor:
    """-> (B,) float tensor; scalar or per-image; each value in [0, largest bin]."""
    eps = torch.as_tensor(epsilon, dtype=torch.float32).to(device)
    if eps.dim() == 0:
        eps = eps.expand(batch_size)
    if eps.dim() != 1 or eps.shape[0] != batch_size:
        raise ValueError(f"desired_reconstruction_quality must be a number or one value per image "
                         f"({batch_size}), got shape {tuple(eps.shape)}")
    if not torch.isfinite(eps).all() or eps.min() < 0 or eps.max() > max_bin + 1e-9:
        raise ValueError(f"desired_reconstruction_quality must be in [0, {max_bin}] (mean L1 error in [0, 1] "
                         f"pixels; 0 disables adaptivity), got {eps.tolist()}")
    return eps.clone()
