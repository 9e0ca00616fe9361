"""Real photographs available offline: bundled in scikit-image, scikit-learn and matplotlib, plus
Debian wallpapers when installed. Crops of them make the "photo" family of the demo data.

The validation split uses its own source photographs (VAL_PHOTO_SOURCES), disjoint from training's,
so that validation numbers measure generalisation to unseen photos.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from kolmogorov_tokenizers.image_io import IMAGE_READ_ERRORS, open_rgb

PhotoLoader = Callable[[], np.ndarray]  # () -> uint8 (H, W, 3)

# Folders Debian packages install wallpapers into (lomiri-wallpapers, mate-backgrounds, plasma...).
SYSTEM_PHOTO_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
MAX_SYSTEM_PHOTOS = 64
MIN_SYSTEM_PHOTO_SIDE = 512  # smaller files are icons or thumbnails
SYSTEM_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def _skimage(name: str) -> PhotoLoader:
    def load() -> np.ndarray:
        import skimage.data

        if name.startswith("motorcycle_"):  # a stereo pair: (left, right, disparity)
            left, right, _ = skimage.data.stereo_motorcycle()
            return _rgb(left if name.endswith("left") else right)
        return _rgb(getattr(skimage.data, name)())

    return load


def _sklearn(filename: str) -> PhotoLoader:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(filename))

    return load


def _matplotlib(filename: str) -> PhotoLoader:
    def load() -> np.ndarray:
        from matplotlib import cbook

        return _rgb(np.asarray(open_rgb(cbook.get_sample_data(filename, asfileobj=False))))

    return load


# Name -> loader. The motorcycle pair shows one scene, so both halves sit on the same side of the split.
BUNDLED_PHOTOS: dict[str, PhotoLoader] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle_left": _skimage("motorcycle_left"),
    "motorcycle_right": _skimage("motorcycle_right"),
    "camera": _skimage("camera"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "moon": _skimage("moon"),
    "coins": _skimage("coins"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}
# Three colour photos and one grayscale texture, different in kind from each other.
VAL_PHOTO_SOURCES = ("coffee", "rocket", "flower", "gravel")


def _load_file(path: Path) -> PhotoLoader:
    def load() -> np.ndarray:
        return np.asarray(open_rgb(path))

    return load


def find_system_photos(dirs: tuple[Path, ...] = SYSTEM_PHOTO_DIRS) -> dict[str, PhotoLoader]:
    """Wallpaper photographs installed on this machine (optional; empty when none)."""
    found: dict[str, PhotoLoader] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if len(found) >= MAX_SYSTEM_PHOTOS:
                return found
            if path.suffix.lower() not in SYSTEM_PHOTO_EXTENSIONS or not path.is_file():
                continue
            try:
                with Image.open(path) as img:
                    if min(img.size) < MIN_SYSTEM_PHOTO_SIDE:
                        continue
            except IMAGE_READ_ERRORS:
                continue
            found[f"system:{path}"] = _load_file(path)
    return found


def photo_sources(split: str, use_system_photos: bool = True) -> dict[str, PhotoLoader]:
    """Loaders of the source photographs of `split`; system wallpapers go to train only (so val is the
    same on every machine)."""
    if split == "val":
        return {name: BUNDLED_PHOTOS[name] for name in VAL_PHOTO_SOURCES}
    train = {name: loader for name, loader in BUNDLED_PHOTOS.items() if name not in VAL_PHOTO_SOURCES}
    if use_system_photos:
        train.update(find_system_photos())
    return train


def random_crop(photo: np.ndarray, rng: np.random.Generator, resolution: int) -> tuple[np.ndarray, dict]:
    """A square crop of random size and position (log-uniform side), resized to (R, R) with bicubic
    antialiasing."""
    height, width = photo.shape[:2]
    short = min(height, width)
    low = min(resolution, short)
    high = max(low, int(short * 0.8))
    side = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    if side != resolution:
        crop = crop.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(crop), {"box": [left, top, side, side]}
