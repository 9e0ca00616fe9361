"""`precision: auto` chooses by what the hardware measures, never by a profile: bf16 on a CPU only where a probe
finds it faster than fp32, fp16 autocast on CUDA (the release), fp32 otherwise; explicit bf16 on a CPU without
native bf16 warns with the measured slowdown."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from engine import precision as engine_precision
from kolmogorov_tokenizers import config as config_module
from tests.script_loader import load_run_script

REPO = Path(__file__).resolve().parent.parent


def fake_probe(monkeypatch, speedup: float) -> None:
    probe = {"size": 256, "fp32_gflops": 100.0, "bf16_gflops": 100.0 * speedup, "speedup": speedup}
    monkeypatch.setattr(config_module, "measure_cpu_bf16_speedup", lambda: probe)


def test_auto_is_fp32_on_a_cpu_whose_bf16_is_slower(monkeypatch, capsys):
    fake_probe(monkeypatch, 0.01)  # an AVX2-only CPU emulates bf16 at ~1/100 of fp32
    assert engine_precision.resolve_precision("auto", torch.device("cpu")) == "fp32"
    out = capsys.readouterr().out
    assert "auto -> fp32" in out and "bf16 1.0 GFLOP/s vs fp32 100.0 GFLOP/s" in out


def test_auto_is_fp32_when_bf16_is_only_as_fast(monkeypatch):
    fake_probe(monkeypatch, 1.05)
    assert engine_precision.resolve_precision("auto", torch.device("cpu"), verbose=False) == "fp32"


def test_auto_is_bf16_on_a_cpu_whose_bf16_is_faster(monkeypatch, capsys):
    fake_probe(monkeypatch, 2.0)
    assert engine_precision.resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert "2.0x faster" in capsys.readouterr().out


def test_auto_is_fp16_on_cuda_without_probing(monkeypatch):
    monkeypatch.setattr(config_module, "measure_cpu_bf16_speedup", lambda: pytest.fail("probed on CUDA"))
    assert config_module.choose_precision("auto", torch.device("cuda"))[0] == "fp16"


def test_explicit_bf16_on_a_slow_cpu_warns_with_the_slowdown(monkeypatch, capsys):
    fake_probe(monkeypatch, 0.01)
    assert engine_precision.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # kept: it was asked for
    err = capsys.readouterr().err
    assert "warning: precision bf16 on this CPU is 100x slower than fp32" in err


def test_explicit_bf16_on_a_fast_cpu_does_not_warn(monkeypatch, capsys):
    fake_probe(monkeypatch, 2.0)
    engine_precision.resolve_precision("bf16", torch.device("cpu"))
    assert "warning" not in capsys.readouterr().err


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        config_module.choose_precision("fp8", "cpu")


def test_the_real_probe_is_fast_and_cached():
    config_module._cpu_bf16_probe = None
    start = time.perf_counter()
    first = config_module.measure_cpu_bf16_speedup()
    assert time.perf_counter() - start < 1.0
    assert first["fp32_gflops"] > 0 and first["bf16_gflops"] > 0
    assert config_module.measure_cpu_bf16_speedup() is first  # once per process


def test_the_probe_sees_an_avx2_only_cpu_as_slow_bf16():
    # ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA hide AVX-512 from PyTorch; the probe must follow the kernels
    # PyTorch actually runs, not /proc/cpuinfo's flags.
    code = ("import torch; from kolmogorov_tokenizers.config import choose_precision; "
            "print(torch.backends.cpu.get_cpu_capability(), choose_precision('auto', 'cpu')[0])")
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "PYTHONPATH": str(REPO),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    capability, chosen = out.stdout.split()
    if capability != "AVX2":
        pytest.skip(f"this CPU cannot be limited to AVX2 (capability {capability})")
    assert chosen == "fp32"


def test_no_config_or_script_fixes_bf16_for_cpus():
    for path in sorted((REPO / "engine" / "configs").glob("*.yaml")):
        assert yaml.safe_load(path.read_text()).get("precision", "auto") in ("auto", "fp32"), path.name
    assert load_run_script("base_tokenizer_pretrain").parse_args([]).precision == "auto"  # stage 0 too
