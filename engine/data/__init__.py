"""Training data: robust image folders, loaders, ImageNet-100 class list.

`from engine.data import build_dataset, build_loader, DataError` is the public surface. Image reading and the
official transforms belong to the model package (its API and CLI need them: kolmogorov_tokenizers.image_io,
.transforms); they are re-exported here for the data pipeline.
Names are imported lazily (PEP 562) so that light users (the demo-data generator, the ImageNet-100
script) do not pay for importing torch. The demo-data generator itself lives in `engine.demo_data`.
"""
from __future__ import annotations

import importlib

_IMAGE_IO = "kolmogorov_tokenizers.image_io"
_TRANSFORMS = "kolmogorov_tokenizers.transforms"
_EXPORTS = {
    "DataError": "errors", "EXPECTED_LAYOUT": "errors",
    "DATASET_KINDS": "folders", "ImageFileDataset": "folders", "ImageFolderDataset": "folders",
    "RobustImageDataset": "folders", "build_dataset": "folders", "detect_layout": "folders",
    "image_extensions": _IMAGE_IO, "is_image_file": _IMAGE_IO, "load_image": _IMAGE_IO,
    "open_rgb": _IMAGE_IO, "to_rgb": _IMAGE_IO,
    "SeededRandomSampler": "loader", "build_loader": "loader",
    "TRANSFORM_KINDS": _TRANSFORMS, "ResizeIfSmaller": _TRANSFORMS, "TransformConfig": _TRANSFORMS,
    "build_transform": _TRANSFORMS,
    "IMAGENET100_CLASSES": "imagenet100",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = getattr(importlib.import_module(module if "." in module else f"engine.data.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
