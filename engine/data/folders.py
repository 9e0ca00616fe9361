"""Image datasets that survive bad files: an ImageFolder (`<split>/<class>/<image>`) and a flat folder.

A file that cannot be decoded (corrupt, truncated, unsupported) never stops an epoch: the sample is
replaced by the next readable index, a warning names the file (once per file and process), and
`num_replaced` counts the replacements across DataLoader workers.
"""
from __future__ import annotations

import logging
import multiprocessing
from multiprocessing import context as mp_context
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from engine.data.errors import EXPECTED_LAYOUT, DataError
from kolmogorov_tokenizers.image_io import IMAGE_READ_ERRORS, is_image_file, open_rgb
from kolmogorov_tokenizers.transforms import TransformConfig, build_transform

logger = logging.getLogger(__name__)

DATASET_KINDS = ("train", "val", "custom")


class RobustImageDataset(Dataset):
    """Base class: `samples` is a list of (path, target); __getitem__ returns (transform(image), target)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable | None, exif_transpose: bool) -> None:
        self.samples = samples
        self.transform = transform
        self.exif_transpose = exif_transpose
        self.bad_files: set[Path] = set()  # files found unreadable in THIS process
        # Shared with forked / spawned DataLoader workers so the main process sees every replacement.
        # Where shared memory is unavailable (some sandboxes) counts stay per process.
        self._local_replaced = 0
        try:
            self._replaced = multiprocessing.Value("q", 0)
        except OSError:
            self._replaced = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_replaced(self) -> int:
        """How many samples were served by another index because their file was unreadable."""
        return int(self._replaced.value) if self._replaced is not None else self._local_replaced

    def _count_replacement(self) -> None:
        if self._replaced is not None:
            with self._replaced.get_lock():
                self._replaced.value += 1
        else:
            self._local_replaced += 1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # A shared counter can only travel to a worker being started; a plain pickle/deepcopy keeps a
        # private counter instead.
        if mp_context.get_spawning_popen() is None:
            state["_local_replaced"] = self.num_replaced
            state["_replaced"] = None
        return state

    def _read(self, index: int):
        path, target = self.samples[index]
        if path in self.bad_files:
            return None
        try:
            image = open_rgb(path, exif_transpose=self.exif_transpose)
        except IMAGE_READ_ERRORS as err:
            self.bad_files.add(path)
            logger.warning("skipping unreadable image %s (%s: %s); it is replaced by the next readable "
                           "sample (%d unreadable file(s) seen in this process)",
                           path, type(err).__name__, err, len(self.bad_files))
            return None
        return (self.transform(image) if self.transform is not None else image), target

    def __getitem__(self, index: int):
        n = len(self.samples)
        for offset in range(n):
            item = self._read((index + offset) % n)
            if item is not None:
                if offset:
                    self._count_replacement()
                return item
        raise DataError(f"none of the {n} image files of this dataset could be read "
                        f"(first: {self.samples[0][0]})")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


class ImageFolderDataset(RobustImageDataset):
    """`root/<class>/<image>` (torchvision ImageFolder layout); targets are sorted-class indices."""

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root} (expected layout {EXPECTED_LAYOUT})")
        self.root = root
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DataError(f"no class folders in {root} (expected layout {EXPECTED_LAYOUT})")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        samples = [(path, self.class_to_idx[name]) for name in self.classes for path in _list_images(root / name)]
        if not samples:
            raise DataError(f"no image files in the class folders of {root} "
                            f"(expected layout {EXPECTED_LAYOUT})")
        super().__init__(samples, transform, exif_transpose=False)

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]


class ImageFileDataset(RobustImageDataset):
    """A flat folder of custom images (any format PIL opens); target = position in sorted order."""

    def __init__(self, folder: str | Path, transform: Callable | None = None) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"image folder not found: {folder} (expected a folder of image files)")
        paths = _list_images(folder)
        if not paths:
            raise DataError(f"no image files in {folder} (expected a flat folder of .png/.jpg/... files)")
        self.root = folder
        super().__init__([(p, i) for i, p in enumerate(paths)], transform, exif_transpose=True)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]


def detect_layout(path: str | Path) -> str:
    """'imagefolder' when `path` holds class sub-folders with images, 'flat' when it holds images."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"folder not found: {path}")
    if any(is_image_file(p) for p in path.iterdir()):
        return "flat"
    for sub in path.iterdir():
        if sub.is_dir() and any(is_image_file(p) for p in sub.iterdir()):
            return "imagefolder"
    raise DataError(f"no images in {path} nor in its sub-folders (expected {EXPECTED_LAYOUT} "
                    "or a flat folder of images)")


def build_dataset(root: str | Path, split: str | None, input_size: int | None, kind: str | None = None,
                  train_interpolation: str = "bilinear"):
    """The dataset for one split with its official transform.

    root/split must be an ImageFolder for kind "train" / "val" (e.g. build_dataset(root, "train", 256)).
    kind "custom" reads a flat folder of images (root/split, or root itself when split is None).
    kind=None picks "train" for split "train" and "val" otherwise.
    train_interpolation: resampling of the training crop, "bilinear" (the release) or "bicubic".
    """
    if kind is None:
        kind = "train" if split == "train" else "val"
    if kind not in DATASET_KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; allowed: {', '.join(DATASET_KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root not found: {root} (expected layout {EXPECTED_LAYOUT})")
    folder = root / split if split else root
    if train_interpolation not in ("bilinear", "bicubic"):
        raise DataError(f"train_interpolation must be 'bilinear' or 'bicubic', got {train_interpolation!r}")
    config = TransformConfig(train_interpolation=InterpolationMode(train_interpolation))
    transform = build_transform(kind, input_size, config)
    if kind == "custom":
        return ImageFileDataset(folder, transform)
    if split is None:
        raise DataError(f"kind {kind!r} needs a split ('train' or 'val'): layout {EXPECTED_LAYOUT}")
    return ImageFolderDataset(folder, transform)
