"""Reading image files as 8-bit RGB, whatever their mode (grayscale, alpha, palette, CMYK, 16-bit).

The model's API and CLI read images with it; the training data (engine.data) and evaluation reuse it.
Decisions:
- Transparency is composited on WHITE (what a viewer shows on a white page), never dropped: a
  transparent pixel whose stored colour is black would otherwise turn into black.
- 16-bit samples (mode I;16*, I) are scaled with 65535 -> 255 (divide by 257, rounded); 32-bit float
  (mode F) is read as [0, 1] and clipped.
- EXIF orientation is applied only where asked (custom user photos); ImageNet loading keeps the stored
  orientation, as torchvision's ImageFolder (and so the release) does.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DataError(ValueError):
    """A data problem the user can fix (missing file or folder, wrong layout, unreadable image).

    Subclasses ValueError so callers that already catch ValueError for bad arguments keep working.
    """


# Errors PIL raises on corrupt, truncated or unsupported files. SyntaxError: some plugins raise it on a
# broken header; DecompressionBombError is a subclass of Exception raised on absurd sizes.
IMAGE_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes truncated files ("image file is truncated") and missing files
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)

_WHITE = (255, 255, 255)


# Formats PIL registers but only identifies (stub plugins without a decoder here): not images to us.
_STUB_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF"})


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) of every format this PIL build can decode."""
    registered = Image.registered_extensions()  # {".png": "PNG", ...}
    return frozenset(ext.lower() for ext, fmt in registered.items()
                     if fmt in Image.OPEN and fmt not in _STUB_FORMATS)


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in image_extensions()


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        gray8 = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    else:  # I;16, I;16L, I;16B, I;16N, I (32-bit ints holding 16-bit data, e.g. old PNG decoders)
        values = np.asarray(img).astype(np.int64)
        gray8 = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray8, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        # A palette image may carry transparency (a tRNS entry); go through RGBA only then.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        return _composite_on_white(img) if img.mode == "RGBA" else img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img.convert("RGBA"))
    if mode == "L" and "transparency" in img.info:
        return _composite_on_white(img.convert("RGBA"))
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_rgb(img)
    # L, 1, CMYK, YCbCr, LAB, HSV, RGBX: PIL's own conversions are correct for these.
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise DataError(f"cannot convert an image of mode {mode!r} to RGB: {err}") from err


# Resize(S) scales the SHORTER side to S, so a thin image grows along its long side: a 318-byte 1 x 60000
# PNG becomes 256 x 15,360,000 (about 1 GB of float tensors) although PIL's decompression guard, which
# counts decoded pixels, lets its 60,000 pixels through. The resized size is checked from the header,
# before anything is decoded: 8 megapixels (96 MiB as float32 RGB) allows aspect ratios up to 128:1 at
# 256 px, 32:1 at 512 px.
MAX_RESIZED_PIXELS = 8 * 2**20


def check_resize_budget(size: tuple[int, int], resize_to: int, path: str | Path) -> None:
    """Raise DataError when resizing a (width, height) image's shorter side to `resize_to` would exceed
    MAX_RESIZED_PIXELS, whatever its aspect ratio."""
    w, h = size
    if w <= 0 or h <= 0:
        raise DataError(f"cannot read image {path}: its header says {w}x{h} pixels")
    scale = resize_to / min(w, h)
    rw, rh = max(resize_to, round(w * scale)), max(resize_to, round(h * scale))
    if rw * rh > MAX_RESIZED_PIXELS:
        raise DataError(f"image {path} is {w}x{h} pixels (aspect ratio {max(w, h) / min(w, h):.0f}:1): resizing "
                        f"its shorter side to {resize_to} would make {rw}x{rh} = {rw * rh / 1e6:.0f} megapixels; "
                        f"crop it to a less extreme aspect ratio (at most "
                        f"{MAX_RESIZED_PIXELS // (resize_to * resize_to)}:1 at {resize_to} px)")


def open_rgb(path: str | Path, exif_transpose: bool = False, resize_to: int | None = None) -> Image.Image:
    """Fully decode `path` and return it as RGB. Raises the underlying PIL/OS error on a bad file.
    resize_to: the shorter side it will be resized to; an image that would grow too large is refused
    (DataError) from its header, before decoding."""
    with Image.open(path) as img:
        if resize_to is not None:
            check_resize_budget(img.size, resize_to, path)
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        img.load()  # decode now, inside the caller's error handling (PIL decodes lazily)
        return to_rgb(img)


def load_image(path: str | Path, input_size: int | None = 256):
    """Read one user image for the API/CLI: (1, 3, S, S) float tensor in [0, 1].

    Preprocessing is the official one for custom images (Resize(S, bicubic, antialias) + CenterCrop(S));
    `input_size=None` keeps the image size. Raises DataError naming the path when it cannot be read.
    """
    from kolmogorov_tokenizers.transforms import build_transform  # local: keeps this module free of torchvision

    path = Path(path)
    if not path.exists():
        raise DataError(f"image not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path} (expected an image file such as .png or .jpg)")
    try:
        img = open_rgb(path, exif_transpose=True, resize_to=input_size)
    except DataError:
        raise
    except IMAGE_READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    transform = build_transform("custom", input_size)
    return transform(img).unsqueeze(0)  # (1, 3, S, S)
