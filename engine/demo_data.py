"""The embedded demo dataset: procedural families of known complexity + crops of bundled photographs.

Writes an ImageFolder `<out>/{train,val}/<family>/<family>_<index>.png`, `metadata.csv` (one row per
image: split, path, family, source, complexity_level, params) and `demo_config.json` (the settings; a
rerun with the same settings does nothing). Every image has its own RNG seeded by
(seed, split, family, index), so the output is identical for a seed and each image is independent of
how many others are generated.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.errors import DataError
from engine.data.photos import photo_sources, random_crop
from engine.data.procedural import FAMILIES, render

GENERATOR_VERSION = 1  # bump when the images a seed produces change
SPLITS = ("train", "val")
PHOTO_FAMILY = "photo"
METADATA_FILE = "metadata.csv"
CONFIG_FILE = "demo_config.json"
METADATA_COLUMNS = ("split", "path", "family", "source", "complexity_level", "params")


def _default_family_weights() -> dict[str, float]:
    # Photos get 3 shares: they are the only natural images, and what a tokenizer is finally for.
    return {**{family: 1.0 for family in FAMILIES}, PHOTO_FAMILY: 3.0}


@dataclass
class DemoDataConfig:
    resolution: int = 64
    num_train: int = 4000
    num_val: int = 400
    seed: int = 0
    use_system_photos: bool = True  # Debian wallpapers under /usr/share/{backgrounds,wallpapers}, train only
    family_weights: dict[str, float] = field(default_factory=_default_family_weights)

    def validate(self) -> None:
        if self.resolution < 8:
            raise DataError(f"resolution must be >= 8 pixels, got {self.resolution}")
        if self.num_train < 0 or self.num_val < 0:
            raise DataError(f"image counts must be >= 0, got num_train={self.num_train} num_val={self.num_val}")
        if self.num_train + self.num_val == 0:
            raise DataError("nothing to generate: num_train and num_val are both 0")
        unknown = set(self.family_weights) - set(FAMILIES) - {PHOTO_FAMILY}
        if unknown:
            raise DataError(f"unknown families {sorted(unknown)}; allowed: {', '.join([*FAMILIES, PHOTO_FAMILY])}")
        if any(w < 0 for w in self.family_weights.values()) or sum(self.family_weights.values()) <= 0:
            raise DataError(f"family weights must be >= 0 with a positive sum, got {self.family_weights}")


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` images over families in proportion to weights (largest remainder; exact total)."""
    names = [name for name, w in weights.items() if w > 0]
    wsum = sum(weights[name] for name in names)
    exact = {name: total * weights[name] / wsum for name in names}
    counts = {name: int(exact[name]) for name in names}
    by_remainder = sorted(names, key=lambda name: (counts[name] - exact[name], names.index(name)))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def _image_rng(seed: int, split: str, family: str, index: int) -> np.random.Generator:
    family_id = [*FAMILIES, PHOTO_FAMILY].index(family)
    return np.random.default_rng([seed, SPLITS.index(split), family_id, index])


def _generate_split(out: Path, split: str, count: int, config: DemoDataConfig) -> list[dict]:
    rows: list[dict] = []
    photos = photo_sources(split, config.use_system_photos)
    photo_names = sorted(photos)
    photo_cache: dict[str, np.ndarray] = {}
    for family, n in allocate(count, config.family_weights).items():
        folder = out / split / family
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(n):
            rng = _image_rng(config.seed, split, family, index)
            if family == PHOTO_FAMILY:
                source = photo_names[int(rng.integers(len(photo_names)))]
                if source not in photo_cache:
                    photo_cache[source] = photos[source]()
                image, params = random_crop(photo_cache[source], rng, config.resolution)
                complexity = ""  # unknown a priori for a photograph
            else:
                source = "procedural"
                image, params, complexity = render(family, rng, config.resolution, float(rng.uniform(0, 1)))
            relative = f"{split}/{family}/{family}_{index:05d}.png"
            Image.fromarray(image, mode="RGB").save(out / relative, format="PNG")
            rows.append({"split": split, "path": relative, "family": family, "source": source,
                         "complexity_level": complexity, "params": json.dumps(params, sort_keys=True)})
    return rows


def _config_record(config: DemoDataConfig) -> dict:
    return {"generator_version": GENERATOR_VERSION, **asdict(config)}


def generate_demo_dataset(output_dir: str | Path, config: DemoDataConfig = DemoDataConfig(),
                          overwrite: bool = False) -> dict:
    """Write the demo dataset to `output_dir`; returns a summary (counts, seconds, skipped).

    Up to date (same settings already there): nothing is written. Different settings: DataError unless
    overwrite=True. A non-empty folder that is not a demo dataset is never touched. The dataset is built
    in a sibling temporary folder and renamed into place, so an interrupted run leaves no half dataset.
    """
    config.validate()
    out = Path(output_dir).absolute()
    record = _config_record(config)
    if out.exists():
        existing = out / CONFIG_FILE
        if existing.is_file():
            if json.loads(existing.read_text()) == record:
                return {"output_dir": str(out), "skipped": True, "num_images": count_images(out)}
            if not overwrite:
                raise DataError(f"{out} holds a demo dataset made with other settings; pass overwrite "
                                f"(--overwrite) to replace it, or choose another output folder")
        elif not out.is_dir() or any(out.iterdir()):
            raise DataError(f"{out} exists and is not a demo dataset (no {CONFIG_FILE}); refusing to write there")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        rows = [row for split, n in zip(SPLITS, (config.num_train, config.num_val))
                for row in _generate_split(tmp, split, n, config)]
        with open(tmp / METADATA_FILE, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)  # only reached for an empty folder or a demo dataset being overwritten
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    families: dict[str, dict[str, int]] = {split: {} for split in SPLITS}  # split -> family -> count
    for row in rows:
        per_split = families[row["split"]]
        per_split[row["family"]] = per_split.get(row["family"], 0) + 1
    return {"output_dir": str(out), "skipped": False, "num_images": len(rows),
            "num_train": config.num_train, "num_val": config.num_val, "families": families,
            "seconds": time.perf_counter() - start}


def count_images(root: Path) -> int:
    return sum(1 for _ in Path(root).glob("*/*/*.png"))


def read_metadata(root: str | Path) -> list[dict]:
    """Rows of metadata.csv; complexity_level as float (None for photos), params as a dict."""
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        raise DataError(f"no {METADATA_FILE} in {root} (generate it with run_scripts/prepare_demo_data.py)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["complexity_level"] = float(row["complexity_level"]) if row["complexity_level"] else None
        row["params"] = json.loads(row["params"])
    return rows
