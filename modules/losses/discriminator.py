"""PatchGAN discriminator (pix2pix / taming's NLayerDiscriminator): 3 layers, ndf 64 (METHOD.md section 4)."""
from __future__ import annotations

import torch
from torch import nn


def _init_weights(module: nn.Module) -> None:
    # DCGAN/pix2pix initialisation, as taming: conv N(0, 0.02), norm scale N(1, 0.02) and bias 0.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """images (B, input_nc, H, W) -> patch logits (B, 1, H', W') (30x30 for 256 px with 3 layers).

    Takes images as given; callers feed [-1, 1] (what taming's discriminator saw): `2 * x01 - 1`.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden layer keeps the resolution
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)
