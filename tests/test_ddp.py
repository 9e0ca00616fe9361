"""2 processes (torchrun, gloo, CPU) train to the same parameters as 1 process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# Run by torchrun in each process: tiny real KARL, global batch 4 split over the ranks, 2 epochs x 2 steps.
# Conditioning is made deterministic through the model config (one EIC budget, epsilon = the smallest
# bin), so the per-image draws (seeded seed + rank) cannot differ between the two runs.
SCRIPT = r'''
import sys, warnings
warnings.simplefilter("ignore")
import torch
from engine.config import load_config
from engine.distributed import init_distributed
from engine.stages import get_stage
from engine.trainer import Trainer
from engine_standin import TINY_KARL, make_dataset, tiny_argv

world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
argv = tiny_argv({out!r}, *TINY_KARL, "--batch_size", str(4 // world), "--lr", "2e-3",
                 "model.overrides.eic_budget_choices=[8]", "model.overrides.eic_epsilon_max=0.005", "--dist_url", "env://")
cfg = load_config(argv, stage="latent_distillation")
info = init_distributed(cfg.device, cfg.dist_url)
torch.manual_seed(7)  # identical initial weights on every rank and in both runs
trainer = Trainer(cfg, get_stage("latent_distillation"), dist_info=info, dataset=make_dataset(n=8, size=32))
initial = {{k: v.detach().clone() for k, v in trainer.raw_model.named_parameters() if v.requires_grad}}
assert trainer.fit() == 0
if info.rank == 0:
    params = {{k: v.detach().clone() for k, v in trainer.raw_model.named_parameters() if v.requires_grad}}
    torch.save({{"params": params, "initial": initial, "world": info.world_size, "steps": trainer.global_step}}, {result!r})
if info.distributed:
    torch.distributed.destroy_process_group()
'''


def _run(tmp_path: Path, nproc: int) -> dict:
    out, result = tmp_path / f"run{nproc}", tmp_path / f"params{nproc}.pt"
    script = tmp_path / f"train{nproc}.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(out), result=str(result)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}  # engine_standin
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(result)


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["steps"] == two["steps"] == 4
    assert one["params"].keys() == two["params"].keys()
    moved = 0
    for name, p1 in one["params"].items():
        p2 = two["params"][name]
        assert torch.equal(one["initial"][name], two["initial"][name]), name
        assert torch.allclose(p1, p2, rtol=1e-4, atol=1e-5), f"{name}: max diff {(p1 - p2).abs().max():.3g}"
        moved += int((p1 - one["initial"][name]).abs().max() > 1e-4)
    assert moved > 10  # training really changed the weights, so agreeing is not trivial
    # only rank 0 writes logs and checkpoints
    assert (tmp_path / "run2" / "checkpoint-last.pth").is_file()
    assert len((tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()) == 4
