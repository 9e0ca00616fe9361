"""Non-finite updates and weights: the last good checkpoint stays the last good one, NaN settings and NaN
models are refused (docs/FAULTS.md, rows 1a-1f)."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.config import ConfigError, load_config
from engine.stages import get_stage
from engine.trainer import NonFiniteLossError, Trainer
from engine_standin import TINY_KARL, StandInKARL, make_dataset, tiny_argv
from modules.io import CheckpointError, atomic_save, nonfinite_tensors

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]


class _NaNGradientAt(StandInKARL):
    """Finite loss, but a NaN gradient on one weight during the `at`-th forward (what an overflow in a
    backward pass looks like: only the loss is finite)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0
        self.mix[0].weight.register_hook(lambda g: g * float("nan") if self.calls == self.at else g)

    def forward(self, images, pixel_loss_fn=None):
        self.calls += 1
        return super().forward(images, pixel_loss_fn)


def _count_nonfinite(ckpt) -> int:
    return len(nonfinite_tensors(ckpt["model"])) + len(nonfinite_tensors(ckpt["ema"]))


def test_nan_gradient_stops_before_the_update_is_saved(tmp_path):
    cfg = load_config(tiny_argv(tmp_path, "save_last_every_steps=1"), stage="latent_distillation")
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=_NaNGradientAt(3), dataset=make_dataset(n=16, size=32))
    with pytest.raises(NonFiniteLossError, match=r"gradient norm .*NaN/Inf.* at step 3 "):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert ckpt["global_step"] == 2  # the step before the NaN gradient
    assert _count_nonfinite(ckpt) == 0


def test_fp16_nan_gradient_is_skipped_by_the_loss_scaler_and_the_run_goes_on(tmp_path):
    cfg = load_config(tiny_argv(tmp_path, "--precision", "fp16", "save_last_every_steps=1"), stage="latent_distillation")
    model = _NaNGradientAt(3)
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=model, dataset=make_dataset(n=16, size=32))
    scale_before = trainer.scalers["model"].get_scale()
    assert trainer.fit() == 0
    assert trainer.scalers["model"].get_scale() < scale_before  # the skipped step lowered the scale
    assert _count_nonfinite(load_checkpoint(tmp_path / "checkpoint-last.pth")) == 0


def test_huge_blr_from_the_entry_point_never_saves_nonfinite_weights(tmp_path, demo_data_dir, capsys):
    """The reproduction of the report: --blr 1e6, checkpoint-last refreshed every step."""
    from engine.main_train import main

    code = main(["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--blr", "1e6", "--max_steps", "10",
                                                               "--batch_size", "8", "save_last_every_steps=1"),
                 "optim.lr=null"], stage="latent_distillation")
    err = capsys.readouterr().err
    assert code in (0, 3), err
    if code == 3:
        assert "Traceback" not in err and "NaN/Inf" in err
    last = tmp_path / "checkpoint-last.pth"
    if last.exists():
        assert _count_nonfinite(load_checkpoint(last)) == 0


@pytest.mark.parametrize("flag,value", [("--blr", "inf"), ("--blr", "nan"), ("--lr", "inf"), ("--lr", "nan"),
                                        ("--min_lr", "inf"), ("--grad_clip", "nan"), ("--weight_decay", "inf")])
def test_nonfinite_settings_are_refused(tmp_path, flag, value):
    with pytest.raises(ConfigError, match=flag.lstrip("-")):
        load_config(tiny_argv(tmp_path, flag, value), stage="latent_distillation")


def test_blr_inf_exits_2_from_the_entry_point(tmp_path, demo_data_dir, capsys):
    from engine.main_train import main

    argv = ["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--blr", "inf", "--max_steps", "2")]
    assert main([*argv, "optim.lr=null"], stage="latent_distillation") == 2
    err = capsys.readouterr().err
    assert "blr" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoint-last.pth").exists()


def _nan_checkpoint(tmp_path):
    cfg = load_config(tiny_argv(tmp_path / "src", "--epochs", "1"), stage="latent_distillation")
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))
    assert trainer.fit() == 0
    path = tmp_path / "src" / "checkpoint-last.pth"
    ckpt = load_checkpoint(path)
    for part in ("model", "ema"):
        ckpt[part]["mix.0.weight"] = torch.full_like(ckpt[part]["mix.0.weight"], float("nan"))
    atomic_save(ckpt, path)
    return path


@pytest.mark.parametrize("option", ["--resume", "--finetune"])
def test_checkpoint_with_nan_weights_is_refused_by_resume_and_finetune(tmp_path, option):
    path = _nan_checkpoint(tmp_path)
    stage = "latent_distillation" if option == "--resume" else "full_finetuning"
    cfg = load_config(tiny_argv(tmp_path / "dst", option, str(path)), stage=stage)
    with pytest.raises(CheckpointError, match=r"mix\.0\.weight.*NaN|NaN.*mix\.0\.weight"):
        Trainer(cfg, get_stage(stage), model=StandInKARL(), dataset=make_dataset(n=16, size=32))


# --- a NaN model is refused wherever it is loaded -------------------------------------------------------------
def _nan_karl(tmp_path):
    import warnings

    from engine.checkpoint import save_checkpoint
    from kolmogorov_tokenizers import create_model
    from kolmogorov_tokenizers.checkpoint import model_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("karl_demo", base_tokenizer="vqgan_demo", encoder_layers=1, decoder_layers=1)
    sd = model_state_dict(model)
    name = next(k for k in sd if k.startswith("encoder.") and k.endswith("weight"))
    sd[name] = torch.full_like(sd[name], float("nan"))
    path = tmp_path / "nan.pth"
    save_checkpoint(path, {"model": sd, "model_config": model.config.to_dict()})
    return path, name


def _images(folder):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


def test_load_tokenizer_refuses_nan_weights(tmp_path):
    from kolmogorov_tokenizers import load_tokenizer

    path, name = _nan_karl(tmp_path)
    with pytest.raises(CheckpointError, match=rf"NaN/Inf.*{name}"):
        load_tokenizer(path)


def test_karl_cli_refuses_a_nan_model_in_one_line(tmp_path, capsys):
    from kolmogorov_tokenizers import cli

    path, _ = _nan_karl(tmp_path)
    images = _images(tmp_path / "img")
    code = cli.main(["encode", *map(str, images), "--checkpoint", str(path), "--output_dir", str(tmp_path / "out"),
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "NaN/Inf" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_karl_decode_refuses_nan_tokens(tmp_path, capsys):
    from test_cli import make_tiny_checkpoint

    from kolmogorov_tokenizers import cli

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pth")
    images = _images(tmp_path / "img")
    assert cli.main(["encode", str(images[0]), "--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "enc"),
                     "--device", "cpu"]) == 0
    tokens = tmp_path / "enc" / "0_tokens.pt"
    record = torch.load(tokens, weights_only=True)
    record["tokens"][0] = float("nan")
    atomic_save(record, tokens)
    capsys.readouterr()
    code = cli.main(["decode", str(tokens), "--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "dec"),
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "NaN/Inf" in err and "0_tokens.pt" in err
    assert not (tmp_path / "dec" / "0_decoded.png").exists()


def test_evaluation_refuses_a_nan_model(tmp_path, capsys):
    from evaluation.main import main

    path, _ = _nan_karl(tmp_path)
    _images(tmp_path / "img")
    code = main(["--checkpoint", str(path), "--data_path", str(tmp_path / "img"), "--output_dir", str(tmp_path / "o"),
                 "--device", "cpu", "--budgets", "16", "--epsilons", "0.05", "--skip", "search", "complexity"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN/Inf" in err
    assert not (tmp_path / "o" / "metrics.json").exists()
