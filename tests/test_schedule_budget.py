"""Schedules sized by wall time (engine/schedule_budget.py): the same seconds on every machine, more steps on a
faster one, and a stage-0 run that picks its step count from its first seconds and keeps it on resume."""
from __future__ import annotations

import json
import math

import pytest

from engine import schedule_budget as sb
from tests.engine_standin import StandInKARL, make_dataset, tiny_argv
from tests.script_loader import run_pretrain


def test_epochs_fit_the_budget_and_grow_with_speed():
    assert sb.epochs_for_budget(600, 2.3, 250, min_epochs=2, max_epochs=30) == 5  # 1380 steps -> 5 whole epochs
    assert sb.epochs_for_budget(600, 9.0, 250, min_epochs=2, max_epochs=30) == 21  # a faster CPU trains longer
    assert sb.epochs_for_budget(600, 50.0, 250, min_epochs=2, max_epochs=30) == 30  # capped
    assert sb.epochs_for_budget(600, 0.1, 250, min_epochs=2, max_epochs=30) == 2  # floor: still a schedule


def test_step_budget_decides_once_from_the_measured_speed(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(sb.time, "perf_counter", lambda: clock[0])
    budget = sb.StepBudget(budget_s=60, min_steps=5, max_steps=1000, measure_s=10, skip_steps=2)
    decided = []
    for step in range(1, 200):
        clock[0] += 3.0 if step <= 2 else 0.5  # slow warm-up steps, then 2 steps/s
        out = budget.update(step)
        if out is not None:
            decided.append((step, out))
    assert len(decided) == 1
    step, total = decided[0]
    assert budget.steps_per_s == pytest.approx(2.0)
    elapsed = 6.0 + (step - 2) * 0.5
    assert total == step + int((60 - elapsed) * 2.0)  # the rest of the 60 s at the measured speed


def test_calibration_run_sizes_epochs_from_its_speed(tmp_path):
    r = sb.calibrate(tiny_argv(tmp_path / "ignored"), budget_s=2, probe_steps=8, skip_steps=2, min_epochs=1,
                     max_epochs=50, model=StandInKARL(), dataset=make_dataset(n=16, size=32))
    assert r["steps_per_epoch"] == 4 and r["steps_per_s"] > 0  # 16 images / batch 4
    assert r["epochs"] == min(max(math.floor(2 * r["steps_per_s"] / 4), 1), 50)
    assert r["expected_s"] <= 2 or r["epochs"] == 1  # whole epochs within the budget
    assert not (tmp_path / "ignored").exists()  # the probe trains in a scratch folder


def test_calibration_cli_needs_the_training_command():
    assert sb.main(["--budget_s", "10", "--write", "x.env"]) == 2


def test_stage0_time_budget_chooses_steps_and_keeps_them_on_resume(demo_data_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    args = ["--model", "patch_vae_demo", "--data_path", str(demo_data_dir), "--input_size", "32", "--set",
            "width=32", "--batch_size", "4", "--steps", "6", "--time_budget_s", "0.01", "--budget_measure_s", "0",
            "--min_steps", "4", "--disc_start", "100", "--log_every", "100", "--save_every", "100",
            "--image_log_every", "0", "--eval_batches", "0", "--output_dir", str(out), "--precision", "fp32"]
    assert run_pretrain(*args) == 0
    printed = capsys.readouterr().out
    chosen = json.loads((out / "step_budget.json").read_text())["steps"]
    assert chosen == 4  # the budget is spent at once: the floor --min_steps
    assert json.loads((out / "result.json").read_text())["steps"] == 4
    assert "[stage0] step 1/6" in printed and "ETA" in printed  # progress from the first step
    assert f"{chosen} steps fit the 0 s budget" in printed
    assert run_pretrain(*args, "--resume", "auto") == 0
    assert "keeping the 4 steps chosen" in capsys.readouterr().out


def test_stage0_default_gan_start_is_half_of_the_steps_the_budget_chose(demo_data_dir, tmp_path, capsys, one_thread):
    """Without --disc_start the GAN starts at half the run: half of the steps the budget decides, not half of
    the --steps cap (a cap of 100 and 4 chosen steps would otherwise never start it)."""
    out = tmp_path / "run"
    args = ["--model", "patch_vae_demo", "--data_path", str(demo_data_dir), "--input_size", "32", "--set",
            "width=32", "--batch_size", "4", "--steps", "100", "--time_budget_s", "0.01", "--budget_measure_s", "0",
            "--min_steps", "4", "--log_every", "100", "--save_every", "100", "--image_log_every", "0",
            "--eval_batches", "0", "--output_dir", str(out), "--precision", "fp32"]
    assert run_pretrain(*args) == 0
    chosen = json.loads((out / "step_budget.json").read_text())
    assert chosen["steps"] == 4 and chosen["disc_start"] == 2


def test_calibration_file_gives_the_shell_the_epochs_and_the_precision_it_measured(tmp_path, monkeypatch):
    """quickstart.sh sources the file: stage 1 then trains at the precision the calibration was sized with."""
    import subprocess

    fake = {"stage": "latent_distillation", "steps_per_s": 2.0, "images_per_s": 8.0, "budget_s": 10.0,
            "steps_per_epoch": 4, "epochs": 5, "steps": 20, "expected_s": 10.0, "precision": "fp32"}
    monkeypatch.setattr(sb, "calibrate", lambda *a, **k: fake)
    env = tmp_path / "schedule.env"
    assert sb.main(["--budget_s", "10", "--write", str(env), "--", "--stage", "latent_distillation"]) == 0
    shown = subprocess.run(["bash", "-c", f'source "{env}"; echo "$EPOCHS $PRECISION"'], capture_output=True,
                           text=True, check=True).stdout.split()
    assert shown == ["5", "fp32"]
