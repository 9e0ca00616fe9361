"""Draw the README's figure: held-out demo images, one per family, encoded by a KARL model at several
epsilons, each reconstruction titled with its token count and L1.

    python -m research.readme_figure                      # the shipped demo model -> assets/demo_adaptive_tokens.png
    python -m research.readme_figure --checkpoint PATH --output out.png --epsilons 0.03 0.09

The images are the first val image of each family in `--data_path` (the demo data, built by
run_scripts/prepare_demo_data.py or the quickstart).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]

FAMILIES = ["flat", "gradient", "stripes", "shapes", "photo", "fractal", "texture", "noise"]  # simple -> complex


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="demo", help='"demo" (the shipped model) or a KARL checkpoint path')
    p.add_argument("--data_path", type=Path, default=REPO_ROOT / "datasets" / "demo",
                   help="demo data folder with metadata.csv")
    p.add_argument("--output", type=Path, default=REPO_ROOT / "assets" / "demo_adaptive_tokens.png")
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.03, 0.05, 0.09])
    p.add_argument("--families", nargs="+", default=FAMILIES, help="one column per family, in this order")
    return p.parse_args(argv)


def first_val_image_per_family(data_path: Path, families: List[str]) -> List[Path]:
    metadata = data_path / "metadata.csv"
    if not metadata.is_file():
        raise SystemExit(f"error: {metadata} not found; build the demo data with "
                         "`python run_scripts/prepare_demo_data.py` (or run the quickstart)")
    with metadata.open(newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "val"), key=lambda r: r["path"])
    paths = []
    for family in families:
        match = [r["path"] for r in rows if r["family"] == family]
        if not match:
            raise SystemExit(f"error: no val image of family {family!r} in {metadata}")
        paths.append(data_path / match[0])
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from kolmogorov_tokenizers import load_image, load_tokenizer
    from kolmogorov_tokenizers.metrics import l1_per_image

    paths = first_val_image_per_family(args.data_path, args.families)
    model = load_tokenizer(args.checkpoint)
    size = model.config.input_size
    images = torch.cat([load_image(p, size) for p in paths])  # (F, 3, S, S) in [0, 1]
    rows = [("original", images, None, None)]
    for eps in args.epsilons:
        _, recon, info = model.encode(images, desired_reconstruction_quality=eps)  # recon already in [0, 1]
        rows.append((f"eps {eps:g}", recon, info["num_tokens"], l1_per_image(recon, images)))

    fig, axes = plt.subplots(len(rows), len(paths), figsize=(1.6 * len(paths), 1.75 * len(rows)), squeeze=False)
    for r, (label, pictures, tokens, l1) in enumerate(rows):
        for c, family in enumerate(args.families):
            ax = axes[r, c]
            ax.imshow(pictures[c].permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(family if tokens is None else f"{int(tokens[c])} tok, L1 {l1[c]:.3f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{model.config.model_name}: tokens out of {model.ltc_budget} per image and epsilon", fontsize=9)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=80)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
