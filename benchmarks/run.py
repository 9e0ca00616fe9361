"""The benchmark suite: runs every benchmark script, prints one table and writes one JSON file.

    python benchmarks/run.py [--quick] [--device auto|cpu|cuda] [--threads 0] [--sections ...]
        [--presets karl_demo karl_small] [--compile] --output results.json

Sections (each a script of this folder, run in its own process so peak memory is its own):
  peak           bench_peak.py           matmul peak fp32 / bf16 (denominator of the FLOP/s share)
  training       bench_training.py       training iteration, reference vs fast path, stages 1 and 2
  encode         bench_encode.py         adaptive single-pass encode vs the search baseline
  decoder        bench_decoder.py        decoder time vs active-token share, masked vs dropped
  channels_last  bench_channels_last.py  base tokenizer layout
Every comparison is made within one run on one machine; the load average is recorded next to each number.
Exit status 0 when every section ran (targets missed are reported, not errors), 1 when a section failed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
SECTIONS = {"peak": "bench_peak.py", "training": "bench_training.py", "encode": "bench_encode.py",
            "decoder": "bench_decoder.py", "channels_last": "bench_channels_last.py"}
TARGETS = {"training_speedup": 1.5, "encode_speedup_at_0.05": 5.0, "decoder_drop_speedup_at_half": 1.3}


def run_section(name: str, args: argparse.Namespace, folder: Path) -> Optional[Dict[str, Any]]:
    out = folder / f"{name}.json"
    cmd = [sys.executable, str(HERE / SECTIONS[name]), "--device", args.device, "--threads", str(args.threads),
           "--output", str(out)]
    if args.quick:
        cmd.append("--quick")
    if name == "training":
        cmd += ["--presets", *args.presets] + (["--compile"] if args.compile else [])
    if name in ("encode", "decoder") and args.precision != "fp32":
        cmd += ["--precision", args.precision]
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd).returncode != 0 or not out.is_file():
        print(f"[{name}] FAILED", file=sys.stderr, flush=True)
        return None
    return json.loads(out.read_text())


def flop_shares(training: Dict[str, Any], peak: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Achieved model FLOP/s of the fast fp32 iteration as a share of the measured fp32 matmul peak, per wall
    second and per process-CPU second (on a shared CPU the latter is the fair one)."""
    rows = []
    for r in training.get("rows", []):
        if "achieved_flop_s" in r and peak:
            share = r["achieved_flop_s"] / (peak["fp32"]["tflop_s"] * 1e12)
            per_cpu, peak_cpu = r.get("achieved_flop_per_cpu_s"), peak["fp32"].get("tflop_s_per_cpu_s")
            rows.append({"preset": r["preset"], "stage": r["stage"], "gflop_per_iter": r["flops_per_iter"] / 1e9,
                         "achieved_tflop_s": r["achieved_flop_s"] / 1e12, "share_of_fp32_peak": round(share, 4),
                         "share_of_fp32_peak_cputime": round(per_cpu / (peak_cpu * 1e12), 4)
                         if per_cpu and peak_cpu else None})
    return rows


def targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    training = results.get("training") or {}
    device = (training.get("machine") or {}).get("device", "cpu")
    precision = "bf16" if device.startswith("cuda") else "fp32"
    for key, s in training.get("summary", {}).items():
        for basis in ("wall", "cputime"):
            v = s.get(f"fast_vs_reference_{precision}_{basis}")
            if v is not None:
                out.append({"target": f"training {key} fast/reference ({precision}, {basis})", "value": v,
                            "goal": TARGETS["training_speedup"], "met": v >= TARGETS["training_speedup"]})
        if s.get("bf16_gain_wall") is not None:
            out.append({"target": f"training {key} bf16/fp32 gain (info)", "value": s["bf16_gain_wall"], "goal": None,
                        "met": None})
    for r in (results.get("encode") or {}).get("rows", []):
        if abs(r["epsilon"] - 0.05) < 1e-9:
            for basis in ("wall", "cputime"):
                v = r[f"speedup_{basis}"]
                out.append({"target": f"adaptive encode / search at eps 0.05 ({basis}, {r['search_mean_passes']:.1f} "
                            f"search passes)", "value": v, "goal": TARGETS["encode_speedup_at_0.05"],
                            "met": v is not None and v >= TARGETS["encode_speedup_at_0.05"]})
    for r in (results.get("decoder") or {}).get("rows", []):
        if abs(r["active_share"] - 0.5) < 1e-9:
            for key in ("drop_vs_masked_wall", "drop_vs_masked_cputime", "drop_vs_reference_wall",
                        "full_drop_vs_masked_wall"):
                v = r[key]
                out.append({"target": f"decoder, half halted: {key}", "value": v,
                            "goal": TARGETS["decoder_drop_speedup_at_half"],
                            "met": v is not None and v >= TARGETS["decoder_drop_speedup_at_half"]})
    return out


def print_table(results: Dict[str, Any]) -> None:
    print("\n=== KARL benchmarks ===")
    m = next((v["machine"] for v in results.values() if isinstance(v, dict) and "machine" in v), {})
    print(f"device {m.get('device')}  cores(affinity) {m.get('cpu_affinity')}  torch threads "
          f"{m.get('torch_threads')}  load average at start {m.get('load_average')}")
    training = results.get("training") or {}
    if training:
        print(f"\ntraining iteration (mem: {training['rows'][0].get('mem_kind', '') if training['rows'] else ''})")
        print(f"{'preset':<11}{'st':<3}{'path':<13}{'prec':<6}{'batch':>6}{'img/s':>9}{'img/cpu-s':>11}"
              f"{'peak MB':>9}{'load':>6}")
        for r in training["rows"]:
            print(f"{r['preset']:<11}{r['stage']:<3}{r['path']:<13}{r['precision']:<6}{r['batch']:>6}"
                  f"{r['images_per_s']:>9.3g}{(r['images_per_cpu_s'] or 0):>11.3g}{r['peak_mem_mb']:>9.1f}"
                  f"{r['load_average']:>6.1f}")
    for r in results.get("flop_shares", []):
        cpu_share = r.get("share_of_fp32_peak_cputime")
        print(f"FLOPs {r['preset']} stage {r['stage']}: {r['gflop_per_iter']:.1f} GFLOP/iter, "
              f"{r['achieved_tflop_s']:.4f} TFLOP/s = {100 * r['share_of_fp32_peak']:.1f}% of the measured fp32 "
              f"matmul peak" + (f" ({100 * cpu_share:.1f}% per CPU second)" if cpu_share is not None else ""))
    print("\ntargets")
    for t in results.get("targets", []):
        met = "" if t["met"] is None else ("MET" if t["met"] else "missed")
        goal = "" if t["goal"] is None else f">= {t['goal']}"
        print(f"  {t['target']:<70} {t['value']!s:>8} {goal:<8} {met}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few iterations (CPU smoke run)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = auto: free cores)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--presets", nargs="+", default=["karl_demo", "karl_small"],
                        choices=["karl_demo", "karl_small"], help="training presets")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="encode/decoder precision")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks (training)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    output = Path(args.output)
    if output.exists() and output.is_dir():
        parser.error(f"--output {output} is a directory; give a file path such as {output / 'results.json'}")

    results: Dict[str, Any] = {"quick": args.quick}
    failed: List[str] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections:
            results[name] = run_section(name, args, Path(tmp))
            if results[name] is None:
                failed.append(name)
            # written after every section: a run stopped by a time limit keeps what it finished
            results["flop_shares"] = flop_shares(results.get("training") or {}, results.get("peak") or {})
            results["targets"] = targets(results)
            results["failed_sections"] = failed
            output.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwrote {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
