"""Pixel-space training losses: perceptual distance, PatchGAN discriminator, hinge GAN + adaptive weight."""

from modules.losses.discriminator import NLayerDiscriminator
from modules.losses.gan import PixelGANLoss, adopt_weight, calculate_adaptive_weight, generator_loss, hinge_d_loss
from modules.losses.perceptual import (
    PERCEPTUAL_CHOICES,
    PerceptualWeightsMissing,
    build_perceptual_loss,
    check_perceptual_weights,
    vgg16_weights_path,
)

__all__ = [
    "NLayerDiscriminator",
    "PERCEPTUAL_CHOICES",
    "PerceptualWeightsMissing",
    "PixelGANLoss",
    "adopt_weight",
    "build_perceptual_loss",
    "calculate_adaptive_weight",
    "check_perceptual_weights",
    "generator_loss",
    "hinge_d_loss",
    "vgg16_weights_path",
]
