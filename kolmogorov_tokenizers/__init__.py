"""KARL: single-pass adaptive image tokenization (arXiv 2507.07995).

    from kolmogorov_tokenizers import load_image, load_tokenizer
    model = load_tokenizer("demo")
    image = load_image("photo.jpg", model.config.input_size)  # (1, 3, S, S) in [0, 1]; the demo takes 64 px
    embedding, reconstruction, info = model.encode(image, desired_reconstruction_quality=0.05)

Names are imported on first use (PEP 562), so `kolmogorov_tokenizers.image_io` alone (the data tools use
it) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ActiveTokens": "karl", "EncodeResult": "karl", "PhaseOutput": "karl", "TrainOutput": "karl",
    "export_safetensors": "checkpoint", "load_release_state_dict": "checkpoint", "load_tokenizer": "checkpoint",
    "EPSILON_BINS": "config", "KARLConfig": "config",
    "KARLTokenizer": "karl",
    "create_model": "registry", "list_models": "registry", "register_model": "registry",
    "DataError": "image_io", "load_image": "image_io",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kolmogorov_tokenizers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kolmogorov_tokenizers.{_EXPORTS[name]}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
