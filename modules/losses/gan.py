"""Hinge GAN losses, taming's adaptive generator weight, and `PixelGANLoss`, the pixel-space loss
(L1 + perceptual + GAN) that stage 0 and stage 2 both train with."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

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


class PixelGANLoss(nn.Module):
    """The pixel losses of stage 0 and stage 2: L1 + perceptual distance, a hinge-GAN generator term with
    taming's adaptive weight, and the discriminator's hinge loss. Owns the (frozen) perceptual network;
    the discriminators belong to the stage (stage 2 keeps one per token-count bucket).

    Autoencoder side:  nll, terms = reconstruction_loss(recon, images)
                       gan, terms = generator_term(nll, logits_of_fake, discriminator, last_layer, factor)
                       loss = nll (+ any regulariser) + gan
    Discriminator side: d_loss, terms = discriminator_loss([(logits_real, logits_fake), ...], factor)
    Term names are bare ("l1", "g_loss", ...): each stage prefixes them its own way in its logs.
    """

    def __init__(self, perceptual: str = "lpips", l1_weight: float = 1.0, perceptual_weight: float = 1.0,
                 disc_weight: float = 1.0, perceptual_signed_inputs: bool = True,
                 perceptual_dropout: bool = False) -> None:
        super().__init__()
        from modules.losses.perceptual import build_perceptual_loss  # perceptual.py imports lpips lazily

        self.l1_weight = l1_weight
        self.perceptual_weight = perceptual_weight
        self.disc_weight = disc_weight  # multiplies the adaptive weight (taming's disc_weight; stage 2: 1)
        # "lpips" without the VGG weights raises PerceptualWeightsMissing (never a random network)
        self.perceptual = build_perceptual_loss(perceptual, signed_inputs=perceptual_signed_inputs,
                                                dropout=perceptual_dropout)
        if self.perceptual is not None:
            self.perceptual.requires_grad_(False)

    def reconstruction_loss(self, recon: torch.Tensor, images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """recon, images: (B, 3, H, W) in [0, 1] -> nll = l1_weight * L1 + perceptual_weight * perceptual
        (float32 scalar) and its detached terms."""
        recon, images = recon.float(), images.float()
        l1 = (recon - images).abs().mean()
        nll = self.l1_weight * l1
        terms = {"l1": l1.detach()}
        if self.perceptual is not None:
            p = self.perceptual(recon, images).mean()
            nll = nll + self.perceptual_weight * p
            terms["perceptual"] = p.detach()
        return nll, terms

    def generator_term(self, nll: torch.Tensor, logits_of_fake: Callable[[], torch.Tensor],
                       discriminator: nn.Module, last_layer: torch.Tensor,
                       factor: float = 1.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """factor * adaptive weight * -E[D(x_hat)]. logits_of_fake() runs the discriminator on the
        reconstruction; it runs with D's parameters frozen, so the gradient reaches the image only.
        The adaptive weight needs a graph: without gradients (validation) it is 0."""
        discriminator.requires_grad_(False)
        g_loss = generator_loss(logits_of_fake().float())
        discriminator.requires_grad_(True)
        if torch.is_grad_enabled():
            weight = calculate_adaptive_weight(nll, g_loss, last_layer, self.disc_weight)
        else:
            weight = nll.new_tensor(0.0)
        return factor * weight * g_loss, {"g_loss": g_loss.detach(), "d_weight": weight}

    @staticmethod
    def discriminator_loss(logits: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                           factor: float = 1.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """logits: (D(real), D(fake)) pairs, one per batch of fakes (stage 2: one per phase) -> factor x
        the sum of their hinge losses, and the mean real / fake logits over all pairs (detached)."""
        d_loss = sum(hinge_d_loss(real, fake) for real, fake in logits)
        if factor != 1.0:
            d_loss = factor * d_loss
        real = torch.cat([r.flatten() for r, _ in logits]).mean().detach()
        fake = torch.cat([f.flatten() for _, f in logits]).mean().detach()
        return d_loss, {"logits_real": real, "logits_fake": fake}
