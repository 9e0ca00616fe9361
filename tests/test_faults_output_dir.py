"""An output folder belongs to one run: a second run is refused while the first lives, a lock left by a
dead run is taken over, temp files of a killed save are removed (docs/FAULTS.md, rows 3a-3c, 6e)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.stages import get_stage
from engine.trainer import Trainer
from engine_standin import TINY_KARL, StandInKARL, make_dataset, tiny_argv

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300


def _trainer(out, *extra):
    cfg = load_config(tiny_argv(out, "--epochs", "1", *extra), stage="latent_distillation")
    return Trainer(cfg, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32))


def test_second_run_in_a_used_output_dir_is_refused_while_the_first_runs(tmp_path, demo_data_dir, capsys):
    argv = [sys.executable, "-m", "engine.main_train", "--stage", "latent_distillation", "--data_path",
            str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--epochs", "50")]
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    try:
        for line in first.stdout:  # the first run is training
            if "step 1/" in line:
                break
        else:
            raise AssertionError(f"first run ended early (exit {first.wait()})")
        lock = json.loads((tmp_path / "train.lock").read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()

        from engine.main_train import main

        code = main(["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--max_steps", "1")],
                    stage="latent_distillation")
        err = capsys.readouterr().err
        assert code == 2
        assert f"PID {first.pid}" in err and "in use" in err and len(err.strip().splitlines()) == 1
        assert first.poll() is None  # the first run is untouched and goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=TIMEOUT)
    assert first.returncode == 143
    assert not (tmp_path / "train.lock").exists()  # released on exit


def test_lock_of_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                     "since": "2026-01-01 00:00:00"}))
    trainer = _trainer(tmp_path)
    assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    assert trainer.fit() == 0
    assert not (tmp_path / "train.lock").exists()


def test_lock_of_a_run_killed_by_sigkill_is_taken_over(tmp_path, demo_data_dir):
    argv = [sys.executable, "-m", "engine.main_train", "--stage", "latent_distillation", "--data_path",
            str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--epochs", "50", "save_last_every_steps=1")]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if "step 1/" in line:
            break
    proc.kill()
    proc.wait(timeout=TIMEOUT)
    assert (tmp_path / "train.lock").exists()  # left behind: nothing ran on SIGKILL
    trainer = _trainer(tmp_path)  # takes the lock over (the kernel dropped the dead run's flock)
    assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    trainer.release_output_dir()


def test_trainer_that_failed_to_build_releases_the_folder(tmp_path):
    with pytest.raises(ValueError) as failed:
        _trainer(tmp_path, "--batch_size", "64")  # too few images: fails after the lock was taken
    # `failed` keeps the traceback, and with it the half-built Trainer, alive: the folder must be free because
    # the failure released it, not because garbage collection dropped the lock object
    assert failed.traceback
    _trainer(tmp_path).fit()


def test_temp_files_of_a_killed_save_are_removed_on_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    debris = tmp_path / ".checkpoint-last.pth.k3j2_x.tmp"
    debris.write_bytes(b"\0" * 100)
    keep = tmp_path / "notes.tmp"  # not hidden: not ours
    keep.write_text("mine")
    trainer = _trainer(tmp_path)
    assert not debris.exists() and keep.exists()
    trainer.release_output_dir()
