"""Configuration: precedence (defaults < YAML < flags < overrides), the official flags, clear errors."""
from __future__ import annotations


import pytest
import yaml

from engine.config import ConfigError, TrainConfig, config_from_dict, config_to_dict, load_config, resolved_lr, save_resolved_config

OFFICIAL_STAGE1 = ("--batch_size 64 --num_workers 10 --model karl_small --base_tokenizer vqgan --quantize_latent "
                   "--factorize_latent --epochs 200 --warmup_epochs 20 --blr 1.e-4 --weight_decay 0.05 "
                   "--output_dir ./out --data_path /data/imagenet").split()
OFFICIAL_STAGE2 = ("--batch_size 18 --model karl_small --epochs 400 --warmup_epochs 20 --blr 1.e-4 --weight_decay 0.05 "
                   "--base_tokenizer vqgan --quantize_latent --factorize_latent --output_dir ./out2 "
                   "--finetune ./out/checkpoint-last.pth --data_path /data/imagenet").split()


def test_stage_presets_hold_the_official_recipes():
    s1 = load_config([], stage="latent_distillation")
    assert (s1.optim.batch_size, s1.optim.epochs, s1.optim.warmup_epochs, s1.optim.blr) == (64, 200, 20, 1e-4)
    assert (s1.optim.weight_decay, s1.optim.grad_clip, list(s1.optim.betas)) == (0.05, 3.0, [0.9, 0.95])
    assert s1.ema_decay == 0.9999 and s1.save_every == 20 and s1.ema_reset_every_epoch  # the release resets every epoch
    s2 = load_config([], stage="full_finetuning")
    assert (s2.optim.batch_size, s2.optim.epochs) == (18, 400)
    assert s2.gan.num_discriminators == 8 and s2.gan.disc_steps_per_ae_step == 8
    assert list(s2.gan.weight_boundaries) == [20, 100] and list(s2.gan.weight_values) == [0.0, 0.2, 0.8]


@pytest.mark.parametrize("argv,stage", [(OFFICIAL_STAGE1, "latent_distillation"), (OFFICIAL_STAGE2, "full_finetuning")])
def test_official_flags_are_accepted(argv, stage):
    cfg = load_config(argv + ["--resume", "auto", "--seed", "3", "--accum_iter", "2", "--min_lr", "1e-6",
                              "--grad_clip", "1.5", "--lr", "2e-4", "--input_size", "128", "--device", "cpu"], stage=stage)
    assert cfg.model.model == "karl_small" and cfg.model.quantize_latent and cfg.model.factorize_latent
    assert cfg.data.data_path == "/data/imagenet" and cfg.data.input_size == 128
    assert cfg.resume == "auto" and cfg.seed == 3 and cfg.optim.accum_iter == 2
    assert cfg.optim.min_lr == 1e-6 and cfg.optim.grad_clip == 1.5 and cfg.optim.lr == 2e-4 and cfg.device == "cpu"


def test_precedence_defaults_yaml_flags_overrides(tmp_path):
    user_yaml = tmp_path / "mine.yaml"
    user_yaml.write_text("optim:\n  batch_size: 7\n  epochs: 3\nseed: 11\n")
    cfg = load_config(["--config", str(user_yaml)], stage="latent_distillation")
    assert (cfg.optim.batch_size, cfg.optim.epochs, cfg.seed) == (7, 3, 11)  # YAML beats the preset
    cfg = load_config(["--config", str(user_yaml), "--batch_size", "5"], stage="latent_distillation")
    assert (cfg.optim.batch_size, cfg.optim.epochs) == (5, 3)  # flag beats YAML
    cfg = load_config(["optim.batch_size=9", "--config", str(user_yaml), "--batch_size", "5"], stage="latent_distillation")
    assert cfg.optim.batch_size == 9  # override beats flag, wherever it stands
    cfg = load_config(["--batch_size", "5", "--batch_size", "6", "optim.epochs=4", "optim.epochs=8"], stage="latent_distillation")
    assert (cfg.optim.batch_size, cfg.optim.epochs) == (6, 8)  # later occurrences win


def test_presets_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["--config", "demo_cpu"], stage="full_finetuning")
    assert cfg.model.model == "karl_demo" and cfg.data.input_size == 64
    assert cfg.stage == "full_finetuning" and cfg.optim.batch_size == 16  # demo preset layered on the stage preset


def test_boolean_flags_can_be_switched_off_and_nested_overrides_work():
    cfg = load_config(["--no-quantize_latent", "model.overrides.encoder_layers=2", "optim.betas=[0.8,0.9]"],
                      stage="latent_distillation")
    assert not cfg.model.quantize_latent and cfg.model.factorize_latent
    assert cfg.model.overrides == {"encoder_layers": 2} and list(cfg.optim.betas) == [0.8, 0.9]


@pytest.mark.parametrize("argv,needle", [
    (["optim.nope=1"], "nope"),
    (["optim.batch_size=abc"], "abc"),
    (["precision=fp8"], "precision must be one of"),
    (["attention_backend=flash"], "attention_backend must be one of"),
    (["stage=stage3"], "stage must be one of"),
    (["--config", "does_not_exist"], "does_not_exist"),
    (["optim.batch_size"], "key=value"),
    (["--warmup_epochs", "-1"], "warmup_epochs"),
    (["--batch_size", "0"], "batch_size"),
    (["gan.perceptual=vgg"], "gan.perceptual must be one of"),
    (["gan.weight_values=[0.0]"], "weight_values"),
    (["--device", "tpu"], "device must be"),
])
def test_bad_values_give_a_clear_error(argv, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(argv, stage="latent_distillation")


def test_bad_flag_value_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        load_config(["--batch_size", "many"], stage="latent_distillation")
    assert exc.value.code == 2
    assert "--batch_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_config(["--precision", "fp8"], stage="latent_distillation")


def test_yaml_with_unknown_key_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(["--config", str(bad)], stage="latent_distillation")


def test_lr_scales_with_global_batch_unless_given():
    cfg = load_config(["--batch_size", "64", "--blr", "1e-4"], stage="latent_distillation")
    assert resolved_lr(cfg, world_size=8) == pytest.approx(1e-4 * 512 / 256)
    cfg = load_config(["--batch_size", "64", "--accum_iter", "2"], stage="latent_distillation")
    assert resolved_lr(cfg, world_size=1) == pytest.approx(1e-4 * 128 / 256)
    cfg = load_config(["--lr", "3e-4"], stage="latent_distillation")
    assert resolved_lr(cfg, world_size=8) == 3e-4


def test_resolved_config_is_written_and_round_trips(tmp_path):
    cfg = load_config(["--batch_size", "5", "model.overrides.width=3"], stage="full_finetuning")
    path = save_resolved_config(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["optim"]["batch_size"] == 5 and data["stage"] == "full_finetuning"
    again = load_config(["--config", str(path)], stage="full_finetuning")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert isinstance(config_from_dict(config_to_dict(cfg)), TrainConfig)
