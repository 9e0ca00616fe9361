"""Shared pieces of the benchmark scripts: machine description, timing, peak memory, model building.

Timing: `warmup` untimed calls, then `reps` timed calls; we report the MEDIAN wall time and the median
process CPU time (user + system of all threads), because the machine may be shared: on a loaded machine
the CPU-time ratio is the fairer comparison of two code paths. Peak memory: on CUDA
torch.cuda.max_memory_allocated; on CPU the peak of the process resident set size (RSS, sampled every
2 ms from /proc/self/statm by a thread) minus the RSS before the measured calls ("rss_peak_delta").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import torch

from modules.device import DeviceError, resolve_device

REPO = Path(__file__).resolve().parent.parent


def machine_info(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "cpu_affinity": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager: `.peak_mb` = peak allocated (CUDA) or peak RSS increase (CPU) inside the block."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb, self.kind = device, 0.0, ""
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_max_memory_allocated"
        else:
            self._base = self._peak = _rss_bytes()
            self.kind = "cpu_rss_peak_delta"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20  # absolute peak of the block
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> Dict[str, float]:
    """Median wall and process-CPU seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        synchronize(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "reps": reps,
            "load_average": load_average()}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    from modules.transformer import get_attention_backend, set_attention_backend
    previous = get_attention_backend()
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def build_model(preset: str, device: torch.device, seed: int = 0, **overrides: Any):
    """A KARL preset on its preset base tokenizer with RANDOM weights (speed only; no download)."""
    from kolmogorov_tokenizers import create_model
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights" warning: intended here
        return create_model(preset, **overrides).to(device)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def write_json(obj: Any, path: Optional[str]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2))


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads. 0 = auto: the cores of this process's affinity mask minus the 1-minute
    load average (other jobs), at least 1. On a shared machine, more threads than free cores makes every
    parallel op wait for descheduled threads (we measured 30x slower decoder calls at 2 threads vs 1)."""
    if threads < 0:
        raise SystemExit(f"error: --threads must be >= 0 (0 = auto), got {threads}")
    if threads == 0:
        cores = len(os.sched_getaffinity(0))
        threads = max(1, min(cores, cores - int(os.getloadavg()[0] + 0.5)))
    torch.set_num_threads(threads)
    return threads


def benchmark_parser(doc: Optional[str]) -> argparse.ArgumentParser:
    """A parser with the options every benchmark script shares: --quick, --device, --threads, --output."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few iterations")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = auto)")
    parser.add_argument("--output", default=None, help="write the results as JSON to this file")
    return parser


def setup_device(args: argparse.Namespace) -> torch.device:
    """Resolve --device and apply --threads (shared by every benchmark's main)."""
    try:
        device = resolve_device(args.device)
    except DeviceError as err:
        raise SystemExit(f"error: {err}") from None
    configure_threads(args.threads)
    return device
