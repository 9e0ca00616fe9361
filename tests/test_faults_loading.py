"""--finetune / --resume are strict: a checkpoint that does not fit the model is an error naming the keys,
never a run from random weights (docs/FAULTS.md, rows 5a-5e)."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import load_config
from engine.stages import get_stage
from engine.trainer import Trainer
from engine_standin import TINY_KARL, StandInKARL, make_dataset, tiny_argv
from modules.io import CheckpointError

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A finished one-epoch stage-1 run of the stand-in: (checkpoint path, its model state dict)."""
    out = tmp_path_factory.mktemp("stage1")
    cfg = load_config(tiny_argv(out, "--epochs", "1"), stage="latent_distillation")
    torch.manual_seed(5)
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))
    assert trainer.fit() == 0
    return out / "checkpoint-last.pth", {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}


def _variant(stage1, tmp_path, edit):
    ckpt = load_checkpoint(stage1[0])
    for part in ("model", "ema"):
        ckpt[part] = edit(dict(ckpt[part]))
    path = tmp_path / "variant.pth"
    save_checkpoint(path, ckpt)
    return path


def _stage2(tmp_path, *extra, model=None):
    # the live weights into the model (the release's default starts from the EMA), so they can be compared
    cfg = load_config(tiny_argv(tmp_path / "s2", "--epochs", "1", "finetune_weights=model", *extra),
                      stage="full_finetuning")
    torch.manual_seed(99)  # other initial weights than stage 1
    return Trainer(cfg, get_stage("full_finetuning"), model=model or StandInKARL(), dataset=make_dataset(n=16, size=32))


def _renamed(sd):
    sd["halt.weight_renamed"] = sd.pop("halt.weight")
    return sd


def test_finetune_with_unmatched_keys_is_an_error_naming_them(stage1, tmp_path):
    path = _variant(stage1, tmp_path, _renamed)
    with pytest.raises(CheckpointError) as info:
        _stage2(tmp_path, "--finetune", str(path))
    message = str(info.value)
    assert "halt.weight" in message and "halt.weight_renamed" in message and "--finetune_non_strict" in message
    assert "\n" not in message


def test_finetune_non_strict_allows_a_deliberate_partial_load(stage1, tmp_path, capsys):
    path = _variant(stage1, tmp_path, _renamed)
    trainer = _stage2(tmp_path, "--finetune", str(path), "--finetune_non_strict")
    assert torch.equal(trainer.raw_model.state_dict()["mix.0.weight"], stage1[1]["mix.0.weight"])
    assert "missing: halt.weight" in capsys.readouterr().out


def test_finetune_from_a_ddp_saved_checkpoint_loads_every_weight(stage1, tmp_path):
    path = _variant(stage1, tmp_path, lambda sd: {f"module.{k}": v for k, v in sd.items()})
    trainer = _stage2(tmp_path, "--finetune", str(path))
    ema = load_checkpoint(stage1[0])["ema"]
    for name, value in stage1[1].items():
        assert torch.equal(trainer.raw_model.state_dict()[name], value), name
        assert torch.equal(trainer.ema.state_dict()[name], ema[name]), name


def test_resume_with_unmatched_keys_is_an_error(stage1, tmp_path):
    path = _variant(stage1, tmp_path, _renamed)
    cfg = load_config(tiny_argv(tmp_path / "r", "--resume", str(path)), stage="latent_distillation")
    with pytest.raises(CheckpointError, match=r"halt\.weight"):
        Trainer(cfg, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))


def test_load_tokenizer_and_finetune_share_the_prefix_rule(tmp_path):
    """The same DDP-saved file loads both ways (load_tokenizer accepted it before; --finetune loaded nothing)."""
    import warnings

    from kolmogorov_tokenizers import create_model, load_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("karl_demo", base_tokenizer="vqgan_demo", encoder_layers=1, decoder_layers=1)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "ddp.pth"
    save_checkpoint(path, {"model": sd, "model_config": model.config.to_dict()})
    loaded = load_tokenizer(path)
    name = "latent_tokens"
    assert torch.equal(loaded.state_dict()[name], model.state_dict()[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = create_model("karl_demo", base_tokenizer="vqgan_demo", encoder_layers=1, decoder_layers=1)
    cfg = load_config(tiny_argv(tmp_path / "s2", "--epochs", "1", "--finetune", str(path), "gan.perceptual=none"),
                      stage="full_finetuning")
    trainer = Trainer(cfg, get_stage("full_finetuning"), model=target, dataset=make_dataset(n=8, size=64))
    assert torch.equal(trainer.raw_model.state_dict()[name], model.state_dict()[name])


def test_resume_into_a_model_of_another_shape_is_one_line(tmp_path, demo_data_dir, capsys):
    from engine.main_train import main

    base = ["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL)]
    assert main([*base, "--max_steps", "1"], stage="latent_distillation") == 0
    capsys.readouterr()
    code = main([*base, "--resume", "auto", "--max_steps", "2", "model.overrides.encoder_width=64"],
                stage="latent_distillation")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "shape" in err and "encoder" in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_config_that_would_change_the_models_behaviour(tmp_path, capsys):
    """A checkpoint records how its model computes (positional resize, losses...); a resume whose config says
    otherwise would silently train on with other behaviour. --finetune only warns (a new stage may differ)."""
    def trainer(out, *extra):
        cfg = load_config(tiny_argv(out, *TINY_KARL, "--epochs", "1", *extra), stage="latent_distillation")
        return Trainer(cfg, get_stage("latent_distillation"), dataset=make_dataset(n=8, size=32))

    first = trainer(tmp_path / "a", "model.overrides.positional_resize=bilinear")
    assert first.fit() == 0
    ckpt = str(tmp_path / "a" / "checkpoint-last.pth")
    with pytest.raises(CheckpointError) as info:
        trainer(tmp_path / "b", "--resume", ckpt)  # the preset's default is the release's "nearest"
    message = str(info.value)
    assert "positional_resize='bilinear'" in message and "model.overrides.positional_resize=bilinear" in message
    resumed = trainer(tmp_path / "c", "--resume", ckpt, "model.overrides.positional_resize=bilinear")
    assert resumed.global_step == first.global_step
    cfg = load_config(tiny_argv(tmp_path / "d", *TINY_KARL, "--epochs", "1", "--finetune", ckpt),
                      stage="full_finetuning")
    capsys.readouterr()
    Trainer(cfg, get_stage("full_finetuning"), dataset=make_dataset(n=8, size=32))
    printed = capsys.readouterr().out
    assert "[finetune] warning" in printed and "positional_resize='bilinear'" in printed
