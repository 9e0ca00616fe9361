"""Data pipeline: official transforms, robust image folders, loaders, ImageNet-100 class list.

`from engine.data import build_dataset, build_loader, load_image, DataError` is the public surface.
Names are imported lazily (PEP 562) so that light users (the demo-data generator, the ImageNet-100
script) do not pay for importing torch. The demo-data generator itself lives in `engine.demo_data`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "errors", "EXPECTED_LAYOUT": "errors",
    "DATASET_KINDS": "folders", "ImageFileDataset": "folders", "ImageFolderDataset": "folders",
    "RobustImageDataset": "folders", "build_dataset": "folders", "detect_layout": "folders",
    "image_extensions": "image_io", "is_image_file": "image_io", "load_image": "image_io",
    "open_rgb": "image_io", "to_rgb": "image_io",
    "SeededRandomSampler": "loader", "build_loader": "loader",
    "TRANSFORM_KINDS": "transforms", "ResizeIfSmaller": "transforms", "TransformConfig": "transforms",
    "build_transform": "transforms",
    "IMAGENET100_CLASSES": "imagenet100",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"engine.data.{_EXPORTS[name]}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
