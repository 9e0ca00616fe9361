"""Base tokenizers: official layouts, release/own checkpoint loading, wrapper semantics, stage-0 training."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from base_tokenizers import (
    BaseEncoding,
    BaseTokenizer,
    create_base_tokenizer,
    list_base_tokenizers,
    register_base_tokenizer,
)
from base_tokenizers.checkpoint import own_checkpoint
from modules.io import CheckpointError, safe_torch_load
from tests.release_fixtures import (
    BASE_LAYOUTS,
    base_tokenizer_checkpoint,
    load_layout,
    save_checkpoint,
    synthetic_state_dict,
)
from tests.script_loader import run_pretrain

REPO = Path(__file__).resolve().parent.parent
# A tiny VQGAN / VAE for fast tests: 32 px, f4 (an 8x8 grid).
TINY_VQ = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=16, codebook_size=64)
TINY_VAE = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,))


@pytest.fixture(scope="module")
def official():
    """The two official-config networks (built once: 54.5M + 66.5M parameters)."""
    return {name: create_base_tokenizer(name) for name in ("vqgan", "vae")}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- official layouts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vqgan", "vae"])
def test_official_config_has_exactly_the_released_parameter_names_and_shapes(official, name):
    network = getattr(official[name], name)  # KARL keys read base_tokenizer.<kind>.*
    assert _shapes(network) == load_layout(BASE_LAYOUTS[name])


def test_official_sizes(official):
    vq, vae = official["vqgan"], official["vae"]
    assert (vq.kind, vq.embed_dim, vq.codebook_size, vq.downsample_factor) == ("vqgan", 256, 1024, 16)
    assert tuple(vq.codebook().shape) == (1024, 256)
    assert (vae.kind, vae.embed_dim, vae.codebook_size, vae.downsample_factor) == ("vae", 16, None, 16)
    assert vae.scale == 0.2325
    assert vq.last_layer() is vq.vqgan.decoder.conv_out.weight
    assert vae.last_layer() is vae.vae.decoder.conv_out.weight


# --- release checkpoints load, every value arrives ---------------------------------------------------------
@pytest.mark.parametrize("name,wrapper", [("vqgan", "state_dict"), ("vqgan", "bare"), ("vae", "model")])
def test_release_checkpoint_loads_strictly_in_its_wrapper(tmp_path, name, wrapper):
    state = synthetic_state_dict(BASE_LAYOUTS[name], seed=3)  # distinct values per key and row
    path = save_checkpoint(base_tokenizer_checkpoint(name, state, wrapper=wrapper), tmp_path / f"{name}.ckpt")
    tokenizer = create_base_tokenizer(name, pretrained_ckpt_path=path)
    loaded = getattr(tokenizer, name).state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_default_path_is_the_release_location():
    from base_tokenizers import default_checkpoint_path

    assert default_checkpoint_path("vqgan") == REPO / "base_tokenizers" / "pretrained_models" / "vqgan.ckpt"
    assert default_checkpoint_path("vae") == REPO / "base_tokenizers" / "pretrained_models" / "vae.ckpt"


# --- bad files ---------------------------------------------------------------------------------------------
def test_missing_file_names_download_and_training_commands(tmp_path):
    with pytest.raises(CheckpointError) as err:
        create_base_tokenizer("vqgan", pretrained_ckpt_path=tmp_path / "nope.ckpt")
    message = str(err.value)
    assert str(tmp_path / "nope.ckpt") in message
    assert "python base_tokenizers/pretrained_models/download.py --model vqgan" in message
    assert "bash run_scripts/base_tokenizer_pretrain.sh" in message


def _tiny_release_file(tmp_path, mutate) -> Path:
    tokenizer = create_base_tokenizer("vqgan_demo", **TINY_VQ)
    state = {k: v.clone() for k, v in tokenizer.vqgan.state_dict().items()}
    mutate(state)
    return save_checkpoint({"state_dict": state}, tmp_path / "bad.ckpt")


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    def mutate(state):
        state.pop("decoder.conv_out.bias")
        state["decoder.extra.weight"] = torch.zeros(1)
        state["quantize.embedding.weight"] = torch.zeros(65, 16)

    path = _tiny_release_file(tmp_path, mutate)
    with pytest.raises(CheckpointError) as err:
        create_base_tokenizer("vqgan_demo", pretrained_ckpt_path=path, **TINY_VQ)
    message = str(err.value)
    assert "1 missing: decoder.conv_out.bias" in message
    assert "1 unexpected: decoder.extra.weight" in message
    assert "quantize.embedding.weight (file (65, 16) vs model (64, 16))" in message
    assert isinstance(err.value, ValueError)


def test_release_file_of_the_other_model_is_refused(tmp_path):
    path = save_checkpoint(base_tokenizer_checkpoint("vae", wrapper="model"), tmp_path / "vae.ckpt")
    with pytest.raises(CheckpointError, match=r"missing: .*unexpected: "):
        create_base_tokenizer("vqgan", pretrained_ckpt_path=path)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="not a valid PyTorch checkpoint"):
        create_base_tokenizer("vae", pretrained_ckpt_path=path)
    path = save_checkpoint({"epoch": 3}, tmp_path / "dict.ckpt")
    with pytest.raises(CheckpointError, match="expected a dict with key 'state_dict'"):
        create_base_tokenizer("vae", pretrained_ckpt_path=path)


def test_unknown_name_and_override_list_the_allowed_values():
    with pytest.raises(ValueError, match=r"available: \['patch_vae_demo', 'vae', 'vae_demo', 'vqgan', 'vqgan_demo'"):
        create_base_tokenizer("vqgan16")
    with pytest.raises(ValueError, match=r"unknown VQGANConfig keys \['chanels'\].*allowed: .*'ch'"):
        create_base_tokenizer("vqgan_demo", chanels=3)


# --- our own stage-0 files -----------------------------------------------------------------------------------
def test_own_checkpoint_rebuilds_its_size_and_weights(tmp_path):
    trained = create_base_tokenizer("vae_demo", **TINY_VAE)  # not the vae_demo YAML sizes
    torch.nn.init.normal_(trained.vae.decoder.conv_out.weight)
    path = tmp_path / "mine.ckpt"
    torch.save(own_checkpoint("vae_demo", trained, step=7), path)
    loaded = create_base_tokenizer("vae_demo", pretrained_ckpt_path=path)
    assert loaded.config == trained.config
    for (k, a), b in zip(trained.vae.state_dict().items(), loaded.vae.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="holds a 'vae' base tokenizer"):
        create_base_tokenizer("vqgan_demo", pretrained_ckpt_path=path)


# --- wrapper semantics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vqgan_demo", "vae_demo"])
def test_demo_shapes_at_64px(name):
    tokenizer = create_base_tokenizer(name)
    images = torch.rand(2, 3, 64, 64)
    enc = tokenizer.encode(images)
    c = tokenizer.embed_dim
    assert tokenizer.downsample_factor == 8 and tokenizer.grid_size(64) == 8
    assert enc.latent.shape == enc.target.shape == (2, c, 8, 8)
    assert (enc.indices is None) == (name == "vae_demo")
    assert tokenizer.decode(enc.target).shape == (2, 3, 64, 64)
    assert 1e6 < sum(p.numel() for p in tokenizer.parameters()) < 10e6  # "a few million parameters"


@pytest.mark.parametrize("name", ["vqgan", "vae"])
def test_official_shapes_at_256px(official, name):
    tokenizer = official[name]
    with torch.no_grad():
        enc = tokenizer.encode(torch.rand(1, 3, 256, 256))
        assert enc.latent.shape == (1, tokenizer.embed_dim, 16, 16)
        if name == "vqgan":
            assert enc.indices.shape == (1, 16, 16) and enc.indices.dtype == torch.long
        assert tokenizer.decode(enc.target).shape == (1, 3, 256, 256)


def test_grid_size_rejects_sizes_not_divisible_by_f():
    with pytest.raises(ValueError, match="not a multiple of the base tokenizer's downsampling factor 8"):
        create_base_tokenizer("vqgan_demo").grid_size(60)


def test_vqgan_works_in_01_and_targets_are_codebook_rows():
    tokenizer = create_base_tokenizer("vqgan_demo", **TINY_VQ)
    images = torch.rand(2, 3, 32, 32)
    enc = tokenizer.encode(images)
    assert torch.equal(enc.latent, tokenizer.vqgan.encoder(images))  # no range conversion (MAGE: [0, 1])
    codes = tokenizer.codebook()  # l2-normalised codes in the demo config
    assert torch.allclose(enc.target, codes[enc.indices].permute(0, 3, 1, 2), atol=1e-6)
    # each index is the nearest code of its latent vector (cosine, as the codes are l2-normalised)
    z = torch.nn.functional.normalize(enc.latent, dim=1).permute(0, 2, 3, 1).reshape(-1, 16)
    assert torch.equal(enc.indices.flatten(), torch.cdist(z, codes).argmin(dim=1))
    # (the straight-through z + (z_q - z) equals z_q up to rounding)
    assert torch.allclose(tokenizer.decode(enc.target), tokenizer.decode_indices(enc.indices), atol=1e-5)
    assert torch.allclose(tokenizer.decode(enc.target), tokenizer.vqgan.decoder(enc.target))


def test_vae_scales_latents_and_converts_pixel_range():
    tokenizer = create_base_tokenizer("vae_demo", **TINY_VAE)
    images = torch.rand(2, 3, 32, 32)
    posterior = tokenizer.vae.posterior(images * 2 - 1)  # MAR works in [-1, 1]
    enc = tokenizer.encode(images)  # frozen -> eval mode -> posterior mean
    assert torch.allclose(enc.latent, posterior.mean * 0.2325)
    assert enc.target is enc.latent and enc.indices is None
    expected = (tokenizer.vae.decode(posterior.mean) + 1) / 2  # decode divides by the scale
    assert torch.allclose(tokenizer.decode(enc.latent), expected, atol=1e-5)
    release = create_base_tokenizer("vae_demo", decode_scaled_latent=True, **TINY_VAE)
    release.load_state_dict(tokenizer.state_dict())
    assert torch.allclose(release.decode(enc.latent), (tokenizer.vae.decode(enc.latent) + 1) / 2, atol=1e-5)


def test_vae_unit_pixel_range_feeds_images_straight_and_reads_the_raw_output():
    """The KARL release's convention (METHOD.md s.2): [0, 1] images into the network, its output as [0, 1]."""
    signed = create_base_tokenizer("vae_demo", **TINY_VAE)
    unit = create_base_tokenizer("vae_demo", pixel_range="unit", **TINY_VAE)
    unit.load_state_dict(signed.state_dict())
    images = torch.rand(2, 3, 32, 32)
    enc = unit.encode(images)
    assert torch.allclose(enc.latent, unit.vae.posterior(images).mean * 0.2325)
    assert torch.allclose(unit.decode(enc.latent), unit.vae.decode(enc.latent / 0.2325), atol=1e-6)
    assert not torch.allclose(enc.latent, signed.encode(images).latent)
    with pytest.raises(ValueError, match="pixel_range must be one of"):
        create_base_tokenizer("vae_demo", pixel_range="0-255", **TINY_VAE)


def test_vae_eval_encodings_are_deterministic_and_sampling_is_selectable():
    tokenizer = create_base_tokenizer("vae_demo", **TINY_VAE)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(tokenizer.encode(images).latent, tokenizer.encode(images).latent)
    a, b = tokenizer.encode(images, sample=True).latent, tokenizer.encode(images, sample=True).latent
    assert not torch.equal(a, b)
    sampling = create_base_tokenizer("vae_demo", sample_posterior=True, **TINY_VAE)
    assert not torch.equal(sampling.encode(images).latent, sampling.encode(images).latent)
    trainable = create_base_tokenizer("vae_demo", **TINY_VAE).set_trainable(True).train()
    assert not torch.equal(trainable.encode(images).latent, trainable.encode(images).latent)


def test_frozen_by_default_and_trainable_on_request():
    tokenizer = create_base_tokenizer("vqgan_demo", **TINY_VQ)
    outer = torch.nn.Sequential(tokenizer)
    outer.train()  # the KARL model around it trains
    assert not tokenizer.training and not any(p.requires_grad for p in tokenizer.parameters())
    tokenizer.set_trainable(True)
    outer.train()
    assert tokenizer.training and all(p.requires_grad for p in tokenizer.parameters())
    out = tokenizer(torch.rand(1, 3, 32, 32))
    ((out.reconstruction - 0.5).abs().mean() + out.reg_loss).backward()
    assert tokenizer.vqgan.encoder.conv_in.weight.grad is not None
    assert tokenizer.vqgan.quantize.embedding.weight.grad is not None


# --- registering a custom base (the docs/CHECKPOINTS.md example, executed) ------------------------------------
def test_docs_register_example_runs():
    text = (REPO / "docs" / "CHECKPOINTS.md").read_text()
    block = re.search(r"<!-- example: register -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the register_base_tokenizer example is missing from docs/CHECKPOINTS.md"
    namespace: dict = {}
    exec(compile(block.group(1), "docs_register_example", "exec"), namespace)
    assert "pixel_grid" in list_base_tokenizers()
    tokenizer = create_base_tokenizer("pixel_grid", patch=4)
    assert isinstance(tokenizer, BaseTokenizer) and not tokenizer.training
    images = torch.rand(2, 3, 32, 32)
    enc = tokenizer.encode(images)
    assert isinstance(enc, BaseEncoding) and enc.latent.shape == (2, 48, 8, 8)
    assert torch.allclose(tokenizer.decode(enc.latent), images, atol=1e-6)


def test_register_rejects_non_tokenizers():
    with pytest.raises(TypeError, match="not a BaseTokenizer subclass"):
        register_base_tokenizer("bad", torch.nn.Linear, object())


# --- stage 0: training from scratch ---------------------------------------------------------------------------
def test_small_vqgan_learns_and_keeps_its_codebook_alive(demo_data_dir, one_thread):
    """A few hundred steps on demo images: L1 falls clearly, most codes stay in use (collapse guard on)."""
    from engine.data import build_dataset
    from engine.stages.base_tokenizer import BaseTokenizerStageConfig, BaseTokenizerTrainingLoss

    torch.manual_seed(0)
    dataset = build_dataset(demo_data_dir, "train", 32)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # (44, 3, 32, 32)
    tokenizer = create_base_tokenizer("vqgan_demo", **TINY_VQ).set_trainable(True).train()
    losses = BaseTokenizerTrainingLoss(
        BaseTokenizerStageConfig(perceptual="none", disc_start=10**9, restart_window=20), tokenizer)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-3, betas=(0.5, 0.9))

    def eval_l1() -> float:
        tokenizer.eval()
        with torch.no_grad():
            error = (tokenizer.autoencode(images).reconstruction - images).abs().mean().item()
        tokenizer.train()
        return error

    initial, latent = eval_l1(), None
    for step in range(250):
        batch = images[torch.randint(0, len(images), (16,))]
        losses.maybe_restart_codes(tokenizer, latent)
        out = tokenizer(batch)
        loss, _ = losses.autoencoder_loss(tokenizer, out, batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.codebook_logs(out)
        latent = out.latent.detach()
    final = eval_l1()
    tokenizer.eval()
    with torch.no_grad():
        used = tokenizer.encode(images).indices.unique().numel()
        recon = tokenizer.autoencode(images).reconstruction
    assert final < 0.5 * initial, (initial, final)
    assert used >= 0.5 * 64, used  # 44 images x 64 positions: at least half the codebook in use
    # The reconstructions follow their images, not one average picture: each image's mean colour is
    # recovered far better than by the dataset's mean colour (a collapsed autoencoder scores about 1 here).
    colour, recon_colour = images.mean(dim=(2, 3)), recon.mean(dim=(2, 3))
    colour_error = (recon_colour - colour).abs().mean()
    spread = (colour - colour.mean(dim=0, keepdim=True)).abs().mean()
    assert colour_error < 0.6 * spread, (colour_error.item(), spread.item())


def test_pretrain_script_trains_saves_resumes_and_its_checkpoint_loads(demo_data_dir, tmp_path, capsys, one_thread):
    out_dir = tmp_path / "run"
    common = ["--model", "vqgan_demo", "--data_path", str(demo_data_dir), "--input_size", "32",
              "--set", "ch=16", "ch_mult=[1,2,2]", "num_res_blocks=1", "embed_dim=16", "codebook_size=64",
              "--batch_size", "4", "--disc_start", "2", "--log_every", "2", "--save_every", "2",
              "--eval_batches", "2", "--output_dir", str(out_dir)]
    assert run_pretrain(*common, "--steps", "4") == 0
    result = json.loads((out_dir / "result.json").read_text())
    assert result["steps"] == 4 and 0 < result["val_l1"] < 1 and result["val_psnr"] > 0
    printed = capsys.readouterr().out
    assert "gan/g_loss" in printed and "codebook/usage" in printed  # the GAN switched on at step 2
    assert any(p.name.startswith("events.out.tfevents") for p in out_dir.iterdir())  # TensorBoard

    tokenizer = create_base_tokenizer("vqgan_demo", pretrained_ckpt_path=out_dir / "vqgan_demo.ckpt")
    assert tokenizer.config.ch == 16 and tokenizer.grid_size(32) == 8  # the stored config rebuilt the size
    state = safe_torch_load(out_dir / "checkpoint-last.pth")  # the trainer's checkpoint (engine/trainer.py)
    assert state["step"] == 4 and state["global_step"] == 4
    assert "ema" not in state  # stage 0 saves its live weights; no EMA copy is kept
    for key, value in tokenizer.vqgan.state_dict().items():
        assert torch.equal(value, state["model"][f"vqgan.{key}"]), key
    again = create_base_tokenizer("vqgan_demo", pretrained_ckpt_path=out_dir / "checkpoint-last.pth")
    assert again.config == tokenizer.config  # checkpoint-last.pth loads as a tokenizer too

    # 44 images in batches of 4: 11 steps an epoch, so the resumed run crosses an epoch boundary
    assert run_pretrain(*common, "--steps", "13", "--resume", "auto") == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((out_dir / "result.json").read_text())["steps"] == 13
    assert not list(out_dir.glob("checkpoint-[0-9]*.pth"))  # stage 0 keeps checkpoint-last.pth only


def test_pretrain_resume_continues_exactly(demo_data_dir, tmp_path, one_thread):
    """Stopped after 3 steps and resumed to 7, stage 0 ends with the weights of an uninterrupted 7-step run.
    44 images in batches of 16: 2 steps an epoch, so the stop falls inside an epoch, after the GAN start."""
    def run(out_dir, *extra):
        return run_pretrain("--model", "vqgan_demo", "--data_path", str(demo_data_dir), "--input_size", "32",
                            "--set", "ch=16", "ch_mult=[1,2,2]", "num_res_blocks=1", "embed_dim=16",
                            "codebook_size=64", "--batch_size", "16", "--disc_start", "2", "--save_every", "1",
                            "--eval_batches", "0", "--output_dir", str(out_dir), *extra)

    assert run(tmp_path / "straight", "--steps", "7") == 0
    assert run(tmp_path / "resumed", "--steps", "3") == 0
    assert run(tmp_path / "resumed", "--steps", "7", "--resume", "auto") == 0
    straight = safe_torch_load(tmp_path / "straight" / "vqgan_demo.ckpt")["state_dict"]
    resumed = safe_torch_load(tmp_path / "resumed" / "vqgan_demo.ckpt")["state_dict"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_pretrain_script_bad_input_exits_with_a_message(tmp_path, capsys):
    assert run_pretrain("--model", "vqgan_demo", "--data_path", str(tmp_path / "none"), "--steps", "1") == 2
    assert f"no training images: {tmp_path / 'none' / 'train'} is not a folder" in capsys.readouterr().err
    assert run_pretrain("--model", "vqgan_demo", "--data_path", str(tmp_path), "--set", "chh=3") == 2
    assert "unknown VQGANConfig keys ['chh']" in capsys.readouterr().err
    assert run_pretrain("--model", "vqgan_demo", "--resume", str(tmp_path / "gone.pth")) == 2
    assert f"--resume {tmp_path / 'gone.pth'}: no such checkpoint file" in capsys.readouterr().err



def test_pretrain_script_refuses_lpips_without_vgg_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    assert run_pretrain("--model", "vqgan_demo", "--data_path", str(tmp_path), "--perceptual", "lpips") == 2
    assert "vgg16-397923af.pth (not found)" in capsys.readouterr().err


def test_stage0_runs_in_the_generic_trainer_and_its_checkpoint_loads(demo_data_dir, tmp_path, one_thread):
    from engine.config import load_config
    from engine.stages import get_stage
    from engine.trainer import Trainer

    cfg = load_config(["--stage", "base_tokenizer", "--data_path", str(demo_data_dir), "--input_size", "32",
                       "--batch_size", "4", "--max_steps", "4", "--output_dir", str(tmp_path), "--precision", "fp32",
                       "--num_workers", "0", "model.base_tokenizer=vqgan_demo", "gan.perceptual=none"])
    stage = get_stage("base_tokenizer")
    stage.cfg.disc_start = 2  # steps 3 and 4: autoencoder with the GAN term, then discriminator, same batch
    trainer = Trainer(cfg, stage)
    d_before = copy.deepcopy(stage.losses.discriminator.state_dict())
    assert trainer.fit() == 0
    assert stage.steps == 4 and stage.losses.gan_on(stage.steps)
    d_after = stage.losses.discriminator.state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before)  # the discriminator trained
    tokenizer = create_base_tokenizer("vqgan_demo", pretrained_ckpt_path=tmp_path / "checkpoint-last.pth",
                                      resolution=32)
    from modules.io import safe_torch_load

    saved = safe_torch_load(tmp_path / "checkpoint-last.pth")["model"]
    assert torch.equal(tokenizer.vqgan.decoder.conv_out.weight, saved["vqgan.decoder.conv_out.weight"])


def test_pretrain_script_saves_on_sigterm_and_resumes(demo_data_dir, tmp_path):
    """SIGTERM mid-run: the current step finishes, checkpoint-last.pth is written, exit 143; --resume auto
    continues from that step instead of starting over."""
    import signal
    import subprocess
    import sys
    import time

    out_dir = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "run_scripts" / "base_tokenizer_pretrain.py"), "--model", "vqgan_demo",
           "--data_path", str(demo_data_dir), "--input_size", "32", "--set", "ch=16", "ch_mult=[1,2,2]",
           "num_res_blocks=1", "embed_dim=16", "codebook_size=64", "--batch_size", "4", "--disc_start", "100000",
           "--log_every", "1", "--save_every", "100000", "--eval_batches", "0", "--threads", "1",
           "--output_dir", str(out_dir)]
    proc = subprocess.Popen(cmd + ["--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until training is under way
        if "[stage0] step 2/" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "stopped by signal" in rest
    saved_step = int(safe_torch_load(out_dir / "checkpoint-last.pth")["step"])
    assert saved_step >= 2

    done = subprocess.run(cmd + ["--steps", str(saved_step + 1), "--resume", "auto"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"at step {saved_step}" in done.stdout
    assert json.loads((out_dir / "result.json").read_text())["steps"] == saved_step + 1
