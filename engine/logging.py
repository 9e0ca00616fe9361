"""Training logs on rank 0: a progress line (images/s, ETA), metrics.jsonl, TensorBoard, optional wandb."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class TrainLogger:
    """Every method is a no-op on ranks other than 0, so callers never branch on the rank."""

    def __init__(self, output_dir: str | Path, log_dir: Optional[str | Path], enabled: bool,
                 use_wandb: bool = False, wandb_project: str = "karl", run_config: Optional[dict] = None) -> None:
        self.enabled = enabled
        self.writer = None
        self.wandb = None
        self._jsonl = None
        self._t_last = time.perf_counter()
        self._images_since = 0
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(output_dir / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir or output_dir))
        except ImportError:  # tensorboard is a dependency; keep training if a user removed it
            print("[logging] tensorboard is not installed: TensorBoard logs are off", file=sys.stderr)
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("--wandb was given but the wandb package is not installed (pip install wandb)") from None
            self.wandb = wandb
            wandb.init(project=wandb_project, config=run_config or {}, dir=str(output_dir))

    def count_images(self, n: int) -> None:
        self._images_since += n

    def progress(self, epoch: int, epochs: int, step: int, steps_per_epoch: int, total_left: int,
                 scalars: Dict[str, float], world_size: int = 1,
                 position: Optional[Tuple[str, int, int]] = None) -> None:
        """One line: epoch/step, loss terms, lr, throughput (all ranks' images) and ETA of the run.
        position (label, step, steps): a run that counts steps shows "[label] step 3/100" instead."""
        if not self.enabled:
            return
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-9)
        images_per_s = self._images_since * world_size / dt
        steps = max(self._steps_since, 1)
        eta = total_left * dt / steps
        self._t_last, self._images_since, self._steps_since = now, 0, 0
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        where = (f"[{position[0]}] step {position[1]}/{position[2]}" if position is not None
                 else f"[epoch {epoch}/{epochs} step {step}/{steps_per_epoch}]")
        print(f"{where} {shown} | {images_per_s:.1f} img/s | ETA {_fmt_eta(eta)}", flush=True)

    _steps_since = 0

    def count_step(self) -> None:
        self._steps_since += 1

    def scalars(self, step: int, scalars: Dict[str, float], epoch: Optional[int] = None) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        record: Dict[str, Any] = {"step": step, "time": round(time.time(), 3)}  # wall clock, for throughput
        if epoch is not None:
            record["epoch"] = epoch
        record.update(scalars)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def histogram(self, step: int, name: str, values: torch.Tensor) -> None:
        if self.enabled and self.writer is not None and values.numel() > 0:
            self.writer.add_histogram(name, values.detach().float().cpu(), step)

    def images(self, step: int, name: str, grid: torch.Tensor) -> None:
        """grid: (3, H, W) in [0, 1]."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(name, grid.detach().float().clamp(0, 1).cpu(), step)

    def event(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self.wandb is not None:
            self.wandb.finish()
