"""The official image transforms (METHOD.md sections 4 and 5): the preprocessing a KARL model expects (custom
images, validation) and the training augmentation. Outputs are float tensors in [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from kolmogorov_tokenizers.image_io import DataError

TRANSFORM_KINDS = ("train", "val", "custom")


@dataclass(frozen=True)
class TransformConfig:
    # METHOD.md section 4: RandomResizedCrop(256, scale 0.8-1) + horizontal flip; inputs in [0, 1].
    train_crop_scale: tuple[float, float] = (0.8, 1.0)
    hflip_prob: float = 0.5
    # Resampling of the val / custom resizes (the release: bicubic, METHOD.md section 5).
    interpolation: InterpolationMode = InterpolationMode.BICUBIC
    # Resampling of the training crop: the release's RandomResizedCrop uses torchvision's default, bilinear;
    # this project used bicubic (engine config data.train_interpolation).
    train_interpolation: InterpolationMode = InterpolationMode.BILINEAR


class ResizeIfSmaller:
    """Resize (shorter side -> size, bicubic, antialias) only when a side is below `size`.

    The official val preprocessing is CenterCrop(S) with no resize; torchvision would zero-pad images
    smaller than S, which corrupts metrics, so those (only those) are resized up first.
    """

    def __init__(self, size: int, interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> None:
        self.size = size
        self.resize = T.Resize(size, interpolation=interpolation, antialias=True)

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        return self.resize(img) if min(width, height) < self.size else img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def _check_input_size(input_size: int | None, allow_none: bool) -> None:
    if input_size is None and allow_none:
        return
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size <= 0:
        raise DataError(f"input_size must be a positive integer, got {input_size!r}")


def build_transform(kind: str, input_size: int | None, config: TransformConfig = TransformConfig()):
    """PIL RGB image -> (3, S, S) float tensor in [0, 1].

    kind="train":  RandomResizedCrop(S, scale=(0.8, 1), bilinear by default) + RandomHorizontalFlip + ToTensor.
    kind="val":    CenterCrop(S) of the image as is (official); images with a side < S are resized up first.
    kind="custom": Resize(S, bicubic, antialias) + CenterCrop(S); input_size=None keeps the image as is.
    """
    if kind not in TRANSFORM_KINDS:
        raise DataError(f"unknown transform kind {kind!r}; allowed: {', '.join(TRANSFORM_KINDS)}")
    _check_input_size(input_size, allow_none=(kind == "custom"))
    if kind == "train":
        steps = [
            T.RandomResizedCrop(input_size, scale=config.train_crop_scale, interpolation=config.train_interpolation),
            T.RandomHorizontalFlip(config.hflip_prob),
        ]
    elif kind == "val":
        steps = [ResizeIfSmaller(input_size, config.interpolation), T.CenterCrop(input_size)]
    elif input_size is None:
        steps = []
    else:
        steps = [T.Resize(input_size, interpolation=config.interpolation, antialias=True), T.CenterCrop(input_size)]
    return T.Compose([*steps, T.ToTensor()])  # ToTensor: uint8 HWC -> float CHW in [0, 1]
