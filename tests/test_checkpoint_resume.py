"""Checkpoints: release layout + our keys, atomic writes, exact mid-epoch resume, SIGINT/SIGTERM and kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.stages import get_stage
from engine.trainer import Trainer
from engine_standin import TINY_KARL, StandInKARL, make_dataset, read_metrics, tiny_argv
from modules.io import CheckpointError, safe_torch_load

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]
REPO = Path(__file__).resolve().parent.parent


def _trainer(out, stage, *extra, standin=False, n=16, model=None):
    cfg = load_config(tiny_argv(out, *extra), stage=stage)
    torch.manual_seed(123)  # same initial weights for every run of a test
    model = model if model is not None else (StandInKARL() if standin else None)
    return Trainer(cfg, get_stage(stage), model=model, dataset=make_dataset(n=n, size=32))


def _same(a, b) -> bool:
    """Exact equality of state-dict values (tensors, or the extra-state dicts some modules store)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _losses(out):
    return {r["step"]: r.get("loss", r.get("d/total")) for r in read_metrics(out)}


@pytest.mark.parametrize("stage,extra,standin", [
    ("latent_distillation", TINY_KARL, False),  # the real KARL: curriculum buffers + budget generator
    ("full_finetuning", [], True),  # discriminators, their optimizer, D/AE alternation
])
def test_mid_epoch_resume_is_bit_exact(tmp_path, stage, extra, standin):
    # 2 epochs x 3 steps; the interrupted run stops after step 2 (mid-epoch 0) and a fresh Trainer resumes
    full = _trainer(tmp_path / "full", stage, *extra, standin=standin, n=12)
    assert full.fit() == 0
    part = _trainer(tmp_path / "part", stage, *extra, "--max_steps", "2", standin=standin, n=12)
    assert part.fit() == 0
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint-last.pth")
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], ckpt["epoch_done"]) == (0, 2, 2, False)
    resumed = _trainer(tmp_path / "part", stage, *extra, "--resume", "auto", standin=standin, n=12)
    assert (resumed.epoch, resumed.batches_done, resumed.global_step) == (0, 2, 2)
    assert resumed.fit() == 0

    want, got = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert sorted(got) == sorted(want) == list(range(1, 7))
    assert [got[s] for s in range(1, 7)] == [want[s] for s in range(1, 7)]  # bit-exact, not approx
    for name, value in full.raw_model.state_dict().items():
        assert _same(resumed.raw_model.state_dict()[name], value), name
    for name, value in full.ema.state_dict().items():
        assert _same(resumed.ema.state_dict()[name], value), name


def test_checkpoint_has_release_keys_and_ours_and_loads_safely(tmp_path):
    trainer = _trainer(tmp_path, "full_finetuning", "--epochs", "1", standin=True)
    assert trainer.fit() == 0
    for name in ("checkpoint-last.pth", "checkpoint-0.pth"):
        ckpt = safe_torch_load(tmp_path / name)  # weights_only: tensors, builtins and argparse.Namespace only
        for key in ("model", "ema", "optimizer", "scaler", "epoch", "args", "config", "model_config", "global_step",
                    "rng", "discriminator", "disc_optimizer", "disc_scaler"):
            assert key in ckpt, key
        assert ckpt["config"]["optim"]["batch_size"] == 4 and ckpt["model_config"] == {"width": 16, "max_tokens": 16}
        assert ckpt["args"].model == trainer.cfg.model.model and ckpt["epoch"] == 0 and ckpt["global_step"] == 4
        assert len(ckpt["rng"]) == 1 and set(ckpt["rng"][0]) >= {"torch", "numpy", "python"}
        assert set(ckpt["discriminator"]) == set(trainer.stage.disc.state_dict())


def test_crash_while_writing_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, "latent_distillation", "--epochs", "1", standin=True)
    assert trainer.fit() == 0
    last = tmp_path / "checkpoint-last.pth"
    before = last.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip")  # half a file, then the "machine" dies
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space"):
        trainer.save(epoch_done=True)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert load_checkpoint(last)["global_step"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_of_a_non_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "page.pth"
    bad.write_text("<html>404</html>")
    with pytest.raises(CheckpointError, match="page.pth"):
        _trainer(tmp_path, "latent_distillation", "--resume", str(bad), standin=True)


def _launch(out, data_dir, *extra):
    argv = [sys.executable, "-m", "engine.main_train", "--stage", "latent_distillation", "--data_path", str(data_dir),
            *tiny_argv(out, *TINY_KARL, "--epochs", "50", *extra)]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})


def _wait_for_step(proc, step):
    for line in proc.stdout:
        if f"step {step}/" in line:
            return
    raise AssertionError(f"training ended before step {step} (exit {proc.wait()})")


class _SignalAtCall(StandInKARL):
    """Sends `sig` to this process during its `at`-th forward (as `kill -TERM <pid>` would)."""

    def __init__(self, sig, at):
        super().__init__()
        self.sig, self.at, self.calls = sig, at, 0

    def forward(self, images, pixel_loss_fn=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return super().forward(images, pixel_loss_fn)


def test_sigterm_finishes_the_step_saves_checkpoint_last_and_returns_143(tmp_path):
    trainer = _trainer(tmp_path, "latent_distillation", model=_SignalAtCall(signal.SIGTERM, at=2))
    handler_before = signal.getsignal(signal.SIGTERM)
    assert trainer.fit() == 143
    assert signal.getsignal(signal.SIGTERM) == handler_before  # the trainer's handler is removed again
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], ckpt["epoch_done"]) == (0, 2, 2, False)
    resumed = _trainer(tmp_path, "latent_distillation", "--resume", "auto", standin=True)
    assert resumed.global_step == 2 and resumed.fit() == 0 and resumed.global_step == 8


def test_sigint_exits_130_after_saving_then_kill_9_then_resume(tmp_path, demo_data_dir):
    last = tmp_path / "checkpoint-last.pth"
    proc = _launch(tmp_path, demo_data_dir)
    _wait_for_step(proc, 2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest
    assert "saved" in rest and "Traceback" not in rest
    interrupted = load_checkpoint(last)["global_step"]
    assert interrupted >= 2 and load_checkpoint(last)["epoch_done"] is False

    # resume, refresh checkpoint-last every step, then die by SIGKILL (no handler runs)
    proc = _launch(tmp_path, demo_data_dir, "--resume", "auto", "save_last_every_steps=1")
    _wait_for_step(proc, 2)
    proc.kill()
    proc.wait(timeout=60)
    killed = load_checkpoint(last)["global_step"]  # the last complete write survived the kill
    assert killed > interrupted

    proc = _launch(tmp_path, demo_data_dir, "--resume", "auto", "--max_steps", str(killed + 1))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert f"step {killed}" in out.split("[resume]")[1].splitlines()[0]
    assert load_checkpoint(last)["global_step"] == killed + 1
