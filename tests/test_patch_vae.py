"""The CPU demo's base tokenizer `patch_vae_demo` (base_tokenizers/patch_vae.py): shapes, that it learns fast,
its own checkpoints, latent-scale calibration, KARL checkpoints that record it, and stage-0 training of it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from base_tokenizers import PatchVAETokenizer, create_base_tokenizer, list_base_tokenizers
from base_tokenizers.checkpoint import own_checkpoint
from engine.stages.base_tokenizer import calibrate_latent_scale
from tests.script_loader import run_pretrain

TINY = dict(resolution=32, width=32, patch_size=8)  # a 4x4 grid of 16-d latents, ~40k parameters
# a small KARL for the 64-px karl_demo preset (same sizes as tests/test_release_compat.py)
TINY_KARL = dict(encoder_width=64, decoder_width=64, encoder_layers=1, decoder_layers=1, encoder_heads=2,
                 decoder_heads=2, halting_hidden=16)


def _flat_colours(n: int = 8, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size).contiguous()


def _tiny(seed: int = 0, **overrides) -> PatchVAETokenizer:
    torch.manual_seed(seed)
    return create_base_tokenizer("patch_vae_demo", **{**TINY, **overrides})


# --- shapes and sizes ---------------------------------------------------------------------------------------
def test_registered_with_the_yaml_sizes():
    assert "patch_vae_demo" in list_base_tokenizers()
    tok = create_base_tokenizer("patch_vae_demo")
    assert isinstance(tok, PatchVAETokenizer) and tok.kind == "vae"
    cfg = tok.config
    assert (cfg.resolution, cfg.patch_size, cfg.width, cfg.embed_dim, cfg.scale) == (64, 8, 256, 16, 1.0)
    assert tok.downsample_factor == 8 and tok.grid_size(64) == 8 and tok.embed_dim == 16
    assert tok.frozen and not any(p.requires_grad for p in tok.parameters())


def test_encode_decode_shapes_and_downsample_factor():
    tok = _tiny()
    assert tok.downsample_factor == 8 and tok.grid_size(32) == 4
    x = torch.rand(2, 3, 32, 32)
    enc = tok.encode(x)
    assert enc.latent.shape == (2, 16, 4, 4) and enc.indices is None
    assert torch.equal(enc.target, enc.latent)
    assert tok.decode(enc.latent).shape == (2, 3, 32, 32)
    out = tok.autoencode(x)
    assert out.reconstruction.shape == (2, 3, 32, 32) and out.latent.shape == (2, 16, 4, 4)
    assert out.reg_loss.ndim == 0 and out.reg_loss.item() >= 0
    assert tok.last_layer() is tok.vae.conv_out.weight

    f4 = _tiny(patch_size=4)
    assert f4.downsample_factor == 4 and f4.grid_size(32) == 8
    assert f4.encode(x).latent.shape == (2, 16, 8, 8)
    with pytest.raises(ValueError, match="not a multiple of the base tokenizer's downsampling factor 8"):
        tok.grid_size(36)


def test_resolution_not_a_multiple_of_the_patch_size_is_refused():
    with pytest.raises(ValueError, match="resolution 36 is not a multiple of patch_size 8"):
        create_base_tokenizer("patch_vae_demo", resolution=36, width=32, patch_size=8)


def test_frozen_encoding_is_the_deterministic_posterior_mean():
    tok = _tiny().eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(tok.encode(x).latent, tok.encode(x).latent)
    assert not torch.equal(tok.encode(x, sample=True).latent, tok.encode(x).latent)


# --- why it exists: it learns fast ---------------------------------------------------------------------------
def test_a_short_training_on_flat_colours_cuts_the_l1_error(one_thread):
    tok = _tiny()
    tok.set_trainable(True).train()
    images = _flat_colours()

    def l1() -> float:
        tok.eval()
        with torch.no_grad():
            value = (tok.autoencode(images).reconstruction - images).abs().mean().item()
        tok.train()
        return value

    before = l1()
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    for _ in range(100):  # ~0.3 s; the LDM-style vae_demo at a similar tiny size reaches only ~0.04-0.08
        out = tok.autoencode(images)  # train mode: sampled posterior, as in stage 0
        loss = (out.reconstruction - images).abs().mean() + 1e-6 * out.reg_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = l1()
    assert before > 0.1  # random init: far from the colours
    assert after < 0.25 * before and after < 0.03, (before, after)


# --- own checkpoints ---------------------------------------------------------------------------------------
def test_own_checkpoint_round_trip_keeps_weights_sizes_and_scale(tmp_path):
    tok = _tiny(width=48)  # not the YAML's width: the stored config must rebuild it
    torch.nn.init.normal_(tok.vae.conv_out.weight, std=0.05)
    tok.scale = tok.config.scale = 0.37
    path = tmp_path / "patch.ckpt"
    torch.save(own_checkpoint("patch_vae_demo", tok), path)

    loaded = create_base_tokenizer("patch_vae_demo", pretrained_ckpt_path=path)
    assert loaded.config == tok.config and loaded.scale == 0.37 and loaded.registry_name == "patch_vae_demo"
    x = torch.rand(2, 3, 32, 32)
    tok.eval()
    a, b = tok.encode(x), loaded.encode(x)
    assert torch.equal(a.latent, b.latent)
    assert torch.equal(tok.decode(a.latent), loaded.decode(b.latent))
    # the latent is scaled: 0.37 x the posterior mean; decode divides it back out
    mean = tok.vae.posterior(x * 2 - 1).mean
    torch.testing.assert_close(a.latent, mean * 0.37)


def test_a_vae_demo_checkpoint_is_refused_by_patch_vae_demo(tmp_path):
    from modules.io import CheckpointError

    other = create_base_tokenizer("vae_demo", resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                                  attn_resolutions=(8,))
    path = tmp_path / "vae_demo.ckpt"
    torch.save(own_checkpoint("vae_demo", other), path)
    # same kind "vae", so the kind check passes; the stored name says which network it is
    with pytest.raises(CheckpointError, match=r"holds a 'vae_demo' base tokenizer, not 'patch_vae_demo'"):
        create_base_tokenizer("patch_vae_demo", pretrained_ckpt_path=path)


# --- latent-scale calibration ------------------------------------------------------------------------------
def test_calibrate_latent_scale_gives_unit_std_latents():
    tok = _tiny()
    torch.manual_seed(3)
    loader = [(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    images = torch.cat([batch[0] for batch in loader])
    before = tok.encode(images, sample=False).latent.std().item()
    assert abs(before - 1.0) > 0.05  # an untrained network's latents are not unit-scale already

    scale = calibrate_latent_scale(tok, loader, torch.device("cpu"))
    assert scale == tok.scale == tok.config.scale
    assert not tok.training  # a frozen base stays in eval mode
    std = tok.encode(images, sample=False).latent.std().item()
    assert abs(std - 1.0) < 0.05, std
    again = calibrate_latent_scale(tok, loader, torch.device("cpu"))  # reads unscaled means: idempotent
    assert again == pytest.approx(scale, rel=1e-6)
    # decoding a calibrated latent gives the same image as before calibration (the scale divides back out)
    torch.testing.assert_close(tok.decode(tok.encode(images[:2]).latent),
                               (tok.vae.decode(tok.vae.posterior(images[:2] * 2 - 1).mean) + 1) / 2)


def test_calibrate_latent_scale_restores_train_mode_and_counts_max_batches():
    tok = _tiny()
    tok.set_trainable(True).train()
    loader = [(torch.rand(2, 3, 32, 32), None), (torch.full((2, 3, 32, 32), 50.0), None)]
    first_only = calibrate_latent_scale(tok, loader, torch.device("cpu"), max_batches=1)
    assert tok.training
    both = calibrate_latent_scale(tok, loader, torch.device("cpu"))
    assert both != pytest.approx(first_only)  # the out-of-range second batch counts only when allowed
    with pytest.raises(ValueError, match="gave no images"):
        calibrate_latent_scale(tok, [], torch.device("cpu"))


def test_calibrate_latent_scale_refuses_a_vqgan():
    vq = create_base_tokenizer("vqgan_demo", resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1,
                               embed_dim=16, codebook_size=64)
    with pytest.raises(ValueError, match="only VAE bases have a latent scale, not 'vqgan'"):
        calibrate_latent_scale(vq, [(torch.rand(2, 3, 32, 32), None)], torch.device("cpu"))


# --- KARL on it ----------------------------------------------------------------------------------------------
def test_karl_records_the_registry_name_and_its_checkpoint_reloads(tmp_path):
    from kolmogorov_tokenizers import create_model, export_safetensors, load_tokenizer

    base = _tiny(resolution=64)
    assert base.registry_name == "patch_vae_demo"
    torch.nn.init.normal_(base.vae.conv_out.weight, std=0.05)  # weights that differ from a fresh init
    base.scale = base.config.scale = 0.5
    torch.manual_seed(0)
    model = create_model("karl_demo", base_tokenizer=base, **TINY_KARL).eval()
    assert model.config.base_tokenizer == "patch_vae_demo"  # was recorded as "vae" before
    assert model.config.base_tokenizer_config["width"] == 32
    assert model.config.base_tokenizer_config["scale"] == 0.5

    x = torch.rand(2, 3, 64, 64)
    path = export_safetensors(model, tmp_path / "karl.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor known, none ignored
        loaded = load_tokenizer(path)
    assert isinstance(loaded.base_tokenizer, PatchVAETokenizer)
    assert loaded.base_tokenizer.scale == 0.5
    a, b = model.encode(x, input_token_budget=16), loaded.encode(x, input_token_budget=16)
    torch.testing.assert_close(b.info["tokens"], a.info["tokens"])
    assert torch.equal(b.info["num_tokens"], a.info["num_tokens"])
    torch.testing.assert_close(b.reconstruction, a.reconstruction)

    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict()}, tmp_path / "ours.pth")
    again = load_tokenizer(tmp_path / "ours.pth")
    assert again.config.base_tokenizer == "patch_vae_demo"
    torch.testing.assert_close(again.encode(x, input_token_budget=16).reconstruction, a.reconstruction)


def test_a_base_without_registry_name_keeps_the_old_rule():
    from base_tokenizers import PatchVAEConfig
    from kolmogorov_tokenizers import create_model

    base = PatchVAETokenizer(PatchVAEConfig(resolution=64, width=32))  # built directly: no registry name
    assert base.registry_name is None
    model = create_model("karl_demo", base_tokenizer=base, **TINY_KARL)
    assert model.config.base_tokenizer == "vae"  # the kind, as the preset's vqgan_demo does not match


# --- stage 0 -------------------------------------------------------------------------------------------------
def _pretrain_args(data_dir: Path, out_dir: Path) -> list[str]:
    return ["--model", "patch_vae_demo", "--data_path", str(data_dir), "--input_size", "32", "--set", "width=32",
            "--batch_size", "4", "--steps", "2", "--disc_start", "100", "--log_every", "1", "--save_every", "2",
            "--image_log_every", "0", "--eval_batches", "1", "--output_dir", str(out_dir)]


def test_pretrain_script_calibrates_the_scale_by_default(demo_data_dir, tmp_path, capsys, one_thread):
    out_dir = tmp_path / "run"
    assert run_pretrain(*_pretrain_args(demo_data_dir, out_dir)) == 0
    result = json.loads((out_dir / "result.json").read_text())
    assert result["steps"] == 2 and 0 < result["val_l1"] < 1
    scale = result["latent_scale"]
    assert scale > 0 and scale != 1.0
    assert "latent scale set to" in capsys.readouterr().out

    tok = create_base_tokenizer("patch_vae_demo", pretrained_ckpt_path=out_dir / "patch_vae_demo.ckpt")
    assert tok.scale == pytest.approx(scale) and tok.config.scale == pytest.approx(scale)
    assert tok.config.width == 32 and tok.grid_size(32) == 4


def test_pretrain_script_no_calibrate_scale_keeps_scale_one(demo_data_dir, tmp_path, one_thread):
    out_dir = tmp_path / "run"
    assert run_pretrain(*_pretrain_args(demo_data_dir, out_dir), "--no-calibrate_scale") == 0
    result = json.loads((out_dir / "result.json").read_text())
    assert "latent_scale" not in result
    tok = create_base_tokenizer("patch_vae_demo", pretrained_ckpt_path=out_dir / "patch_vae_demo.ckpt")
    assert tok.scale == 1.0 and tok.config.scale == 1.0
