"""SIGTERM / SIGINT to the whole process group (Slurm, systemd, Kubernetes, Ctrl-C) while data-loading
workers run: the run saves the current step and exits 143 / 130, and --resume auto continues
(docs/FAULTS.md, rows 2a-2b). Real processes: a new session, 2 workers, the signal sent to the group."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint
from engine_standin import TINY_KARL, tiny_argv

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # generous: a loaded 2-core machine


def _launch(out, data_dir, *extra):
    argv = [sys.executable, "-m", "engine.main_train", "--stage", "latent_distillation", "--data_path", str(data_dir),
            *tiny_argv(out, *TINY_KARL, "--epochs", "50", *extra)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # a new session: its own process group, as under a job scheduler; the workers join it
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


class _Reader:
    """Collects the run's output in a thread, so waiting for a line never blocks on a full pipe."""

    def __init__(self, proc):
        self.lines, self.proc = [], proc
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self.thread.join(10)
                break
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} (exit {self.proc.poll()}):\n{self.text()}")

    def finish(self, timeout=TIMEOUT):
        code = self.proc.wait(timeout=timeout)
        self.thread.join(10)
        return code, self.text()

    def text(self):
        return "".join(self.lines)


def _workers_of(pid):
    """PIDs of the children of `pid` (the DataLoader workers) from /proc; None where the kernel does not say."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else None


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_group_signal_with_two_workers_saves_the_current_step_and_resumes(tmp_path, demo_data_dir, sig, code):
    proc = _launch(tmp_path, demo_data_dir, "data.num_workers=2")
    reader = _Reader(proc)
    try:
        reader.wait_for("step 2/")
        workers = _workers_of(proc.pid)
        assert workers is None or len(workers) >= 2, "the test needs live data-loading workers"
        os.killpg(proc.pid, sig)  # the whole group: the trainer and its workers
        exit_code, out = reader.finish()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert exit_code == code, out
    assert "Traceback" not in out and "saved" in out
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    step = ckpt["global_step"]
    assert step >= 2 and ckpt["epoch_done"] is False

    proc = _launch(tmp_path, demo_data_dir, "data.num_workers=2", "--resume", "auto", "--max_steps", str(step + 1))
    exit_code, out = _Reader(proc).finish()
    assert exit_code == 0, out
    assert f"step {step}" in out.split("[resume]")[1].splitlines()[0]
    assert load_checkpoint(tmp_path / "checkpoint-last.pth")["global_step"] == step + 1


class _WorkerKilledAt:
    """Raises torch's worker-failure error during the `at`-th forward (a worker hit by the group's signal
    before its worker_init_fn could make it ignore the signal)."""

    def __init__(self, at, name):
        from engine_standin import StandInKARL

        class Model(StandInKARL):
            calls = 0

            def forward(self, images, pixel_loss_fn=None):
                Model.calls += 1
                if Model.calls == at:
                    raise RuntimeError(f"DataLoader worker (pid 4242) is killed by signal: {name}. ")
                return super().forward(images, pixel_loss_fn)

        self.model = Model()


@pytest.mark.parametrize("name,code", [("Terminated", 143), ("Interrupt", 130)])
def test_worker_killed_by_the_signal_still_saves_the_last_completed_step(tmp_path, name, code):
    from engine.config import load_config
    from engine.stages import get_stage
    from engine.trainer import Trainer
    from engine_standin import make_dataset

    cfg = load_config(tiny_argv(tmp_path, "--accum_iter", "2"), stage="latent_distillation")
    model = _WorkerKilledAt(6, name).model  # 6th micro-batch: the second half of step 3
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=model, dataset=make_dataset(n=32, size=32))
    assert trainer.fit() == code
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert (ckpt["global_step"], ckpt["step_in_epoch"], ckpt["epoch_done"]) == (2, 4, False)


def test_other_worker_failures_are_not_taken_for_a_signal(tmp_path):
    from engine.config import load_config
    from engine.stages import get_stage
    from engine.trainer import Trainer
    from engine_standin import make_dataset

    cfg = load_config(tiny_argv(tmp_path), stage="latent_distillation")
    trainer = Trainer(cfg, get_stage("latent_distillation"), model=_WorkerKilledAt(2, "Killed").model,
                      dataset=make_dataset(n=16, size=32))
    with pytest.raises(RuntimeError, match="Killed"):
        trainer.fit()
