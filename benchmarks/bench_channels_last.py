"""The convolutional base tokenizer in channels_last vs the default (contiguous NCHW) memory layout.

    python benchmarks/bench_channels_last.py [--quick] [--device auto|cpu|cuda] [--base vqgan_demo|vqgan]
        [--output channels_last.json]

Times the frozen base tokenizer's encode + decode (what KARL runs around its transformers) under no_grad, in
fp32 and bf16, with the network and the images converted to channels_last vs left as they are.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

import torch

from common import autocast, benchmark_parser, machine_info, ratio, setup_device, time_calls, write_json

SIZES = {"cpu": dict(batch=8, warmup=2, reps=5), "cuda": dict(batch=64, warmup=3, reps=10)}
QUICK = dict(batch=4, warmup=1, reps=3)


def run(device: torch.device, base_name: str, quick: bool) -> Dict[str, Any]:
    from base_tokenizers import create_base_tokenizer
    sizes = QUICK if quick and device.type == "cpu" else SIZES[device.type]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = create_base_tokenizer(base_name).to(device).eval()
    size = base.config.resolution
    images = torch.rand(sizes["batch"], 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    out: Dict[str, Any] = {"machine": machine_info(device), "base": base_name, "batch": sizes["batch"], "rows": []}
    for precision in ("fp32", "bf16"):
        times = {}
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            base.to(memory_format=fmt)
            x = images.contiguous(memory_format=fmt)

            def fn() -> None:
                with torch.no_grad(), autocast(precision, device):
                    base.decode(base.encode(x).latent)
            times[layout] = time_calls(fn, device, sizes["warmup"], sizes["reps"])
        base.to(memory_format=torch.contiguous_format)
        row = {"precision": precision, **{f"{k}_ms": round(v["wall_s"] * 1e3, 2) for k, v in times.items()},
               "channels_last_speedup_wall": ratio(times["contiguous"]["wall_s"], times["channels_last"]["wall_s"]),
               "channels_last_speedup_cputime": ratio(times["contiguous"]["cpu_s"], times["channels_last"]["cpu_s"]),
               "load_average": times["channels_last"]["load_average"]}
        print(f"  base {base_name} {precision}: contiguous {row['contiguous_ms']} ms, channels_last "
              f"{row['channels_last_ms']} ms ({row['channels_last_speedup_wall']}x), load {row['load_average']}",
              flush=True)
        out["rows"].append(row)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--base", default=None, choices=["vqgan_demo", "vqgan"],
                        help="default: vqgan_demo on CPU, vqgan on CUDA")
    args = parser.parse_args(argv)
    device = setup_device(args)
    write_json(run(device, args.base or ("vqgan" if device.type == "cuda" else "vqgan_demo"), args.quick),
               args.output)


if __name__ == "__main__":
    main()
