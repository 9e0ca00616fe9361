"""Training-iteration speed, peak memory and FLOPs: the reference (release) path vs the fast path.

    python benchmarks/bench_training.py [--quick] [--device auto|cpu|cuda] [--presets karl_demo karl_small]
        [--compile] [--output training.json]

One iteration = the model's training forward (EIC then LTC, both phases) + backward + AdamW step.
Stage 1 (latent distillation): loss in 2D-token space, base tokenizer frozen. Stage 2 (full finetuning):
pixel loss = L1 + 0.1 x PatchGAN hinge generator term (discriminator frozen: no D step), base decoder trained.
Paths: "reference" = attention through F.multi_head_attention_forward with halted tokens masked (the
release); "fast" = F.scaled_dot_product_attention with masks only when needed and halted tokens dropped;
"fast+compile" = fast with torch.compile on every block (timed separately: its first call = compile time);
"fast+math" = fast with SDPA held to its math kernel (`attention_backend: math`), in bf16: on CPU SDPA picks a
flash kernel whose bf16 backward is slow at small head dims (karl_demo), fast at large ones (karl_small).
Each path starts from the same weights. To compare paths on equal work the EIC budget is fixed at N/2
(the middle of the sampled range; LTC then runs N tokens, dT = N/2), and with `--halting targets`
(default) the LTC decoder sees the halting a trained model converges to (its targets: the last dT tokens
halted) instead of a random network's omega ~ 0.5 (nothing halted); `--halting model` keeps the latter.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from common import (PeakMemory, attention_backend, autocast, benchmark_parser, build_model, machine_info,
                    ratio, setup_device, synchronize, time_calls, write_json)

# batch size, warm-up and timed iterations per (device, preset); --quick uses the second set on CPU
SIZES = {
    ("cpu", "karl_demo"): dict(batch=16, warmup=2, reps=5),
    ("cpu", "karl_small"): dict(batch=2, warmup=1, reps=3),
    ("cuda", "karl_demo"): dict(batch=128, warmup=5, reps=10),
    ("cuda", "karl_small"): dict(batch=32, warmup=2, reps=5),
}
QUICK = {"karl_demo": dict(batch=8, warmup=2, reps=5), "karl_small": dict(batch=2, warmup=1, reps=1)}
GAN_WEIGHT = 0.1  # weight of the generator term in the stage-2 pixel loss (speed only: any weight will do)


def make_pixel_loss(device: torch.device):
    from modules.losses.discriminator import NLayerDiscriminator
    from modules.losses.gan import generator_loss
    disc = NLayerDiscriminator().to(device).requires_grad_(False)

    def pixel_loss(recon: torch.Tensor, images: torch.Tensor, num_tokens: torch.Tensor, phase: str):
        loss = F.l1_loss(recon, images) + GAN_WEIGHT * generator_loss(disc(2 * recon - 1))
        return loss, {}
    return pixel_loss


class Iteration:
    """One full training iteration of `model` on fixed random images."""

    def __init__(self, model, images: torch.Tensor, stage: int, precision: str, device: torch.device) -> None:
        self.model, self.images, self.precision, self.device = model, images, precision, device
        if stage == 2:
            model.base_tokenizer.set_trainable(True)
        model.train()
        self.pixel_loss = make_pixel_loss(device) if stage == 2 else None
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def forward_backward(self) -> None:
        with autocast(self.precision, self.device):
            out = self.model(self.images, pixel_loss_fn=self.pixel_loss)
        out.loss.backward()

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.forward_backward()
        self.opt.step()


def count_flops(it: Iteration) -> int:
    """Model FLOPs of one forward + backward (torch.utils.flop_counter: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    it.opt.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        it.forward_backward()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def target_halting(enabled: bool):
    """Replace the LTC halting decision by its training target: of T_ltc = N tokens, the last N/2 halted."""
    import kolmogorov_tokenizers.karl as karl
    original = karl.halted_from_prob

    def halt_last_half(omega: torch.Tensor, threshold: float = 0.75) -> torch.Tensor:
        halted = torch.zeros_like(omega, dtype=torch.bool)
        halted[:, omega.shape[1] // 2:] = True
        return halted
    if enabled:
        karl.halted_from_prob = halt_last_half
    try:
        yield
    finally:
        karl.halted_from_prob = original


def run_path(base_model, path: str, stage: int, precision: str, device: torch.device, batch: int,
             warmup: int, reps: int, flops: bool = False, halting: str = "targets") -> Dict[str, Any]:
    model = copy.deepcopy(base_model)
    model.config.drop_halted_tokens = path != "reference"
    # dropping cannot express the release's tiled training masks (KARLConfig.tile_halting_mask_in_training)
    model.config.tile_halting_mask_in_training = path == "reference"
    if path == "fast+compile":
        for block in [*model.encoder.transformer, *model.decoder.transformer]:
            block.compile(dynamic=True)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, model.config.input_size, model.config.input_size, generator=g).to(device)
    model.set_sampling_seed(0)  # the same EIC budget sequence for every path
    row: Dict[str, Any] = {"path": path, "stage": stage, "precision": precision, "batch": batch}
    backend = {"reference": "reference", "fast+math": "math"}.get(path, "sdpa")
    with attention_backend(backend), target_halting(halting == "targets"):
        it = Iteration(model, images, stage, precision, device)
        if path == "fast+compile":
            t0 = time.perf_counter()
            it()  # the first call compiles
            synchronize(device)
            row["compile_s"] = round(time.perf_counter() - t0, 2)
        with PeakMemory(device) as mem:
            timing = time_calls(it, device, warmup, reps)
        row.update(timing, peak_mem_mb=round(mem.peak_mb, 1), mem_kind=mem.kind)
        row["images_per_s"] = round(batch / timing["wall_s"], 3)
        row["images_per_cpu_s"] = round(batch / timing["cpu_s"], 3) if timing["cpu_s"] > 0 else None
        if flops:
            row["flops_per_iter"] = count_flops(it)
            row["achieved_flop_s"] = row["flops_per_iter"] / timing["wall_s"]
            row["achieved_flop_per_cpu_s"] = row["flops_per_iter"] / timing["cpu_s"] if timing["cpu_s"] > 0 else None
    return row


def run(device: torch.device, presets: List[str], quick: bool, compile_blocks: bool,
        halting: str = "targets") -> Dict[str, Any]:
    results: Dict[str, Any] = {"machine": machine_info(device), "halting": halting, "rows": [], "summary": {}}
    fast_precision = "bf16"
    for preset in presets:
        sizes = QUICK[preset] if quick and device.type == "cpu" else SIZES[(device.type, preset)]
        base_model = build_model(preset, device)
        base_model.conditioning.eic_budget_choices = [base_model.num_2d_tokens // 2]  # fixed EIC budget N/2
        for stage in (1, 2):
            paths = [("reference", "fp32"), ("fast", "fp32"), ("reference", fast_precision),
                     ("fast", fast_precision), ("fast+math", fast_precision)]
            small_quick = quick and device.type == "cpu" and preset == "karl_small"
            if small_quick:  # ~30 s per iteration on one CPU core: the essential comparison only
                paths = [("reference", "fp32"), ("fast", "fp32")] + ([("fast", fast_precision)] if stage == 1 else [])
            if compile_blocks and stage == 1:
                paths.append(("fast+compile", "fp32"))
            rows = []
            for path, precision in paths:
                row = run_path(base_model, path, stage, precision, device, sizes["batch"], sizes["warmup"],
                               sizes["reps"], flops=(path == "fast" and precision == "fp32"
                                                     and not (small_quick and stage == 2)), halting=halting)
                row["preset"] = preset
                print(f"  training {preset} stage {stage} {path:<12} {precision}: {row['images_per_s']:.2f} img/s "
                      f"(cpu-time {row['images_per_cpu_s']} img/s), peak {row['peak_mem_mb']} MB, "
                      f"load {row['load_average']}", flush=True)
                rows.append(row)
            results["rows"] += rows
            results["summary"][f"{preset}/stage{stage}"] = summarize(rows)
        del base_model
    return results


def _find(rows: List[Dict[str, Any]], path: str, precision: str) -> Optional[Dict[str, Any]]:
    return next((r for r in rows if r["path"] == path and r["precision"] == precision), None)


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        ref, fast = _find(rows, "reference", precision), _find(rows, "fast", precision)
        if ref and fast:
            out[f"fast_vs_reference_{precision}_wall"] = ratio(fast["images_per_s"], ref["images_per_s"])
            out[f"fast_vs_reference_{precision}_cputime"] = ratio(fast["images_per_cpu_s"], ref["images_per_cpu_s"])
    f32, b16 = _find(rows, "fast", "fp32"), _find(rows, "fast", "bf16")
    ref32 = _find(rows, "reference", "fp32")
    if f32 and b16:
        out["bf16_gain_wall"] = ratio(b16["images_per_s"], f32["images_per_s"])
    if ref32 and b16:
        out["fast_bf16_vs_reference_fp32_wall"] = ratio(b16["images_per_s"], ref32["images_per_s"])
    math = _find(rows, "fast+math", "bf16")
    if math and b16:
        out["math_vs_fast_bf16_wall"] = ratio(math["images_per_s"], b16["images_per_s"])
    comp = _find(rows, "fast+compile", "fp32")
    if comp and ref32:
        out["compile_vs_reference_fp32_wall"] = ratio(comp["images_per_s"], ref32["images_per_s"])
        out["compile_s"] = comp.get("compile_s")
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--presets", nargs="+", default=["karl_demo", "karl_small"],
                        choices=["karl_demo", "karl_small"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks (stage 1, fp32)")
    parser.add_argument("--halting", default="targets", choices=["targets", "model"],
                        help="LTC halting: the trained target pattern (half halted) or the random model's")
    args = parser.parse_args(argv)
    device = setup_device(args)
    write_json(run(device, args.presets, args.quick, args.compile, args.halting), args.output)


if __name__ == "__main__":
    main()
