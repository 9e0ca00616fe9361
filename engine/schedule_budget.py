"""Training schedules sized by wall time: every machine trains for the same seconds, a faster one for more steps.

Two users:
- stage 0 (engine/stages/base_tokenizer.py, run by run_scripts/base_tokenizer_pretrain.py) uses `StepBudget`:
  after a few seconds of steps it fixes the run's total (the trainer's max_steps) from the measured speed
  (stage 0's lr is constant, so the total can be decided while running);
- the engine's stages, whose lr schedule (warmup + cosine over `epochs`) must be known from the first step, are
  sized before they start by a short calibration run of the same command:

    python -m engine.schedule_budget --budget_s 600 --write schedule.env -- --stage latent_distillation \
        --config engine/configs/quickstart_short.yaml --data_path datasets/demo --base_tokenizer_ckpt base.ckpt

  It trains `--probe_steps` steps into a scratch folder, measures steps/s after the first `--skip_steps`
  (start-up, allocator and kernel warm-up), and writes EPOCHS=<n> (the most whole epochs that fit the budget,
  within [--min_epochs, --max_epochs]) and PRECISION=<what "auto" resolved to in the calibration> to the
  --write file for the caller to pass as --epochs and --precision.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from modules.io import atomic_write_text


def steps_for_budget(budget_s: float, steps_per_s: float, min_steps: int, max_steps: Optional[int] = None) -> int:
    """The most steps that fit `budget_s` at `steps_per_s`, clamped to [min_steps, max_steps]."""
    if budget_s <= 0 or steps_per_s <= 0:
        raise ValueError(f"budget and speed must be positive, got {budget_s} s and {steps_per_s} steps/s")
    steps = max(int(budget_s * steps_per_s), min_steps)
    return min(steps, max_steps) if max_steps else steps


def epochs_for_budget(budget_s: float, steps_per_s: float, steps_per_epoch: int, min_epochs: int,
                      max_epochs: Optional[int] = None) -> int:
    """Whole epochs (the cosine schedule's unit) that fit `budget_s`; rounded down so the budget holds."""
    epochs = max(math.floor(budget_s * steps_per_s / steps_per_epoch), min_epochs)
    return min(epochs, max_epochs) if max_epochs else epochs


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class StepBudget:
    """Decides a loop's total step count from its own speed.

    Call `update(step)` after every step; it returns None while measuring and the decided total once, after
    `measure_s` seconds counted from the end of step `skip_steps` (the first steps pay for warm-up). The
    total covers the whole budget, measured from the loop's start, not only what is left."""

    def __init__(self, budget_s: float, min_steps: int, max_steps: Optional[int] = None, measure_s: float = 10.0,
                 skip_steps: int = 2, first_step: int = 0) -> None:
        self.budget_s, self.min_steps, self.max_steps = budget_s, min_steps, max_steps
        self.measure_s, self.skip_steps, self.first_step = measure_s, skip_steps, first_step
        self.start = time.perf_counter()
        self._t0: Optional[float] = None
        self._s0 = 0
        self.decided: Optional[int] = None
        self.steps_per_s: Optional[float] = None

    def update(self, step: int) -> Optional[int]:
        if self.decided is not None:
            return None
        now = time.perf_counter()
        if step - self.first_step == self.skip_steps:
            self._t0, self._s0 = now, step
            return None
        if self._t0 is None or now - self._t0 < self.measure_s:
            return None
        self.steps_per_s = (step - self._s0) / (now - self._t0)
        left_s = max(self.budget_s - (now - self.start), 0.0)
        self.decided = steps_for_budget(max(left_s, 1e-9), self.steps_per_s, 0) + step
        self.decided = max(self.decided, self.first_step + self.min_steps, step)
        if self.max_steps:
            self.decided = min(self.decided, max(self.max_steps, step))
        return self.decided


def _read_speed(metrics_jsonl: Path, skip_steps: int) -> float:
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r and "time" in r and r["step"] >= skip_steps]
    if len(rows) < 2 or rows[-1]["time"] <= rows[0]["time"]:
        raise RuntimeError(f"the calibration run logged too few steps in {metrics_jsonl} to measure its speed")
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time"] - rows[0]["time"])


def calibrate(train_argv: Sequence[str], budget_s: float, probe_steps: int, skip_steps: int, min_epochs: int,
              max_epochs: Optional[int], **trainer_kwargs) -> dict:
    """Run `probe_steps` steps of the training command in a scratch folder; size its epochs for `budget_s`.
    `trainer_kwargs` (model=, dataset=) reach the Trainer: tests use stand-ins."""
    from engine.config import load_config
    from engine.stages import get_stage
    from engine.trainer import Trainer

    scratch = Path(tempfile.mkdtemp(prefix="karl_schedule_budget_"))
    try:
        log_every = max(1, (probe_steps - skip_steps) // 4)
        cfg = load_config(list(train_argv) + ["--output_dir", str(scratch), "--max_steps", str(probe_steps),
                                              "--log_every", str(log_every), "image_log_every=0"])
        trainer = Trainer(cfg, get_stage(cfg.stage), **trainer_kwargs)
        code = trainer.fit()
        if code != 0:
            raise RuntimeError(f"the calibration run stopped with exit code {code}")
        steps_per_s = _read_speed(scratch / "metrics.jsonl", skip_steps)
        steps_per_epoch = trainer.steps_per_epoch
        images_per_step = cfg.optim.batch_size * cfg.optim.accum_iter * trainer.dist.world_size
        precision = trainer.precision
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    epochs = epochs_for_budget(budget_s, steps_per_s, steps_per_epoch, min_epochs, max_epochs)
    return {"stage": cfg.stage, "budget_s": budget_s, "steps_per_s": steps_per_s,
            "images_per_s": steps_per_s * images_per_step, "steps_per_epoch": steps_per_epoch, "epochs": epochs,
            "steps": epochs * steps_per_epoch, "expected_s": epochs * steps_per_epoch / steps_per_s,
            "precision": precision, "probe_steps": probe_steps}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("schedule_budget: error: give the training command's options after `--`", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget_s", type=float, required=True, help="wall seconds the training may take")
    p.add_argument("--probe_steps", type=int, default=30, help="steps of the calibration run")
    p.add_argument("--skip_steps", type=int, default=10, help="first steps left out of the speed (warm-up)")
    p.add_argument("--min_epochs", type=int, default=1)
    p.add_argument("--max_epochs", type=int, default=None)
    p.add_argument("--write", type=Path, required=True, help="file that receives EPOCHS=<n> (shell syntax)")
    args = p.parse_args(argv[:split])
    if args.probe_steps <= args.skip_steps + 1:
        p.error("--probe_steps must exceed --skip_steps + 1")
    try:
        r = calibrate(argv[split + 1:], args.budget_s, args.probe_steps, args.skip_steps, args.min_epochs,
                      args.max_epochs)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"schedule_budget: error: {err}", file=sys.stderr)
        return 2
    args.write.parent.mkdir(parents=True, exist_ok=True)
    # PRECISION: the run is sized at the precision the calibration resolved ("auto" probes per process, and
    # two probes near the threshold could disagree), so the caller trains at that same precision
    atomic_write_text(args.write, f"EPOCHS={r['epochs']} PRECISION={r['precision']}\n# {json.dumps(r)}\n")
    print(f"[schedule] {r['stage']}: measured {r['steps_per_s']:.2f} steps/s ({r['images_per_s']:.1f} img/s, "
          f"{r['precision']}) over steps {args.skip_steps}-{args.probe_steps}; time budget {r['budget_s']:.0f} s "
          f"-> {r['epochs']} epochs x {r['steps_per_epoch']} steps = {r['steps']} steps "
          f"(about {fmt_duration(r['expected_s'])})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
