"""Adaptive encode (ONE pass) vs the search baseline (fixed-budget passes in increasing order).

    python benchmarks/bench_encode.py [--quick] [--device auto|cpu|cuda] [--preset karl_demo|karl_small]
        [--epsilons 0.03 0.05 0.09] [--output encode.json]

Adaptive: `model.encode(images, N, epsilon)` (budget N, halting on). Search: evaluation.search's
`search_min_budget`, the baseline of the evaluation: budgets N/16 * k, k = 1..16, each a fixed-budget pass
(`adaptive=False`, epsilon 0) over the images still unresolved, stopping at the first budget whose L1 <=
epsilon. Both include the base tokenizer's encode and the pixel decode. The number of search passes depends
on the weights: with RANDOM weights (this benchmark: no download) no budget meets a small epsilon, so the
search runs all 16 passes, its worst case; `seconds_per_pass` lets you scale to a trained model's mean.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from common import (autocast, benchmark_parser, build_model, machine_info, ratio, setup_device, time_calls,
                    write_json)

SIZES = {"cpu": dict(batch=8, warmup=1, reps=3), "cuda": dict(batch=32, warmup=1, reps=3)}
QUICK = dict(batch=4, warmup=1, reps=2)


def run(device: torch.device, preset: str, epsilons: List[float], quick: bool, precision: str) -> Dict[str, Any]:
    from evaluation.runner import EvalData
    from evaluation.search import default_search_budgets, search_min_budget

    sizes = QUICK if quick and device.type == "cpu" else SIZES[device.type]
    model = build_model(preset, device).eval()
    N, B = model.ltc_budget, sizes["batch"]
    images = torch.rand(B, 3, model.config.input_size, model.config.input_size,
                        generator=torch.Generator().manual_seed(0)).to(device)
    budgets = default_search_budgets(N)
    out: Dict[str, Any] = {"machine": machine_info(device), "preset": preset, "batch": B, "precision": precision,
                           "search_budgets": budgets, "rows": []}
    for eps in epsilons:
        def adaptive() -> None:
            with autocast(precision, device):
                model.encode(images, N, eps)

        search_info: Dict[str, Any] = {}

        def search() -> None:
            with autocast(precision, device):
                r = search_min_budget(model, EvalData.from_tensor(images, B), eps, budgets, device)
            search_info.update(passes=sum(r.passes) / len(r.passes), met=sum(r.met) / len(r.met))

        a = time_calls(adaptive, device, sizes["warmup"], sizes["reps"])
        s = time_calls(search, device, sizes["warmup"], sizes["reps"])
        row = {"epsilon": eps,
               "adaptive_images_per_s": round(B / a["wall_s"], 3), "adaptive_cpu_s": a["cpu_s"], "adaptive_passes": 1,
               "search_images_per_s": round(B / s["wall_s"], 3), "search_cpu_s": s["cpu_s"],
               "search_mean_passes": search_info["passes"], "search_share_met": search_info["met"],
               "search_seconds_per_pass": s["wall_s"] / max(search_info["passes"], 1),
               "speedup_wall": ratio(s["wall_s"], a["wall_s"]), "speedup_cputime": ratio(s["cpu_s"], a["cpu_s"]),
               "load_average": s["load_average"]}
        print(f"  encode {preset} eps {eps}: adaptive {row['adaptive_images_per_s']} img/s (1 pass), search "
              f"{row['search_images_per_s']} img/s ({row['search_mean_passes']:.1f} passes), speedup "
              f"{row['speedup_wall']}x wall / {row['speedup_cputime']}x cpu-time, load {row['load_average']}",
              flush=True)
        out["rows"].append(row)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--preset", default=None, choices=["karl_demo", "karl_small"],
                        help="default: karl_demo on CPU, karl_small on CUDA")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.03, 0.05, 0.09])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    device = setup_device(args)
    preset = args.preset or ("karl_small" if device.type == "cuda" else "karl_demo")
    write_json(run(device, preset, args.epsilons, args.quick, args.precision), args.output)


if __name__ == "__main__":
    main()
