"""The whole evaluation: sections in order, then the files of the report.

fixed -> variable -> calibration (from variable) -> search (vs variable) -> complexity (fixed + variable +
compressors + optional out-of-distribution set). Sections can be skipped; one that needs a skipped one is
skipped too, and metrics.json says so.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .calibration import DEFAULT_OFFSETS, calibration_table
from .complexity import complexity_section, compressor_sizes, structure_vs_noise
from .fixed import FixedResults, default_fixed_budgets, evaluate_fixed, setting_name as fixed_name
from .perceptual_metrics import PerceptualMetrics
from .report import (
    plot_calibration,
    plot_fixed_l1,
    plot_grid,
    plot_token_histograms,
    plot_tokens_vs_png,
    write_metrics_json,
    write_per_image_csv,
    write_report_md,
)
from .runner import EvalData, GridSamples, grid_sample_ids, max_budget
from .search import compare_with_karl, default_search_budgets, search_min_budget
from .variable import DEFAULT_EPSILONS, VariableResults, evaluate_variable, setting_name as var_name

SECTIONS = ("fixed", "variable", "calibration", "search", "complexity")
NEEDS = {"calibration": ("variable",), "search": ("variable",), "complexity": ("variable",)}


@dataclass
class EvalSettings:
    """What to evaluate. None = the default derived from the model's budget N (see each field)."""

    fixed_budgets: Optional[Sequence[int]] = None  # default N/8 * k, k = 1..8 (official [32..256] for N=256)
    epsilons: Sequence[float] = DEFAULT_EPSILONS
    search_budgets: Optional[Sequence[int]] = None  # default N/16 * k, k = 1..16
    search_epsilons: Optional[Sequence[float]] = None  # default: the variable epsilons
    calibration_offsets: Sequence[float] = DEFAULT_OFFSETS
    skip: Sequence[str] = ()
    grid_images: int = 9  # one per family in turn: 9 shows every demo family
    meta: dict = field(default_factory=dict)  # extra facts for metrics.json (checkpoint, data, ...)


def _sections(skip: Sequence[str]) -> tuple[list[str], list[str]]:
    unknown = [s for s in skip if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) to skip: {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}")
    run, skipped = [], []
    for s in SECTIONS:
        if s in skip:
            skipped.append(f"{s}: skipped on request")
        elif any(n in skip for n in NEEDS.get(s, ())):
            skipped.append(f"{s}: skipped because it needs {', '.join(NEEDS[s])}")
        else:
            run.append(s)
    return run, skipped


def _check_budgets(budgets: Sequence[int], limit: int, what: str) -> list[int]:
    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1 or budgets[-1] > limit:
        raise ValueError(f"{what} must be integers in [1, {limit}] (the model's token budget N), got {budgets}")
    return budgets


def run_evaluation(
    model,
    data: EvalData,
    output_dir: str | Path,
    device: torch.device | str = "cpu",
    settings: Optional[EvalSettings] = None,
    perceptual: Optional[PerceptualMetrics] = None,
    ood_data: Optional[EvalData] = None,
    log=print,
) -> dict:
    """Runs the selected sections on `data`, writes every output file, returns the metrics dict."""
    settings = settings or EvalSettings()
    device = torch.device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    n_max = max_budget(model)
    sections, skipped = _sections(settings.skip)
    fixed_budgets = _check_budgets(settings.fixed_budgets or default_fixed_budgets(n_max), n_max, "fixed budgets")
    search_budgets = _check_budgets(settings.search_budgets or default_search_budgets(n_max), n_max,
                                    "search budgets")
    epsilons = [float(e) for e in settings.epsilons]
    if not epsilons:
        raise ValueError("give at least one epsilon")
    bins = getattr(getattr(model, "config", None), "epsilon_bins", None)
    largest = max(bins) if bins else 1.0  # the model's largest epsilon condition (METHOD.md s.3: 0.38)
    bad = [e for e in epsilons if not 0.0 <= e <= largest]
    if bad:
        raise ValueError(f"epsilons must be in [0, {largest:g}] (mean L1 error, images in [0, 1]), got {bad}")
    search_eps = [float(e) for e in (settings.search_epsilons or epsilons)]
    missing = [e for e in search_eps if e not in epsilons]
    if missing:
        raise ValueError(f"search epsilons {missing} must also be variable-allocation epsilons {epsilons}")
    if perceptual is None:
        perceptual = PerceptualMetrics(device, enabled=False)
    skipped += perceptual.skipped_lines()
    for line in perceptual.skipped_lines():
        log(line)

    grid = GridSamples(settings.grid_images, wanted=grid_sample_ids(data.metadata, settings.grid_images))
    metrics: dict = {}
    ids: list[str] = []
    columns: dict[str, list] = {}
    start = time.perf_counter()

    fixed: Optional[FixedResults] = None
    if "fixed" in sections:
        log(f"[fixed] budgets {fixed_budgets}, epsilon 0, {data.num_images} images")
        fixed = evaluate_fixed(model, data, fixed_budgets, device, perceptual, grid)
        metrics["fixed"] = fixed.summary(perceptual)
        ids = fixed.settings[fixed_budgets[0]].ids
        for b, s in fixed.settings.items():
            for m, values in s.per_image.items():
                columns[f"fixed_{b}_{m}"] = values

    variable: Optional[VariableResults] = None
    if "variable" in sections:
        log(f"[variable] budget {n_max}, epsilons {epsilons}")
        variable = evaluate_variable(model, data, epsilons, n_max, device, perceptual, grid)
        metrics["variable"] = variable.summary(perceptual)
        ids = ids or variable.settings[epsilons[0]].ids
        for e, s in variable.settings.items():
            for m, values in s.per_image.items():
                columns[f"eps_{e:g}_{m}"] = values

    if "calibration" in sections:
        metrics["calibration"] = calibration_table(
            {e: variable.settings[e].column("l1") for e in epsilons}, settings.calibration_offsets
        )

    if "search" in sections:
        step = search_budgets[1] - search_budgets[0] if len(search_budgets) > 1 else search_budgets[0]
        rows = {}
        for e in search_eps:
            log(f"[search] epsilon {e:g}: budgets {search_budgets}")
            result = search_min_budget(model, data, e, search_budgets, device)
            karl = variable.settings[e]
            rows[f"{e:g}"] = compare_with_karl(result, karl.column("tokens"), karl.seconds, step)
            columns[f"search_eps_{e:g}_tokens"] = result.tokens
            columns[f"search_eps_{e:g}_passes"] = result.passes
            columns[f"search_eps_{e:g}_met"] = [int(m) for m in result.met]
        metrics["search"] = {"budgets": search_budgets, "budget_step": step, "per_epsilon": rows}

    sizes: dict = {}
    if "complexity" in sections:
        log("[complexity] compressor sizes, structure vs noise, correlations")
        sizes = compressor_sizes(data)
        d = d_budgets = None
        if fixed is not None:
            small, full = fixed_budgets[0], fixed_budgets[-1]
            d = structure_vs_noise(fixed.settings[small].column("l1"), fixed.settings[full].column("l1"))
            d_budgets = (small, full)
            columns["d_structure"] = d.tolist()
        ood_tokens = None
        if ood_data is not None:
            log(f"[complexity] out-of-distribution set {ood_data.name}: epsilons {epsilons}")
            ood = evaluate_variable(model, ood_data, epsilons, n_max, device)
            ood_tokens = {e: ood.settings[e].column("tokens") for e in epsilons}
            metrics.setdefault("meta", {})["ood_num_images"] = len(ood.settings[epsilons[0]].ids)
        metrics["complexity"] = complexity_section(
            ids,
            {e: variable.settings[e].column("tokens") for e in epsilons},
            sizes,
            data.metadata,
            d,
            d_budgets,
            ood_tokens,
            ood_data.name if ood_data is not None else None,
        )
        for name in sorted({k for s in sizes.values() for k in s}):
            columns[name] = [sizes[i].get(name) for i in ids]

    # metadata columns first in the CSV (family, complexity_level, ...)
    meta_keys = sorted({k for m in data.metadata.values() for k in m if k not in ("file", "path", "filename", "image")})
    meta_columns = {k: [data.metadata.get(i, {}).get(k) for i in ids] for k in meta_keys}
    columns = {**meta_columns, **columns}

    metrics["meta"] = {
        **metrics.get("meta", {}),
        **settings.meta,
        "num_images": len(ids),
        "max_budget": n_max,
        "sections_run": sections,
        "skipped": skipped,
        "device": str(device),
        "seconds_total": time.perf_counter() - start,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "aggregation": "every aggregate is the mean over images of the per-image value (PSNR too; "
        "psnr_of_mean_l2 is the PSNR of the mean MSE); PSNR/L1/L2/SSIM use the reconstruction clamped to [0, 1]",
    }
    figures = _figures(metrics, fixed, variable, sizes, ids, grid, fixed_budgets, epsilons, n_max, output_dir)
    write_metrics_json(metrics, output_dir)
    write_per_image_csv(ids, columns, output_dir)
    write_report_md(metrics, figures, output_dir)
    return metrics


def _figures(metrics, fixed, variable, sizes, ids, grid, fixed_budgets, epsilons, n_max, output_dir) -> dict:
    figures: dict[str, Path] = {}
    if not ids:
        return figures
    plots = output_dir / "plots"
    plots.mkdir(exist_ok=True)
    if variable is not None:
        tokens = {e: variable.settings[e].column("tokens") for e in epsilons}
        figures["Token counts per epsilon"] = plot_token_histograms(tokens, n_max, plots / "token_histograms.png")
        if sizes:
            png = np.asarray([sizes[i]["png_bytes"] for i in ids], dtype=np.float64)
            figures["Tokens vs PNG size"] = plot_tokens_vs_png(tokens, png, plots / "tokens_vs_png.png")
        grid_path = plot_grid(grid, [var_name(e) for e in epsilons], plots / "grid_variable.png",
                              f"Variable allocation (budget {n_max}): originals and reconstructions per epsilon")
        if grid_path:
            figures["Reconstructions per epsilon"] = grid_path
    if "calibration" in metrics:
        figures["Calibration"] = plot_calibration(metrics["calibration"], plots / "calibration.png")
    if fixed is not None:
        figures["L1 vs tokens"] = plot_fixed_l1(metrics["fixed"], metrics.get("variable"), plots / "l1_vs_tokens.png")
        grid_path = plot_grid(grid, [fixed_name(b) for b in fixed_budgets], plots / "grid_fixed.png",
                              "Fixed allocation (epsilon 0): originals and reconstructions per budget")
        if grid_path:
            figures["Reconstructions per budget"] = grid_path
    return figures
