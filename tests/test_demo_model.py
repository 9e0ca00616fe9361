"""The shipped demo model (kolmogorov_tokenizers/pretrained_models/demo): SHA-256 verification, loading by
name, and the learned behaviour users rely on (adaptive token counts, error near the requested epsilon)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from kolmogorov_tokenizers import demo_model
from kolmogorov_tokenizers.checkpoint import load_tokenizer
from kolmogorov_tokenizers.config import KARLConfig
from modules.io import CheckpointError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [demo_model.DEMO_DIR / n for n in (demo_model.WEIGHTS_NAME, demo_model.CONFIG_NAME, demo_model.SUMS_NAME)]
# Mean L1 at a requested epsilon may exceed it by at most this much on demo val images. A width-256 demo model
# measured 0.0646 at epsilon 0.03 on this test's 22 images (excess 0.035): its error stops falling at about 24
# of its 32 tokens (docs/RESEARCH_LOG.md#the-shipped-demo-model). Earlier demo models: excess 0.039 with margin
# 0.045, 0.054 with margin 0.06. Never raise it to make a model pass.
L1_MARGIN = 0.04


@pytest.fixture(scope="module")
def random_demo_folder(tmp_path_factory) -> Path:
    """A demo-model folder exported from an untrained karl_demo: tests the file handling, not quality."""
    from kolmogorov_tokenizers.registry import create_model

    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        model = create_model("karl_demo", base_tokenizer="vqgan_demo")  # random base: warns
    root = tmp_path_factory.mktemp("demo_export")
    ckpt = root / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict()}, ckpt)
    demo_model.export_demo_model(ckpt, root / "demo")
    return root / "demo"


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "demo_copy"
    shutil.copytree(folder, dst)
    return dst


def test_exported_folder_verifies_and_loads(random_demo_folder):
    path = demo_model.demo_model_path(random_demo_folder)
    assert path.name == demo_model.WEIGHTS_NAME
    sums = demo_model.read_sums(random_demo_folder / demo_model.SUMS_NAME)
    assert set(sums) == {demo_model.WEIGHTS_NAME, demo_model.CONFIG_NAME}
    assert load_tokenizer(path).config.model_name == "karl_demo"


def test_corrupted_copy_is_refused(random_demo_folder, tmp_path, monkeypatch):
    folder = _copy(random_demo_folder, tmp_path)
    weights = folder / demo_model.WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep inside a tensor: safetensors would still load it
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupted or was modified: SHA-256 .* does not match"):
        demo_model.demo_model_path(folder)
    monkeypatch.setattr(demo_model, "DEMO_DIR", folder)  # load_tokenizer("demo") goes through the same check
    with pytest.raises(CheckpointError, match="karl_demo.safetensors is corrupted"):
        load_tokenizer("demo")


def test_edited_config_is_refused(random_demo_folder, tmp_path):
    folder = _copy(random_demo_folder, tmp_path)
    config = folder / demo_model.CONFIG_NAME
    config.write_text(config.read_text().replace('"halting_threshold": 0.75', '"halting_threshold": 0.5'))
    with pytest.raises(CheckpointError, match="safetensors.json is corrupted"):
        demo_model.demo_model_path(folder)


def test_missing_files_name_the_path_and_the_command(random_demo_folder, tmp_path, monkeypatch):
    folder = _copy(random_demo_folder, tmp_path)
    (folder / demo_model.WEIGHTS_NAME).unlink()
    monkeypatch.setattr(demo_model, "DEMO_DIR", folder)
    with pytest.raises(FileNotFoundError, match=r"demo model is not available: missing .*karl_demo.safetensors.*"
                                                r"QUICKSTART_PROFILE=full bash run_scripts/quickstart.sh"):
        load_tokenizer("demo")


def test_bad_sums_file_is_refused(random_demo_folder, tmp_path):
    folder = _copy(random_demo_folder, tmp_path)
    (folder / demo_model.SUMS_NAME).write_text("not a checksum line\n")
    with pytest.raises(CheckpointError, match="expected '<sha256>  <file name>'"):
        demo_model.demo_model_path(folder)


# --- the shipped model ------------------------------------------------------------------------------------------

NOT_SHIPPED = "no demo model shipped yet (kolmogorov_tokenizers/pretrained_models/demo/ lacks its weights); " \
              "see docs/CHECKPOINTS.md"
shipped = pytest.mark.skipif(not all(p.is_file() for p in SHIPPED), reason=NOT_SHIPPED)


@shipped
def test_shipped_files_are_not_git_ignored_and_small():
    for path in SHIPPED:  # check-ignore -q takes one path at a time
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO_ROOT)
        assert ignored.returncode == 1, f"{path} is git-ignored: it would not be committed"
    # EMA weights only (24 MB with the width-256 decoder): a checkpoint with optimizer state would be ~3x that
    assert sum(p.stat().st_size for p in demo_model.DEMO_DIR.iterdir() if p.is_file()) < 30e6


def test_demo_folder_is_not_git_ignored():
    probe = demo_model.DEMO_DIR / demo_model.WEIGHTS_NAME  # check-ignore works on paths that do not exist yet
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO_ROOT)
    assert ignored.returncode == 1, f"{probe} would be git-ignored"


@pytest.fixture(scope="module")
def shipped_model():
    return load_tokenizer("demo")


def _render(family: str, count: int, level: float) -> torch.Tensor:
    from engine.data.procedural import render

    images = [render(family, np.random.default_rng([7, i]), 64, level)[0] for i in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 64, 64)


@shipped
def test_shipped_model_loads_by_name(shipped_model):
    cfg = shipped_model.config
    assert (cfg.model_name, cfg.input_size, cfg.base_tokenizer) == ("karl_demo", 64, "patch_vae_demo")
    assert cfg.epsilon_bins == KARLConfig().epsilon_bins
    # trained with the project's choices, which its config records (docs/DIFFERENCES.md)
    assert (cfg.positional_resize, cfg.vae_pixel_range, cfg.vae_decode_scaled_latent) == ("bilinear", "signed", False)
    assert (cfg.halting_loss_reduction, cfg.eps0_clamp, cfg.label_smoothing) == ("mean", True, 0.1)
    assert shipped_model.base_tokenizer.pixel_range == "signed"


@shipped
def test_flat_images_get_fewer_tokens_than_noise(shipped_model):
    flat, noise = _render("flat", 4, 0.5), _render("noise", 4, 0.9)
    tokens = {name: shipped_model.encode(x, desired_reconstruction_quality=0.05).info["num_tokens"].float()
              for name, x in (("flat", flat), ("noise", noise))}
    assert tokens["flat"].mean() < tokens["noise"].mean(), tokens


@pytest.fixture(scope="module")
def demo_val_images(tmp_path_factory) -> torch.Tensor:
    """Two val images of every family, generated by the demo generator (deterministic, no system photos)."""
    from engine.data import build_dataset
    from engine.demo_data import DemoDataConfig, generate_demo_dataset

    root = tmp_path_factory.mktemp("demo_val") / "demo"
    generate_demo_dataset(root, DemoDataConfig(resolution=64, num_train=9, num_val=22, seed=0,
                                               use_system_photos=False))
    val = build_dataset(root, "val", input_size=64)
    return torch.stack([val[i][0] for i in range(len(val))])


@shipped
def test_tokens_fall_and_error_stays_near_epsilon(shipped_model, demo_val_images):
    results = {eps: shipped_model.encode(demo_val_images, desired_reconstruction_quality=eps)
               for eps in (0.03, 0.09)}
    tokens = {eps: r.info["num_tokens"].float().mean().item() for eps, r in results.items()}
    assert tokens[0.09] < tokens[0.03], tokens
    for eps, r in results.items():
        l1 = (r.reconstruction - demo_val_images).abs().mean().item()
        assert l1 <= eps + L1_MARGIN, f"mean L1 {l1:.4f} at epsilon {eps} exceeds it by more than {L1_MARGIN}"
