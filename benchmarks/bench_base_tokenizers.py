"""Stage-0 training speed and peak memory of the demo base tokenizers.

    python benchmarks/bench_base_tokenizers.py [--models vqgan_demo vae_demo] [--steps 10] [--batch_size 8]
        [--threads 0] [--no_gan] [--precision fp32|bf16]

One training step = the stage-0 step (engine/stages/base_tokenizer.py, BaseTokenizerStage): autoencoder forward and
backward (L1 + latent regulariser + adaptive-weight GAN term), Adam step, then a discriminator step. Each
model runs in a fresh process so its peak resident memory (getrusage ru_maxrss) is its own; the Python
heap peak (tracemalloc) is printed too (torch's tensor memory is not in it). Random images: speed only.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc


def measure(model: str, steps: int, warmup: int, batch_size: int, gan: bool, precision: str) -> dict:
    import torch

    from base_tokenizers import create_base_tokenizer
    from engine.stages.base_tokenizer import BaseTokenizerStageConfig, BaseTokenizerTrainingLoss

    torch.manual_seed(0)
    tracemalloc.start()
    tokenizer = create_base_tokenizer(model).set_trainable(True).train()
    size = tokenizer.config.resolution
    cfg = BaseTokenizerStageConfig(perceptual="none", disc_start=0 if gan else 10**9)
    losses = BaseTokenizerTrainingLoss(cfg, tokenizer)
    opt_ae = torch.optim.Adam(tokenizer.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(losses.discriminator.parameters(), lr=1e-4)
    images = torch.rand(batch_size, 3, size, size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        with autocast:  # the autoencoder update, then the discriminator's (BaseTokenizerStage's step)
            out = tokenizer(images)
            loss, _ = losses.autoencoder_loss(tokenizer, out, images, step)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        if losses.gan_on(step):
            with autocast:
                d_loss, _ = losses.discriminator_loss(images, out.reconstruction)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
    seconds = time.perf_counter() - start
    _, py_peak = tracemalloc.get_traced_memory()
    return {
        "model": model, "params_M": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6, 2),
        "input": size, "batch": batch_size, "gan": gan, "precision": precision, "threads": torch.get_num_threads(),
        "s_per_step": round(seconds / steps, 3), "images_per_s": round(steps * batch_size / seconds, 1),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "python_heap_peak_MiB": round(py_peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vqgan_demo", "vae_demo"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no_gan", action="store_true", help="autoencoder steps only (before disc_start)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one model, JSON out
    args = p.parse_args(argv)
    if args.one:
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.models[0], args.steps, args.warmup, args.batch_size, not args.no_gan,
                                 args.precision)))
        return 0
    for model in args.models:
        cmd = [sys.executable, __file__, "--one", "--models", model, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--batch_size", str(args.batch_size), "--threads", str(args.threads),
               "--precision", args.precision] + (["--no_gan"] if args.no_gan else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{model}: failed\n{done.stderr}", file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['model']:>11}: {r['params_M']}M params, {r['input']} px, batch {r['batch']}, GAN {r['gan']}, "
              f"{r['precision']}, {r['threads']} thread(s): {r['s_per_step']} s/step, {r['images_per_s']} images/s, "
              f"peak RSS {r['peak_rss_MiB']:.0f} MiB, Python heap peak {r['python_heap_peak_MiB']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
