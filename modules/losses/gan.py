"""Hinge GAN losses and taming's adaptive generator weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ADAPTIVE_WEIGHT_MAX = 1e4  # taming clamps the ratio of gradient norms to [0, 1e4]
ADAPTIVE_WEIGHT_EPS = 1e-4  # taming's guard against a zero GAN gradient


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -E[D(x_hat)]."""
    return -logits_fake.mean()


def calculate_adaptive_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                              disc_weight: float = 1.0) -> torch.Tensor:
    """Scale the GAN term so its gradient at the decoder's last layer matches the reconstruction's
    (Esser et al., taming-transformers): ||grad nll|| / (||grad g|| + 1e-4), clamped, times disc_weight.

    Needs both losses to depend on `last_layer` with a graph; returns a detached scalar.
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + ADAPTIVE_WEIGHT_EPS)
    return (weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX) * disc_weight).detach()


def adopt_weight(weight: float, step: int, start_step: int) -> float:
    """The GAN weight is 0 before `start_step` (the discriminator start of taming)."""
    return weight if step >= start_step else 0.0
