"""Complexity analysis (the paper's AIT study), on any folder of images.

- structure vs noise: d = L1(small budget) - L1(full budget) per image (METHOD.md section 6: ~0 for
  noise, which no budget explains; large for structured images, which more tokens explain better);
- in- vs out-of-distribution: mean KARL token count per epsilon on each set;
- Spearman rank correlation of KARL's token count with the demo generator's complexity parameters (when
  the data has a metadata file) and with standard compressors' output sizes (PNG, JPEG q75, WebP);
- per-family means (demo data).
"""
from __future__ import annotations

import io
from collections import defaultdict
from typing import Optional

import numpy as np
import torch
from PIL import Image, features

from kolmogorov_tokenizers.metrics import spearman

from .runner import EvalData

JPEG_QUALITY = 75
PNG_COMPRESS_LEVEL = 9  # PIL's maximum zlib level, plus optimize=True


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> 8-bit RGB image (what the model saw, rounded to 8 bits)."""
    arr = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def compressed_sizes(image: torch.Tensor) -> dict[str, int]:
    """Bytes of the image under standard compressors: PNG (max compression), JPEG q75, lossless WebP."""
    pil = _to_pil(image)
    sizes = {}
    for name, fmt, kwargs in (
        ("png_bytes", "PNG", {"optimize": True, "compress_level": PNG_COMPRESS_LEVEL}),
        ("jpeg_bytes", "JPEG", {"quality": JPEG_QUALITY}),
        ("webp_bytes", "WEBP", {"lossless": True, "method": 6}),
    ):
        if fmt == "WEBP" and not features.check("webp"):
            continue  # this PIL build has no WebP encoder
        buffer = io.BytesIO()
        pil.save(buffer, format=fmt, **kwargs)
        sizes[name] = buffer.tell()
    return sizes


def compressor_sizes(data: EvalData) -> dict[str, dict[str, int]]:
    """image id -> compressed sizes, in one pass over the data."""
    out = {}
    for batch in data.batches():
        for image, image_id in zip(batch.images, batch.ids):
            out[image_id] = compressed_sizes(image)
    return out


def structure_vs_noise(l1_small: np.ndarray, l1_full: np.ndarray) -> np.ndarray:
    """d = L1(small budget) - L1(full budget) per image. (num_images,) -> (num_images,)."""
    return np.asarray(l1_small, dtype=np.float64) - np.asarray(l1_full, dtype=np.float64)


def _numeric_metadata_keys(metadata: dict[str, dict]) -> list[str]:
    keys = set()
    for row in metadata.values():
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.add(k)
    return sorted(keys)


def complexity_section(
    ids: list[str],
    tokens_by_epsilon: dict[float, np.ndarray],
    sizes: dict[str, dict[str, int]],
    metadata: dict[str, dict],
    d: Optional[np.ndarray] = None,
    d_budgets: Optional[tuple[int, int]] = None,
    ood_tokens_by_epsilon: Optional[dict[float, np.ndarray]] = None,
    ood_name: Optional[str] = None,
) -> dict:
    """Everything of the complexity analysis as a JSON-ready dict. Arrays are in the order of `ids`."""
    section: dict = {}
    if d is not None:
        section["structure_vs_noise"] = {
            "definition": "d = L1(small budget) - L1(full budget), per image",
            "small_budget": d_budgets[0] if d_budgets else None,
            "full_budget": d_budgets[1] if d_budgets else None,
            "mean_d": float(np.mean(d)),
            "min_d": float(np.min(d)),
            "max_d": float(np.max(d)),
        }

    # correlations of KARL's token count with compressor sizes and generator parameters
    correlations: dict = {}
    size_names = sorted({k for s in sizes.values() for k in s})
    meta_keys = _numeric_metadata_keys({i: metadata[i] for i in ids if i in metadata})
    for eps, tokens in tokens_by_epsilon.items():
        row = {}
        for name in size_names:
            row[name] = spearman(tokens, [sizes[i][name] for i in ids])
        for key in meta_keys:
            keep = [j for j, i in enumerate(ids) if isinstance(metadata.get(i, {}).get(key), (int, float))]
            row[key] = spearman(np.asarray(tokens)[keep], [metadata[ids[j]][key] for j in keep])
        if d is not None:
            row["d_structure"] = spearman(tokens, d)
        correlations[f"{eps:g}"] = row
    section["spearman_tokens_vs"] = correlations
    # reference: how well the compressors themselves track the generator's complexity parameters
    section["spearman_compressors_vs_metadata"] = {
        name: {
            key: spearman([sizes[ids[j]][name] for j in keep], [metadata[ids[j]][key] for j in keep])
            for key in meta_keys
            for keep in [[j for j, i in enumerate(ids) if isinstance(metadata.get(i, {}).get(key), (int, float))]]
        }
        for name in size_names
    } if meta_keys else {}

    # in- vs out-of-distribution
    dist = {"in_distribution": {f"{e:g}": float(np.mean(t)) for e, t in tokens_by_epsilon.items()}}
    if ood_tokens_by_epsilon is not None:
        dist["out_of_distribution"] = {f"{e:g}": float(np.mean(t)) for e, t in ood_tokens_by_epsilon.items()}
        dist["out_of_distribution_data"] = ood_name
    section["mean_tokens_by_distribution"] = dist

    # per-family means (demo data's metadata)
    families: dict[str, list[int]] = defaultdict(list)
    for j, i in enumerate(ids):
        family = metadata.get(i, {}).get("family")
        if family is not None:
            families[str(family)].append(j)
    table = {}
    for family, rows in sorted(families.items()):
        entry: dict = {"count": len(rows)}
        for eps, tokens in tokens_by_epsilon.items():
            entry[f"mean_tokens_eps_{eps:g}"] = float(np.mean(np.asarray(tokens)[rows]))
        for name in size_names:
            entry[f"mean_{name}"] = float(np.mean([sizes[ids[j]][name] for j in rows]))
        for key in meta_keys:
            vals = [metadata[ids[j]].get(key) for j in rows if isinstance(metadata[ids[j]].get(key), (int, float))]
            if vals:  # generator parameters differ between families: only those this family has
                entry[f"mean_{key}"] = float(np.mean(vals))
        if d is not None:
            entry["mean_d_structure"] = float(np.mean(np.asarray(d)[rows]))
        table[family] = entry
    section["per_family"] = table
    section["compressors"] = {
        "png": f"PIL, optimize=True, compress_level={PNG_COMPRESS_LEVEL}",
        "jpeg": f"PIL, quality={JPEG_QUALITY}",
        "webp": "PIL, lossless, method=6" if "webp_bytes" in size_names else "not supported by this PIL build",
    }
    return section
