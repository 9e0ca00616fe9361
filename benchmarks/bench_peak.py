"""This machine's measured matmul peak (fp32 and bf16): the denominator of the FLOP/s shares.

    python benchmarks/bench_peak.py [--quick] [--device auto|cpu|cuda] [--output peak.json]

A square matmul of size n (2 n^3 FLOPs), median of several calls after warm-up; n = 2048 on CPU, 8192 on
CUDA. Reported per wall second and per process-CPU second (the fair one on a shared CPU). This is the achieved peak of one large GEMM, not the vendor's datasheet number.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from common import benchmark_parser, machine_info, setup_device, time_calls, write_json


def matmul_peak(device: torch.device, n: int, dtype: torch.dtype, reps: int) -> Dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    t = time_calls(lambda: a @ b, device, warmup=2, reps=reps)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "tflop_s": 2 * n ** 3 / t["wall_s"] / 1e12,
            "tflop_s_per_cpu_s": 2 * n ** 3 / t["cpu_s"] / 1e12 if t["cpu_s"] > 0 else None,
            "load_average": t["load_average"]}


def run(device: torch.device, quick: bool) -> Dict[str, Any]:
    n = 8192 if device.type == "cuda" else 2048  # cheap even with --quick: keep the peak honest
    reps = 20 if device.type == "cuda" else 5
    out = {"machine": machine_info(device)}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[name] = matmul_peak(device, n, dtype, reps)
        print(f"  matmul peak {name} (n={n}): {out[name]['tflop_s']:.3f} TFLOP/s, load {out[name]['load_average']}",
              flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args(argv)
    device = setup_device(args)
    write_json(run(device, args.quick), args.output)


if __name__ == "__main__":
    main()
