"""Evaluation images: the data pipeline's datasets and transforms, read strictly.

The training datasets replace an unreadable file by the next readable one (an epoch must not stop). An
evaluation must not: a replaced image would be counted twice, silently. Here an unreadable file stops the
run with an error naming it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from engine.data import DataError, build_dataset, detect_layout, open_rgb
from engine.data.loader import worker_error_message
from kolmogorov_tokenizers.image_io import IMAGE_READ_ERRORS

from .runner import EvalBatch, EvalData

DATA_KINDS = ("auto", "val", "custom")
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.json")  # in the data folder or its parent


class EvaluationError(RuntimeError):
    """A problem with the user's input (paths, files, settings) that the evaluation reports and exits on."""


class _StrictImages(Dataset):
    """(path, transform) pairs -> (image, index); raises EvaluationError naming an unreadable file."""

    def __init__(self, dataset, resize_to: Optional[int] = None) -> None:
        self.paths = [Path(p) for p, _ in dataset.samples]
        self.transform = dataset.transform
        self.exif_transpose = dataset.exif_transpose
        self.resize_to = resize_to  # the shorter side the transform resizes to (custom images), for the guard

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            image = open_rgb(path, exif_transpose=self.exif_transpose, resize_to=self.resize_to)
        except DataError as err:
            raise EvaluationError(f"{err}; fix or remove it, or limit the evaluation with --max_images") from err
        except IMAGE_READ_ERRORS as err:
            raise EvaluationError(
                f"cannot read image {path} ({type(err).__name__}: {err}); fix or remove it, or limit the "
                "evaluation with --max_images"
            ) from err
        return self.transform(image), index


def resolve_kind(root: Path, kind: str) -> tuple[str, Optional[str]]:
    """-> (transform kind, split): 'val' reads root/val (CenterCrop, no resize), 'custom' a flat folder
    (Resize + CenterCrop). 'auto': val/ sub-folder -> val; flat folder -> custom; class sub-folders -> the
    folder itself read as a val split."""
    if kind not in DATA_KINDS:
        raise EvaluationError(f"unknown --data_kind {kind!r}; allowed: {', '.join(DATA_KINDS)}")
    if not root.is_dir():
        raise EvaluationError(f"data folder not found: {root}")
    if kind == "val":
        return "val", "val"
    if kind == "custom":
        return "custom", None
    if (root / "val").is_dir():
        return "val", "val"
    try:
        layout = detect_layout(root)
    except DataError as err:
        raise EvaluationError(str(err)) from err
    return ("custom", None) if layout == "flat" else ("val", "")


def load_metadata(image_paths: list[Path], base: Path) -> dict[str, dict]:
    """Per-image metadata of the demo generator (metadata.csv: path, family, complexity_level, params),
    found in the image folder or its parent; keyed by image id. Numeric generator parameters become
    `param_<name>` entries. {} when there is no metadata file."""
    for folder in (base, base.parent):
        for name in METADATA_FILES:
            path = folder / name
            if path.is_file():
                rows = _read_metadata(path)
                out = {}
                for image in image_paths:
                    row = rows.get(_relative(image, folder))
                    if row is not None:
                        out[_relative(image, base)] = row
                return out
    return {}


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _read_metadata(path: Path) -> dict[str, dict]:
    """path (relative to the metadata file's folder) -> row."""
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        elif path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            data = json.loads(path.read_text())
            rows = data.get("images", data) if isinstance(data, dict) else data
            if isinstance(rows, dict):  # {file: {...}}
                rows = [{"path": k, **v} for k, v in rows.items()]
    except (OSError, ValueError) as err:
        raise EvaluationError(f"cannot read the metadata file {path}: {err}") from err
    out = {}
    for row in rows:
        key = row.get("path") or row.get("file") or row.get("filename")
        if key is None:
            continue
        clean = {}
        for k, v in row.items():
            if k == "params":
                params = json.loads(v) if isinstance(v, str) and v else (v or {})
                clean.update({f"param_{p}": x for p, x in params.items()
                              if isinstance(x, (int, float)) and not isinstance(x, bool)})
            elif k not in ("path", "file", "filename", "split"):
                clean[k] = _number_or_text(v)
        out[Path(str(key)).as_posix()] = clean
    return out


def _number_or_text(v):
    if isinstance(v, str):
        if v == "":
            return None
        try:
            return int(v)
        except ValueError:
            pass
        try:
            return float(v)
        except ValueError:
            return v
    return v


def load_eval_data(
    root: str | Path,
    input_size: int,
    kind: str = "auto",
    batch_size: int = 16,
    max_images: Optional[int] = None,
    num_workers: int = 0,
    cache_mb: float = 1024.0,
) -> tuple[EvalData, str]:
    """-> (EvalData, resolved kind). Images are decoded once and kept in memory when they fit in cache_mb
    (every section streams over the same images several times)."""
    root = Path(root)
    if batch_size <= 0:
        raise EvaluationError(f"--batch_size must be positive, got {batch_size}")
    if max_images is not None and max_images <= 0:
        raise EvaluationError(f"--max_images must be positive, got {max_images}")
    tkind, split = resolve_kind(root, kind)
    try:
        if split == "":
            dataset = build_dataset(root.parent, root.name, input_size, kind=tkind)
            base = root
        else:
            dataset = build_dataset(root, split, input_size, kind=tkind)
            base = root / split if split else root
    except DataError as err:
        raise EvaluationError(str(err)) from err
    strict = _StrictImages(dataset, resize_to=input_size if tkind == "custom" else None)
    count = len(strict) if max_images is None else min(max_images, len(strict))
    if max_images is not None:
        strict.paths = strict.paths[:count]
    ids = [p.relative_to(base).as_posix() for p in strict.paths]
    meta_by_id = load_metadata(strict.paths, base)

    fits = count * 3 * input_size * input_size * 4 <= cache_mb * 2**20
    cache: list[EvalBatch] = []

    def batches() -> Iterator[EvalBatch]:
        if cache:
            yield from cache
            return
        loader = DataLoader(strict, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        fresh = []
        iterator = iter(loader)
        while True:
            try:
                images, index = next(iterator)
            except StopIteration:
                break
            except Exception as err:  # a worker's error arrives wrapped in its traceback: keep its one line
                message = worker_error_message(err)
                if message is None:
                    raise
                raise EvaluationError(message) from None
            batch = EvalBatch(images, [ids[i] for i in index.tolist()])
            if fits:
                fresh.append(batch)
            yield batch
        if fits:
            cache.extend(fresh)

    return EvalData(str(root), batches, count, meta_by_id), tkind
