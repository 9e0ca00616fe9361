"""Helpers of run_scripts/quickstart.sh: the evaluation subset, the method checks, the demo-model export.

    python run_scripts/quickstart_report.py subset --data datasets/demo --output OUT/eval_data --per_family 8
    python run_scripts/quickstart_report.py checks --eval_dir OUT [--precision auto] [--trained_by TEXT]
    python run_scripts/quickstart_report.py export --checkpoint CKPT --output DIR  # demo model files + SHA256SUMS

`checks` prints whether the evaluated model shows what the method promises (fewer tokens as epsilon grows;
more tokens for more complex images: flat < shapes < texture < noise; positive Spearman of tokens with PNG
size and with the generator's complexity level; the achieved L1 next to each epsilon) and writes them to
OUT/method_checks.json and a section of OUT/report.md, whose first paragraph becomes a verdict: whether
the three headline checks pass (fewer tokens as epsilon grows, flat < noise, Spearman with the complexity
level > 0.3), their numbers, and the hardware (CPU capability) and precision behind them. When OUT/halting_headroom.json exists
(run_scripts/halting_headroom.py), the section also sets the model's token counts per family beside those of an
exactly fitted halting head, which tells "not learned yet" from "the objective asks for it", and gives the
encoder probe's R^2, which tells a lagging head from an encoder that does not yet know each image's difficulty.
It reports, it does not fail the run: a short schedule on a slow machine may not get there (exit 0 either way;
exit 2 for unreadable inputs).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent

# Families ordered by the generator's complexity (engine/demo_data.py): the ordering checked at epsilon 0.05.
COMPLEXITY_ORDER = ("flat", "shapes", "texture", "noise")
CHECK_EPSILON = "0.05"
CHECKS_HEADING = "## Method checks (quickstart)"
VERDICT_MARK = "<!-- quickstart verdict -->"
# The three behaviours the quickstart must show (the verdict's PASS/FAIL): fewer tokens as epsilon grows, flat
# images below noise, and a rank correlation of tokens with the generator's complexity above this.
MIN_COMPLEXITY_RHO = 0.3
HEADROOM_FILE = "halting_headroom.json"


class QuickstartError(Exception):
    """Bad input: the message names the path or value."""


# --- subset ---------------------------------------------------------------------------------------------------

def make_subset(data: Path, output: Path, per_family: int) -> int:
    """Copy the first `per_family` val images of every family (sorted names) and their metadata rows."""
    val, meta = data / "val", data / "metadata.csv"
    if not val.is_dir() or not meta.is_file():
        raise QuickstartError(f"{data} is not a demo dataset (needs val/<family>/*.png and metadata.csv); "
                              f"create it with run_scripts/prepare_demo_data.py --output_dir {data}")
    if per_family < 1:
        raise QuickstartError(f"--per_family must be >= 1, got {per_family}")
    chosen: List[str] = []
    for family in sorted(p for p in val.iterdir() if p.is_dir()):
        for image in sorted(family.glob("*.png"))[:per_family]:
            chosen.append(image.relative_to(data).as_posix())
    if output.exists():
        shutil.rmtree(output)  # a rerun with another --per_family must not keep old images
    for rel in chosen:
        (output / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / rel, output / rel)  # copies: the evaluation resolves paths against its folder
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row.get("path") in set(chosen)]
        fields = reader.fieldnames or []
    with (output / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"eval subset: {len(chosen)} val images ({per_family} per family) in {output}")
    return len(chosen)


# --- checks ---------------------------------------------------------------------------------------------------

def _rho(entry: Optional[Dict[str, Any]]) -> Optional[float]:
    return None if not entry or entry.get("rho") is None else float(entry["rho"])


def method_checks(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """metrics.json (evaluation schema) -> {"checks": [{name, passed, detail}], "table": ...}."""
    variable = metrics.get("variable", {}).get("per_epsilon", {})
    if not variable:
        raise QuickstartError("metrics.json has no variable-allocation section (was it skipped?)")
    eps_keys = sorted(variable, key=float)
    tokens = [float(variable[e]["tokens"]) for e in eps_keys]
    l1 = [float(variable[e]["l1"]) for e in eps_keys]
    checks = []

    def add(name: str, passed: Optional[bool], detail: str) -> None:
        checks.append({"name": name, "passed": passed, "detail": detail})

    decreasing = all(b <= a for a, b in zip(tokens, tokens[1:])) and tokens[-1] < tokens[0]
    add("fewer tokens as epsilon grows", decreasing,
        ", ".join(f"eps {e}: {t:.1f}" for e, t in zip(eps_keys, tokens)))

    families = metrics.get("complexity", {}).get("per_family", {})
    key = f"mean_tokens_eps_{CHECK_EPSILON}"
    present = [f for f in COMPLEXITY_ORDER if f in families and key in families[f]]
    if len(present) == len(COMPLEXITY_ORDER):
        means = [float(families[f][key]) for f in present]
        add(f"tokens at eps {CHECK_EPSILON}: flat < shapes < texture < noise",
            all(a < b for a, b in zip(means, means[1:])),
            ", ".join(f"{f} {m:.1f}" for f, m in zip(present, means)))
    else:
        add(f"tokens at eps {CHECK_EPSILON}: flat < shapes < texture < noise", None,
            f"families missing from the evaluation (have: {sorted(families)})")

    spearman = metrics.get("complexity", {}).get("spearman_tokens_vs", {}).get(CHECK_EPSILON, {})
    for target in ("png_bytes", "complexity_level"):
        rho = _rho(spearman.get(target))
        add(f"Spearman(tokens, {target}) > 0 at eps {CHECK_EPSILON}", None if rho is None else rho > 0,
            "undefined (constant token count)" if rho is None else f"rho {rho:.3f}")

    flat_noise = [float(families[f][key]) for f in ("flat", "noise") if f in families and key in families[f]]
    add(f"tokens at eps {CHECK_EPSILON}: flat < noise", (flat_noise[0] < flat_noise[1]) if len(flat_noise) == 2
        else None, f"flat {flat_noise[0]:.1f}, noise {flat_noise[1]:.1f}" if len(flat_noise) == 2
        else "flat or noise missing from the evaluation")
    rho = _rho(spearman.get("complexity_level"))
    add(f"Spearman(tokens, complexity_level) > {MIN_COMPLEXITY_RHO} at eps {CHECK_EPSILON}",
        None if rho is None else rho > MIN_COMPLEXITY_RHO,
        "undefined (constant token count)" if rho is None else f"rho {rho:.3f}")

    calib = ", ".join(f"eps {e}: L1 {v:.4f}" for e, v in zip(eps_keys, l1))
    add("achieved L1 per requested epsilon (calibration)", None, calib)
    return {"checks": checks, "epsilons": eps_keys, "tokens": tokens, "l1": l1}


HEADLINE_CHECKS = ("fewer tokens as epsilon grows", f"tokens at eps {CHECK_EPSILON}: flat < noise",
                   f"Spearman(tokens, complexity_level) > {MIN_COMPLEXITY_RHO} at eps {CHECK_EPSILON}")


def machine_line(metrics: Dict[str, Any], trained_by: Optional[str], precision: str = "auto") -> str:
    """Which hardware and precision produced the numbers: this machine's CPU (model name, the kernels PyTorch
    runs: its CPU capability) or GPU, and what `precision: auto` resolves to here."""
    import platform

    import torch

    from kolmogorov_tokenizers.config import choose_precision

    device = str(metrics.get("meta", {}).get("device") or "cpu")
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [l.split(":", 1)[1].strip() for l in cpuinfo.read_text(errors="ignore").splitlines()
                 if l.startswith("model name")]
        cpu = names[0] if names else cpu
    hw = f"CPU {cpu}, {torch.get_num_threads()} threads, PyTorch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    if device.startswith("cuda") and torch.cuda.is_available():
        hw = f"GPU {torch.cuda.get_device_name(torch.device(device))}; {hw}"
    chosen, why, _ = choose_precision(precision, "cuda" if device.startswith("cuda") else "cpu")
    training = (f"model trained by {trained_by}" if trained_by else
                f"trained and evaluated on this machine with precision {precision} -> {chosen} ({why})")
    return f"Hardware: {hw}; {training}."


def render_verdict(result: Dict[str, Any], metrics: Dict[str, Any], machine: str) -> str:
    by_name = {c["name"]: c for c in result["checks"]}
    headline = [by_name[n] for n in HEADLINE_CHECKS if n in by_name]
    passed = [c for c in headline if c["passed"]]
    mark = {True: "PASS", False: "FAIL", None: "not measured"}
    parts = "; ".join(f"{c['name']}: {mark[c['passed']]} ({c['detail']})" for c in headline)
    n = metrics.get("meta", {}).get("num_images")
    status = "shows the method" if len(passed) == len(headline) == len(HEADLINE_CHECKS) else "does NOT yet show the method"
    return (f"{VERDICT_MARK}\n**Verdict: this model {status}** on {n} held-out demo images "
            f"({len(passed)} of {len(HEADLINE_CHECKS)} checks pass). {parts}. {machine} Details: \"Method checks\" "
            f"at the end of this report.\n{VERDICT_MARK}\n")


def insert_verdict(text: str, verdict: str) -> str:
    """The verdict right under the report's title (replacing an earlier one)."""
    if VERDICT_MARK in text:
        head, _, rest = text.partition(VERDICT_MARK)
        _, _, tail = rest.partition(VERDICT_MARK)
        text = head.rstrip("\n") + "\n" + tail.lstrip("\n")
    lines = text.split("\n")
    at = 1 if lines and lines[0].startswith("# ") else 0
    return "\n".join(lines[:at] + [""] + verdict.rstrip("\n").split("\n") + [""] + lines[at:]).lstrip("\n")


def render_checks(result: Dict[str, Any]) -> str:
    mark = {True: "PASS", False: "FAIL", None: "info"}
    lines = [CHECKS_HEADING, "", "| check | result | measured |", "|---|---|---|"]
    lines += [f"| {c['name']} | {mark[c['passed']]} | {c['detail']} |" for c in result["checks"]]
    return "\n".join(lines) + "\n"


def read_headroom(eval_dir: Path) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """From OUT/halting_headroom.json (read once): per image group at the check epsilon, the learned and ideal
    token counts, and the encoder probe ({"epsilon", "r2_loo", ...}). ([], None) when the file is absent; the
    probe is None in files written before it existed and when it was skipped."""
    path = eval_dir / HEADROOM_FILE
    if not path.is_file():
        return [], None
    try:
        headroom = json.loads(path.read_text())
        table = headroom["token_counts"]
        column = [f"{float(e):g}" for e in table["epsilons"]].index(CHECK_EPSILON)
        rows = [{"group": name, "images": g["images"], "learned": g["learned"][column], "ideal": g["ideal"][column]}
                for name, g in table["groups"].items()]
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise QuickstartError(f"cannot read {path} (from run_scripts/halting_headroom.py): {err!r}") from None
    probe = headroom.get("encoder_probe")
    if not isinstance(probe, dict) or not isinstance(probe.get("r2_loo"), (int, float)):
        probe = None
    return rows, probe


def _probe_line(probe: Dict[str, Any]) -> str:
    return (f"encoder probe at eps {probe['epsilon']:g}: leave-one-out R^2 {probe['r2_loo']:.2f} of each image's log "
            f"error from the halting head's input (near 1: the encoder knows how hard each image is; low: it does "
            f"not yet, so the head cannot learn it)")


def _count(value: Optional[float]) -> str:
    """A token count as the report prints it; '-' where training never pairs the images with the epsilon."""
    return "-" if value is None else f"{value:.1f}"


def render_headroom(rows: List[Dict[str, Any]]) -> str:
    lines = ["", f"Halting head at eps {CHECK_EPSILON}: the model's token count beside an exactly fitted head's "
             "(`run_scripts/halting_headroom.py`). Far apart: the head has not learned yet, train longer. Close: "
             "the training objective itself asks for that count. `-`: training never pairs these images with this "
             "epsilon.", "",
             "| images | learned | ideal |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} ({r['images']}) | {_count(r['learned'])} | {_count(r['ideal'])} |")
    return "\n".join(lines) + "\n"


def write_checks(eval_dir: Path, trained_by: Optional[str] = None, precision: str = "auto") -> Dict[str, Any]:
    metrics_path = eval_dir / "metrics.json"
    if not metrics_path.is_file():
        raise QuickstartError(f"no evaluation found: {metrics_path} does not exist (run the evaluate step)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except ValueError as err:
        raise QuickstartError(f"cannot read {metrics_path}: {err}") from None
    result = method_checks(metrics)
    rows, probe = read_headroom(eval_dir)
    if rows:
        result["halting_headroom"] = rows
    if probe:
        result["encoder_probe"] = probe
    section = render_checks(result) + (render_headroom(rows) if rows else "")
    if probe:
        line = _probe_line(probe)
        section += f"\n{line[:1].upper()}{line[1:]}.\n"
    report = eval_dir / "report.md"
    text = report.read_text() if report.is_file() else ""
    if CHECKS_HEADING in text:  # rerun: replace the previous section (always the last one)
        text = text[: text.index(CHECKS_HEADING)].rstrip() + "\n"
    result["machine"] = machine_line(metrics, trained_by, precision)
    (eval_dir / "method_checks.json").write_text(json.dumps(result, indent=1))
    text = (text + "\n" if text else "") + section
    report.write_text(insert_verdict(text, render_verdict(result, metrics, result["machine"])))
    for c in result["checks"]:
        status = {True: "PASS", False: "FAIL", None: "    "}[c["passed"]]
        print(f"  [{status}] {c['name']}: {c['detail']}")
    if rows:
        cells = ", ".join(f"{r['group']} {_count(r['learned'])} / {_count(r['ideal'])}" for r in rows)
        print(f"  [    ] tokens at eps {CHECK_EPSILON}, learned / exactly fitted head: {cells}")
    if probe:
        print(f"  [    ] {_probe_line(probe)}")
    return result


# --- entry point ------------------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("subset", help="per-family subset of the demo val split")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--per_family", type=int, default=8)
    p = sub.add_parser("checks", help="method checks from OUT/metrics.json")
    p.add_argument("--eval_dir", type=Path, required=True)
    p.add_argument("--trained_by", default=None,
                   help="where the model was trained, when not on this machine (e.g. the shipped demo model)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="the training config's precision setting (resolved here as training resolved it)")
    p = sub.add_parser("export", help="demo model files (safetensors + config + SHA256SUMS)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "subset":
            make_subset(args.data, args.output, args.per_family)
        elif args.command == "checks":
            write_checks(args.eval_dir, args.trained_by, args.precision)
        else:
            if not args.checkpoint.is_file():
                raise QuickstartError(f"checkpoint not found: {args.checkpoint}")
            from kolmogorov_tokenizers.demo_model import export_demo_model
            path = export_demo_model(args.checkpoint, args.output)
            size = sum(f.stat().st_size for f in args.output.iterdir() if f.is_file())
            print(f"demo model: {path} ({size / 1e6:.1f} MB with config and SHA256SUMS)")
    except QuickstartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
