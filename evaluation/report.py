"""Everything the evaluation writes: metrics.json, per_image.csv, PNG plots, reconstruction grids, report.md.

Plots use matplotlib's Agg backend (no display needed). NaN/inf become null in metrics.json (valid JSON).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from modules.io import atomic_write_bytes, atomic_write_text

from .runner import GridSamples


def to_json_ready(obj):
    """Recursively turn numpy scalars/arrays into Python types and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): to_json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json_ready(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_metrics_json(metrics: dict, output_dir: Path) -> Path:
    path = output_dir / "metrics.json"
    atomic_write_text(path, json.dumps(to_json_ready(metrics), indent=2, allow_nan=False) + "\n")
    return path


def write_per_image_csv(ids: list[str], columns: dict[str, list], output_dir: Path) -> Path:
    """One row per image; `columns` maps a column name to values in the order of `ids` (None = empty)."""
    path = output_dir / "per_image.csv"
    names = list(columns)
    for name in names:
        if len(columns[name]) != len(ids):
            raise ValueError(f"column {name!r} has {len(columns[name])} values for {len(ids)} images")
    buffer = io.StringIO(newline="")  # built in memory, written atomically (never a half CSV)
    writer = csv.writer(buffer)
    writer.writerow(["image_id", *names])
    for row, image_id in enumerate(ids):
        values = []
        for name in names:
            v = columns[name][row]
            if isinstance(v, float):
                v = "" if not math.isfinite(v) else f"{v:.6g}"
            values.append("" if v is None else v)
        writer.writerow([image_id, *values])
    atomic_write_text(path, buffer.getvalue())
    return path


def _save_figure(fig, path: Path) -> None:
    """PNG written atomically: a full disk never leaves a 0-byte plot under its final name."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_token_histograms(tokens_by_eps: dict[float, np.ndarray], budget: int, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, budget, min(budget, 32) + 1)
    for eps, tokens in tokens_by_eps.items():
        ax.hist(tokens, bins=bins, alpha=0.5, label=f"eps {eps:g} (mean {np.mean(tokens):.1f})")
    ax.set_xlabel("tokens kept by KARL")
    ax.set_ylabel("images")
    ax.set_title(f"Token counts per epsilon (budget {budget})")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_tokens_vs_png(tokens_by_eps: dict[float, np.ndarray], png_bytes: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for eps, tokens in tokens_by_eps.items():
        ax.scatter(png_bytes, tokens, s=10, alpha=0.6, label=f"eps {eps:g}")
    ax.set_xlabel("PNG size (bytes, max compression)")
    ax.set_ylabel("tokens kept by KARL")
    ax.set_title("KARL token count vs PNG size")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_calibration(calibration: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for eps, entry in calibration["per_epsilon"].items():
        rows = entry["rows"]
        ax.plot([r["offset"] for r in rows], [100 * r["share_above"] for r in rows], marker="o", label=f"eps {eps}")
    ax.set_xlabel("offset (threshold = eps + offset)")
    ax.set_ylabel("% of images with L1 > threshold")
    ax.set_title("Epsilon calibration")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_fixed_l1(fixed: dict, variable: Optional[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    budgets = fixed["budgets"]
    rows = fixed["per_budget"]
    ax.plot([rows[str(b)]["tokens"] for b in budgets], [rows[str(b)]["l1"] for b in budgets], marker="o",
            label="fixed allocation (eps 0)")
    if variable:
        pts = variable["per_epsilon"]
        ax.scatter([v["tokens"] for v in pts.values()], [v["l1"] for v in pts.values()], color="C3", zorder=3,
                   label="variable allocation")
        for eps, v in pts.items():
            ax.annotate(f"eps {eps}", (v["tokens"], v["l1"]), fontsize=8)
    ax.set_xlabel("mean tokens")
    ax.set_ylabel("mean L1")
    ax.set_title("Reconstruction L1 vs tokens")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_grid(grid: GridSamples, settings: list[str], path: Path, title: str) -> Optional[Path]:
    """Originals in the first row, then one row per setting, each image titled with its token count."""
    if grid.originals is None or not settings:
        return None
    plt = _pyplot()
    k = len(grid.originals)
    rows = [("original", grid.originals, None)] + [(s, *grid.rows[s]) for s in settings if s in grid.rows]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.45 * len(rows)), squeeze=False)
    for r, (label, images, tokens) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(images[c].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if tokens is not None:
                ax.set_title(f"{int(tokens[c])} tok", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report_md(metrics: dict, figures: dict[str, Path], output_dir: Path) -> Path:
    """A human-readable summary embedding the figures (paths relative to output_dir)."""
    meta = metrics["meta"]
    out = ["# KARL evaluation report", ""]
    out += [f"- checkpoint: `{meta.get('checkpoint')}`", f"- data: `{meta.get('data')}` ({meta.get('num_images')} images, "
            f"kind {meta.get('data_kind')})", f"- device: {meta.get('device')}"]
    for line in meta.get("skipped", []):
        out.append(f"- {line}")
    out.append("")
    metric_names = ["tokens", "l1", "l2", "psnr", "ssim", "lpips", "rfid", "fd_effnetlite0"]
    if "fixed" in metrics:
        fx = metrics["fixed"]
        cols = [m for m in metric_names if any(m in r for r in fx["per_budget"].values())]
        out += ["## Fixed allocation (epsilon 0)", "",
                _table(["budget", *cols], [[b, *[r.get(m) for m in cols]] for b, r in fx["per_budget"].items()]), ""]
    if "variable" in metrics:
        vr = metrics["variable"]
        cols = [m for m in metric_names if any(m in r for r in vr["per_epsilon"].values())]
        out += [f"## Variable allocation (budget {vr['budget']})", "",
                _table(["epsilon", *cols, "images/s"],
                       [[e, *[r.get(m) for m in cols], r.get("images_per_second")] for e, r in vr["per_epsilon"].items()]),
                ""]
    if "calibration" in metrics:
        cal = metrics["calibration"]
        offsets = cal["offsets"]
        rows = [[e, *[f"{100 * r['share_above']:.1f}% ({_fmt(r['mean_l1_of_above'])})" for r in entry["rows"]]]
                for e, entry in cal["per_epsilon"].items()]
        out += ["## Epsilon calibration", "", "Share of images with L1 > eps + offset (mean L1 of those).", "",
                _table(["epsilon", *[f"+{o:g}" for o in offsets]], rows), ""]
    if "search" in metrics:
        sr = metrics["search"]
        rows = [[e, r["search"]["mean_tokens"], r["karl"]["mean_tokens"], r["search"]["mean_passes"],
                 r["search"]["seconds_per_image"], r["karl"]["seconds_per_image"], r["agreement_within_one_step"],
                 r["mean_token_difference_karl_minus_search"], r["speedup"]]
                for e, r in sr["per_epsilon"].items()]
        out += [f"## Search baseline vs KARL (budget list step {sr['budget_step']})", "",
                _table(["epsilon", "search tokens", "KARL tokens", "search passes", "search s/img", "KARL s/img",
                        "agreement (1 step)", "KARL - search tokens", "speed-up"], rows), ""]
    if "complexity" in metrics:
        cx = metrics["complexity"]
        out += ["## Complexity analysis", ""]
        if "structure_vs_noise" in cx:
            s = cx["structure_vs_noise"]
            out += [f"Structure vs noise: d = L1({s['small_budget']} tokens) - L1({s['full_budget']} tokens): "
                    f"mean {_fmt(s['mean_d'])}, min {_fmt(s['min_d'])}, max {_fmt(s['max_d'])}.", ""]
        corr = cx["spearman_tokens_vs"]
        keys = sorted({k for row in corr.values() for k in row if not k.startswith("param_")})
        out += ["Spearman rank correlation of KARL's token count with:", "",
                _table(["epsilon", *keys], [[e, *[row[k]["rho"] for k in keys]] for e, row in corr.items()]), ""]
        ref = cx.get("spearman_compressors_vs_metadata") or {}
        if ref:
            rows = [[name, row["complexity_level"]["rho"]] for name, row in ref.items() if "complexity_level" in row]
            if rows:
                out += ["Reference: Spearman of each compressor's size with the generator's complexity_level:", "",
                        _table(["compressor", "rho"], rows), ""]
        dist = cx["mean_tokens_by_distribution"]
        out += ["Mean tokens per epsilon by data set:", "",
                _table(["set", *dist["in_distribution"].keys()],
                       [[name, *vals.values()] for name, vals in dist.items() if isinstance(vals, dict)]), ""]
        if cx["per_family"]:
            fam_cols = [c for c in next(iter(cx["per_family"].values())) if not c.startswith("mean_param_")]
            out += ["Per-family means (generator parameters: see metrics.json):", "",
                    _table(["family", *fam_cols],
                           [[f, *[r.get(c) for c in fam_cols]] for f, r in cx["per_family"].items()]), ""]
    if figures:
        out += ["## Figures", ""]
        for name, path in figures.items():
            out += [f"### {name}", "", f"![{name}]({path.relative_to(output_dir).as_posix()})", ""]
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(out))
    return path
