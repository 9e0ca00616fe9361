"""Pixel losses (hinge GAN, adaptive weight, PatchGAN, perceptual choice) and the stage-0 loss pieces."""
from __future__ import annotations

import math

import pytest
import torch

from base_tokenizers import create_base_tokenizer
from engine.stages.base_tokenizer import BaseTokenizerStageConfig, BaseTokenizerTrainingLoss, CodebookMonitor
from modules.losses import (
    NLayerDiscriminator,
    PerceptualWeightsMissing,
    PixelGANLoss,
    adopt_weight,
    build_perceptual_loss,
    calculate_adaptive_weight,
    generator_loss,
    hinge_d_loss,
)
from tests.release_fixtures import gan_losses_state_dict

TINY_VQ = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=16, codebook_size=64)


def test_pixel_gan_loss_terms_by_hand():
    """The one pixel loss of stages 0 and 2: L1, factor x adaptive weight x -E[D(x_hat)], summed hinges."""
    torch.manual_seed(0)
    last = torch.nn.Conv2d(4, 3, 1)
    disc = NLayerDiscriminator(3, 8, 2)
    images = torch.rand(2, 3, 32, 32)
    recon = torch.sigmoid(last(torch.randn(2, 4, 32, 32)))
    losses = PixelGANLoss("none", l1_weight=2.0, disc_weight=0.8)
    nll, terms = losses.reconstruction_loss(recon, images)
    l1 = (recon - images).abs().mean()
    assert nll.item() == pytest.approx(2.0 * l1.item()) and terms["l1"].item() == pytest.approx(l1.item())
    gan, gan_terms = losses.generator_term(nll, lambda: disc(recon), disc, last.weight, factor=0.5)
    g = -disc(recon).mean()
    weight = calculate_adaptive_weight(nll, g, last.weight, 0.8)
    assert gan.item() == pytest.approx(0.5 * weight.item() * g.item(), rel=1e-5)
    assert gan_terms["d_weight"].item() == pytest.approx(weight.item(), rel=1e-6)
    assert all(p.requires_grad for p in disc.parameters())  # frozen only while the generator term ran
    pairs = [(torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])), (torch.tensor([0.0]), torch.tensor([-2.0]))]
    d_loss, d_terms = losses.discriminator_loss(pairs, factor=2.0)
    assert d_loss.item() == pytest.approx(2.0 * (hinge_d_loss(*pairs[0]) + hinge_d_loss(*pairs[1])).item())
    assert d_terms["logits_real"].item() == pytest.approx(1.0 / 3) and d_terms["logits_fake"].item() == pytest.approx(-1.0 / 3)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x) = 0, 0.5, 2   -> mean 2.5 / 3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x) = 0, 1, 2     -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert generator_loss(fake).item() == pytest.approx(1.0 / 3)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    last = torch.nn.Parameter(torch.ones(2, 2))
    a, b = torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    nll, g = (last * a).sum(), (last * b).sum()  # gradients a (norm 5) and b (norm 1)
    assert calculate_adaptive_weight(nll, g, last).item() == pytest.approx(5.0 / (1.0 + 1e-4))
    assert calculate_adaptive_weight(nll, g, last, disc_weight=0.8).item() == pytest.approx(0.8 * 5.0 / (1.0 + 1e-4))
    tiny = (last * b * 1e-9).sum()  # a vanishing GAN gradient: clamped at 1e4
    assert calculate_adaptive_weight(nll, tiny, last).item() == pytest.approx(1e4)
    assert not calculate_adaptive_weight(nll, g, last).requires_grad


def test_gan_weight_is_zero_before_the_start_step():
    assert adopt_weight(0.8, step=99, start_step=100) == 0.0
    assert adopt_weight(0.8, step=100, start_step=100) == 0.8


def test_patchgan_has_taming_layout_and_patch_output():
    disc = NLayerDiscriminator(3, 64, 3)
    # the discriminator keys of a full-finetuning checkpoint (gan_losses.<i>.discriminator.*, taming names)
    expected = {k.split("discriminator.", 1)[1]: tuple(v.shape)
                for k, v in gan_losses_state_dict(1, with_lpips=False).items()}
    assert {k: tuple(v.shape) for k, v in disc.state_dict().items()} == expected
    # 3*64*16+64 + 64*128*16+2*128 + 128*256*16+2*256 + 256*512*16+2*512 + 512*16+1 (no conv bias before BN)
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633
    assert disc(torch.rand(2, 3, 256, 256)).shape == (2, 1, 30, 30)  # pix2pix: 70x70 receptive field


def test_perceptual_choice_is_explicit(monkeypatch, tmp_path):
    assert build_perceptual_loss("none") is None
    with pytest.raises(ValueError, match=r"perceptual must be one of \['lpips', 'offline_effnet', 'none'\]"):
        build_perceptual_loss("vgg")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache: no VGG weights
    with pytest.raises(PerceptualWeightsMissing) as err:
        build_perceptual_loss("lpips")
    assert str(tmp_path / "checkpoints" / "vgg16-397923af.pth") in str(err.value)
    assert "perceptual='none'" in str(err.value)
    with pytest.raises(PerceptualWeightsMissing, match="not implemented"):
        build_perceptual_loss("offline_effnet")


def test_codebook_monitor_usage_and_perplexity_by_hand():
    monitor = CodebookMonitor(codebook_size=8, window=10)
    logs = monitor.update(torch.tensor([[0, 1], [2, 3]]))  # 4 of 8 codes, uniform
    assert logs["codebook/usage"] == pytest.approx(0.5)
    assert logs["codebook/perplexity"] == pytest.approx(4.0)
    logs = monitor.update(torch.tensor([[5, 5], [5, 5]]))  # one code this step; 5 of 8 used in the window
    assert logs["codebook/usage"] == pytest.approx(5 / 8)
    assert logs["codebook/perplexity"] == pytest.approx(1.0)


def test_dead_codes_restart_on_encoder_outputs_and_used_codes_stay():
    tokenizer = create_base_tokenizer("vqgan_demo", l2_normalize_codes=False, **TINY_VQ)
    quantizer = tokenizer.vqgan.quantize
    monitor = CodebookMonitor(codebook_size=64, window=3)
    before = quantizer.embedding.weight.detach().clone()
    for _ in range(3):
        monitor.update(torch.tensor([[0, 1]]))  # only codes 0 and 1 are ever used
    z = torch.full((1, 16, 2, 2), 7.0)  # every encoder output vector is (7, ..., 7)
    assert monitor.restart_dead_codes(quantizer, z) == 62
    after = quantizer.embedding.weight.detach()
    assert torch.equal(after[:2], before[:2])
    assert torch.allclose(after[2:], torch.full((62, 16), 7.0), atol=1e-2)
    assert monitor.restart_dead_codes(quantizer, z) == 0  # restarted codes get a fresh window


def test_autoencoder_loss_adds_gan_only_from_disc_start_and_leaves_d_untouched():
    tokenizer = create_base_tokenizer("vqgan_demo", **TINY_VQ).set_trainable(True).train()
    losses = BaseTokenizerTrainingLoss(BaseTokenizerStageConfig(perceptual="none", disc_start=5), tokenizer)
    images = torch.rand(2, 3, 32, 32)
    out = tokenizer(images)
    loss, terms = losses.autoencoder_loss(tokenizer, out, images, step=4)
    assert "gan/g_loss" not in terms
    assert loss.item() == pytest.approx(terms["rec/l1"].item() + terms["reg/vq"].item(), rel=1e-5)
    loss, terms = losses.autoencoder_loss(tokenizer, out, images, step=5)
    expected = terms["rec/l1"] + terms["reg/vq"] + terms["gan/d_weight"] * terms["gan/g_loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in losses.discriminator.parameters())
    assert all(p.requires_grad for p in losses.discriminator.parameters())
    d_loss, _ = losses.discriminator_loss(images, out.reconstruction)
    tokenizer.zero_grad()
    d_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in tokenizer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in losses.discriminator.parameters())


def test_vae_kl_term_uses_the_configured_weight_per_pixel():
    tokenizer = create_base_tokenizer("vae_demo", resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                                      attn_resolutions=()).set_trainable(True).train()
    cfg = BaseTokenizerStageConfig(perceptual="none", disc_start=10**9, kl_weight=0.5)
    losses = BaseTokenizerTrainingLoss(cfg, tokenizer)
    images = torch.rand(2, 3, 32, 32)
    out = tokenizer(images)
    loss, terms = losses.autoencoder_loss(tokenizer, out, images, step=0)
    assert loss.item() == pytest.approx(terms["rec/l1"].item() + 0.5 * terms["reg/kl"].item() / (3 * 32 * 32), rel=1e-5)
    assert math.isfinite(terms["reg/kl"].item()) and terms["reg/kl"].item() > 0
