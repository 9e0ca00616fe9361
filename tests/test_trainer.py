"""The generic training loop on tiny CPU runs: both stages learn, schedules, GAN stepping, faults."""
from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.config import load_config
from engine.optim import lr_at, param_groups
from engine.stages import get_stage
from engine.stages.full_finetuning import gan_weight_at
from engine.trainer import NonFiniteLossError, Trainer
from engine_standin import TINY_KARL, StandInKARL, make_dataset, read_metrics, tiny_argv

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]


def _run(tmp_path, stage, *extra, model=None, size=32, n=16):
    cfg = load_config(tiny_argv(tmp_path, *extra), stage=stage)
    trainer = Trainer(cfg, get_stage(stage), model=model, dataset=make_dataset(n=n, size=size))
    return trainer, trainer.fit()


def _mean(xs):
    return sum(xs) / len(xs)


# --- optimisation pieces ---------------------------------------------------------------------------------
def test_no_weight_decay_on_biases_and_1d_params_and_frozen_params_left_out():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    decay_off, decay_on = param_groups(model, weight_decay=0.05)
    assert decay_on["weight_decay"] == 0.05 and decay_off["weight_decay"] == 0.0
    assert {id(p) for p in decay_on["params"]} == {id(model[0].weight)}
    assert {id(p) for p in decay_off["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}


def test_lr_schedule_linear_warmup_then_half_cycle_cosine_to_min_lr():
    kw = dict(base_lr=1.0, min_lr=0.1, warmup_epochs=2, epochs=10)
    assert lr_at(0.0, **kw) == 0.0
    assert lr_at(1.0, **kw) == pytest.approx(0.5)
    assert lr_at(2.0, **kw) == pytest.approx(1.0)
    assert lr_at(6.0, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_at(10.0, **kw) == pytest.approx(0.1)


def test_gan_weight_schedule_follows_the_release():
    assert [gan_weight_at(e, [20, 100], [0.0, 0.2, 0.8]) for e in (0, 20, 21, 100, 101, 399)] == [0, 0, 0.2, 0.2, 0.8, 0.8]


# --- both stages learn ---------------------------------------------------------------------------------------
def test_stage1_real_karl_learns_with_frozen_base(tmp_path):
    trainer, code = _run(tmp_path, "latent_distillation", *TINY_KARL, "--epochs", "3")
    assert code == 0
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert len(losses) == 12
    assert _mean(losses[-3:]) < _mean(losses[:3]) - 0.05
    base = trainer.raw_model.base_tokenizer
    assert not any(p.requires_grad for p in base.parameters()) and not base.training
    assert all(n in trainer.ema.state_dict() for n in trainer.raw_model.state_dict())
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoint-last.pth").is_file()
    assert (tmp_path / "checkpoint-0.pth").is_file() and (tmp_path / "checkpoint-2.pth").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard log written"


def test_stage2_real_karl_learns_pixels_trains_base_and_steps_discriminators(tmp_path):
    trainer, code = _run(tmp_path, "full_finetuning", *TINY_KARL, "--epochs", "3", "--lr", "2e-3")
    assert code == 0
    records = read_metrics(tmp_path)
    ae = [r for r in records if "grad_norm/model" in r]
    disc = [r for r in records if "grad_norm/disc" in r]
    # epoch 0 has no GAN (weight 0): 4 autoencoder steps; then 1 D step per autoencoder step
    assert len(ae) == 4 + 4 and len(disc) == 4
    l1 = [r["ltc/pix_l1"] for r in ae]
    assert _mean(l1[-2:]) < _mean(l1[:2])
    assert all(math.isfinite(r["d/loss"]) for r in disc)
    assert all("ltc/g_loss" in r and r["ltc/d_weight"] >= 0 for r in ae[4:])
    # logged: achieved vs requested error of each phase, reconstruction loss per EIC budget
    assert all(0 <= r["ltc/achieved_l1"] <= 1 and "ltc/requested_epsilon" in r for r in ae)
    assert all(any(k.startswith("eic/rec_by_budget/T") for k in r) for r in ae)
    assert trainer.raw_model.base_tokenizer.training and all(p.requires_grad for p in trainer.raw_model.base_tokenizer.parameters())
    assert len(trainer.stage.disc.discriminators) == 2 and trainer.stage.bucket_size == 8  # 16 tokens / 2 buckets


def test_discriminator_to_autoencoder_step_ratio_is_a_setting(tmp_path):
    # the continuous cycle (autoencoder first); the release's per-epoch cycle: test_release_training_parity.py
    _, code = _run(tmp_path, "full_finetuning", "gan.disc_steps_per_ae_step=2", "gan.weight_boundaries=[-1]", "--epochs", "1",
                   "gan.cycle_within_epoch=false", model=StandInKARL(), n=24)
    assert code == 0
    kinds = ["disc" if "grad_norm/disc" in r else "model" for r in read_metrics(tmp_path)]
    assert kinds == ["model", "disc", "disc", "model", "disc", "disc"]


def test_finetune_loads_stage1_weights_and_ema(tmp_path):
    stage1, code = _run(tmp_path / "s1", "latent_distillation", "--epochs", "1", model=StandInKARL())
    assert code == 0
    # finetune_weights=model: the live weights into the model (the release's EMA start is tested in
    # test_release_training_parity.py)
    cfg = load_config(tiny_argv(tmp_path / "s2", "--epochs", "1", "--finetune", str(tmp_path / "s1" / "checkpoint-last.pth"),
                                "finetune_weights=model"),
                      stage="full_finetuning")
    stage2 = Trainer(cfg, get_stage("full_finetuning"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))
    for name, value in stage1.raw_model.state_dict().items():
        assert torch.equal(stage2.raw_model.state_dict()[name], value), name
        assert torch.equal(stage2.ema.state_dict()[name], stage1.ema.state_dict()[name]), name
    assert stage2.global_step == 0 and stage2.epoch == 0


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    torch.manual_seed(0)
    a, _ = _run(tmp_path / "a", "latent_distillation", "--epochs", "1", "--batch_size", "8", "--grad_clip", "0",
                model=StandInKARL())
    torch.manual_seed(0)
    b, _ = _run(tmp_path / "b", "latent_distillation", "--epochs", "1", "--batch_size", "4", "--accum_iter", "2",
                "--grad_clip", "0", model=StandInKARL())
    assert a.global_step == b.global_step == 2
    for (name, pa), pb in zip(a.raw_model.named_parameters(), b.raw_model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    trainer, code = _run(tmp_path, "latent_distillation", "--epochs", "1", "--precision", precision, model=StandInKARL())
    assert code == 0 and trainer.precision == precision
    assert trainer.scalers["model"].is_enabled() == (precision == "fp16")
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path))


def test_attention_backend_setting_reaches_every_block(tmp_path):
    from modules.transformer import get_attention_backend, set_attention_backend
    try:
        trainer, code = _run(tmp_path, "latent_distillation", "--epochs", "1", "attention_backend=math",
                             model=StandInKARL())
        assert code == 0 and get_attention_backend() == "math"
    finally:
        set_attention_backend("sdpa")


# --- faults -----------------------------------------------------------------------------------------------------
def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    cfg = load_config(tiny_argv(tmp_path, "debug.nan_loss_step=5", "debug.nan_loss_term=ltc/rec"), stage="latent_distillation")
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*ltc/rec"):
        trainer.fit()
    last = tmp_path / "checkpoint-last.pth"
    from engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(last)  # written after epoch 0 (4 steps), not overwritten by the NaN step
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nan_loss_exits_non_zero_from_the_entry_point(tmp_path, demo_data_dir, capsys):
    from engine.main_train import main

    code = main(["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "debug.nan_loss_step=1")],
                stage="latent_distillation")
    assert code == 3
    err = capsys.readouterr().err
    assert "step 1" in err and "NaN/Inf" in err and "Traceback" not in err


def test_entry_point_rejects_bad_input_without_traceback(tmp_path, capsys):
    from engine.main_train import main

    assert main(["--data_path", str(tmp_path / "nowhere"), *tiny_argv(tmp_path, *TINY_KARL)], stage="latent_distillation") == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["optim.batch_size=lots"], stage="latent_distillation") == 2
    assert "lots" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "missing.pth"), *tiny_argv(tmp_path, *TINY_KARL)], stage="latent_distillation") == 2
    assert "missing.pth" in capsys.readouterr().err


# --- the official launch scripts --------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent


def _script_env(**extra):
    return {**os.environ, "KARL_SKIP_INSTALL": "1", "NPROC_PER_NODE": "1", "MASTER_PORT": "0", **extra}


def test_run_script_launches_torchrun_and_passes_extra_arguments_last(tmp_path):
    # the extra argument reaches the entry point after the recipe's --batch_size 64 (a bad value proves it was parsed)
    proc = subprocess.run(["bash", str(REPO / "run_scripts" / "latent_distillation_pretrain.sh"), "--batch_size", "not-a-number"],
                          cwd=tmp_path, env=_script_env(TRAIN_DATA_DIR=str(tmp_path)), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "argument --batch_size: invalid int value: 'not-a-number'" in proc.stderr


@pytest.mark.parametrize("script", ["latent_distillation_pretrain.sh", "full_finetuning.sh"])
def test_run_scripts_require_train_data_dir(script, tmp_path):
    env = _script_env()
    env.pop("TRAIN_DATA_DIR", None)
    proc = subprocess.run(["bash", str(REPO / "run_scripts" / script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "TRAIN_DATA_DIR" in proc.stderr


def test_the_generic_trainer_names_no_stage():
    """Stage details reach engine/trainer.py through the Stage hooks (ddp_modules, log_scalars, log_images,
    StepOutput.loss_name), never by name."""
    source = (REPO / "engine" / "trainer.py").read_text()
    for name in ("disc_ddp", "d/total", "phases", "num_tokens", "epsilon", "full_finetuning", "latent_distillation"):
        assert name not in source, name
