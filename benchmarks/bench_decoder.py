"""Decoder time vs the share of active tokens: halted tokens masked (the release) vs dropped.

    python benchmarks/bench_decoder.py [--quick] [--device auto|cpu|cuda] [--preset karl_demo|karl_small]
        [--shares 1.0 0.75 0.5 0.25] [--output decoder.json]

T = N 1D tokens (the LTC budget); a share s keeps the first s*T tokens active in every image. Timed under
no_grad: `decode_tokens` (KARL's latent decoder only) with (a) the reference attention + mask, (b) SDPA +
mask, (c) SDPA with halted tokens dropped; and the full `model.decode` (latent decoder + base pixel
decoder) with masking vs dropping at every share.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from common import (attention_backend, autocast, benchmark_parser, build_model, machine_info, ratio,
                    setup_device, time_calls, write_json)

SIZES = {"cpu": dict(batch=8, warmup=2, reps=5), "cuda": dict(batch=64, warmup=3, reps=10)}
QUICK = dict(batch=4, warmup=1, reps=3)


def run(device: torch.device, preset: str, shares: List[float], quick: bool, precision: str) -> Dict[str, Any]:
    sizes = QUICK if quick and device.type == "cpu" else SIZES[device.type]
    model = build_model(preset, device).eval()
    T, B, D = model.ltc_budget, sizes["batch"], model.config.latent_token_dim
    tokens = torch.randn(B, T, D, generator=torch.Generator().manual_seed(0)).to(device)
    out: Dict[str, Any] = {"machine": machine_info(device), "preset": preset, "batch": B, "tokens": T,
                           "precision": precision, "rows": []}
    for share in shares:
        active = max(1, round(share * T))
        halted = torch.zeros(B, T, dtype=torch.bool, device=device)
        halted[:, active:] = True

        def latent(drop: bool, backend: str = "sdpa"):
            def fn() -> None:
                with torch.no_grad(), autocast(precision, device), attention_backend(backend):
                    model.decode_tokens(tokens, halted, drop=drop)
            return fn

        def full(drop: bool):
            def fn() -> None:
                model.config.inference_drop_halted_tokens = drop
                with autocast(precision, device):
                    model.decode(tokens, ~halted)
            return fn

        t = {name: time_calls(fn, device, sizes["warmup"], sizes["reps"]) for name, fn in [
            ("reference_masked", latent(False, "reference")), ("sdpa_masked", latent(False)),
            ("sdpa_dropped", latent(True)), ("full_masked", full(False)), ("full_dropped", full(True))]}
        model.config.inference_drop_halted_tokens = True
        row = {"active_share": share, "active_tokens": active,
               **{f"{k}_ms": round(v["wall_s"] * 1e3, 2) for k, v in t.items()},
               **{f"{k}_cpu_ms": round(v["cpu_s"] * 1e3, 2) for k, v in t.items()},
               "drop_vs_masked_wall": ratio(t["sdpa_masked"]["wall_s"], t["sdpa_dropped"]["wall_s"]),
               "drop_vs_masked_cputime": ratio(t["sdpa_masked"]["cpu_s"], t["sdpa_dropped"]["cpu_s"]),
               "drop_vs_reference_wall": ratio(t["reference_masked"]["wall_s"], t["sdpa_dropped"]["wall_s"]),
               "full_drop_vs_masked_wall": ratio(t["full_masked"]["wall_s"], t["full_dropped"]["wall_s"]),
               "load_average": t["full_dropped"]["load_average"]}
        print(f"  decoder {preset} active {share:.2f}: latent masked(ref) {row['reference_masked_ms']} ms, "
              f"masked(sdpa) {row['sdpa_masked_ms']} ms, dropped {row['sdpa_dropped_ms']} ms "
              f"({row['drop_vs_masked_wall']}x wall, {row['drop_vs_masked_cputime']}x cpu-time); full decode "
              f"{row['full_masked_ms']} -> {row['full_dropped_ms']} ms; load {row['load_average']}", flush=True)
        out["rows"].append(row)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--preset", default=None, choices=["karl_demo", "karl_small"],
                        help="default: karl_demo on CPU, karl_small on CUDA")
    parser.add_argument("--shares", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    if any(not 0.0 < s <= 1.0 for s in args.shares):
        parser.error(f"--shares must be in (0, 1], got {args.shares}")
    device = setup_device(args)
    preset = args.preset or ("karl_small" if device.type == "cuda" else "karl_demo")
    write_json(run(device, preset, args.shares, args.quick, args.precision), args.output)


if __name__ == "__main__":
    main()
