"""Named KARL presets (timm-style): `create_model("karl_small", base_tokenizer="vae")`, `list_models()`.

A preset is a function returning KARLConfig field values; `create_model` adds the base tokenizer,
quantisation, input size and any overrides, and builds the model.
Sizes (METHOD.md s.2): `karl_small` = the released model (width 1024, 8 + 8 layers, 8 heads). The scaling
study's sizes are named here by encoder/decoder size, S = (width 512, 8 layers, 8 heads),
B = (768, 12, 12), L = (1024, 16, 16): `karl_s`, `karl_b`, `karl_l` (same size both sides) and the
small-encoder + large-decoder mixes `karl_enc_s_dec_b`, `karl_enc_s_dec_l`, `karl_enc_b_dec_l`.
`karl_demo` is the CPU preset for 64-px images on the demo base tokenizers (8 x 8 grid).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from base_tokenizers.base import BaseTokenizer
from kolmogorov_tokenizers.config import KARLConfig
from kolmogorov_tokenizers.karl import KARLTokenizer

_MODELS: Dict[str, Callable[[], Dict[str, Any]]] = {}


def register_model(fn: Callable[[], Dict[str, Any]]) -> Callable[[], Dict[str, Any]]:
    """Register a preset under its function name; it returns KARLConfig field values."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    return sorted(_MODELS)


def preset_config(name: str) -> Dict[str, Any]:
    if name not in _MODELS:
        raise ValueError(f"unknown KARL model {name!r}; available: {', '.join(list_models())}")
    return dict(_MODELS[name](), model_name=name)


_SIZES = {"s": (512, 8, 8), "b": (768, 12, 12), "l": (1024, 16, 16)}  # (width, layers, heads)


def _sizes(enc: tuple, dec: tuple) -> Dict[str, Any]:
    return dict(encoder_width=enc[0], encoder_layers=enc[1], encoder_heads=enc[2],
                decoder_width=dec[0], decoder_layers=dec[1], decoder_heads=dec[2])


@register_model
def karl_small() -> Dict[str, Any]:
    return dict(_sizes((1024, 8, 8), (1024, 8, 8)), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_s() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["s"], _SIZES["s"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_b() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["b"], _SIZES["b"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_l() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["l"], _SIZES["l"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_enc_s_dec_b() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["s"], _SIZES["b"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_enc_s_dec_l() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["s"], _SIZES["l"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_enc_b_dec_l() -> Dict[str, Any]:
    return dict(_sizes(_SIZES["b"], _SIZES["l"]), base_tokenizer="vqgan", input_size=256, bank_size=512)


@register_model
def karl_demo() -> Dict[str, Any]:
    # 64 px on a f8 demo base (patch_vae_demo: the CPU-trainable one; vqgan_demo / vae_demo also fit):
    # 8 x 8 = 64 2D tokens, budget step 4, EIC budgets 4..92, LTC budget 64.
    return dict(_sizes((128, 2, 4), (128, 2, 4)), base_tokenizer="patch_vae_demo", input_size=64, bank_size=128,
                pos_embed_size=16)


def create_model(name: str, base_tokenizer: Union[str, BaseTokenizer, None] = None,
                 base_tokenizer_ckpt: Optional[Union[str, Path]] = None, quantize_latent: bool = False,
                 factorize_latent: bool = True, input_size: Optional[int] = None,
                 **overrides: Any) -> KARLTokenizer:
    """Build preset `name` (see `list_models()`).

    base_tokenizer: a name of `list_base_tokenizers()` (None = the preset's) or a BaseTokenizer
        instance; base_tokenizer_ckpt: its weights (None = random: fine for tests, not for use).
    overrides: any KARLConfig field, e.g. `positional_resize="bilinear"`, `vae_decode_scaled_latent=False`.
    """
    values = preset_config(name)
    values.update(quantize_latent=quantize_latent, factorize_latent=factorize_latent)
    if input_size is not None:
        values["input_size"] = input_size
    if isinstance(base_tokenizer, BaseTokenizer):
        base = base_tokenizer
        # the registry name the base was built under; else keep the preset's when the kind matches (its
        # stored config holds the real sizes), else the kind
        name_of_base = getattr(base, "registry_name", None)
        if name_of_base:
            values["base_tokenizer"] = name_of_base
        elif not values["base_tokenizer"].startswith(base.kind):
            values["base_tokenizer"] = base.kind
    else:
        base_name = base_tokenizer or values["base_tokenizer"]
        values["base_tokenizer"] = base_name
        from base_tokenizers import create_base_tokenizer  # the registry reads YAML: only when building
        if base_tokenizer_ckpt is None:
            warnings.warn(f"base tokenizer {base_name!r} has random weights (no base_tokenizer_ckpt given)",
                          stacklevel=2)
        base = create_base_tokenizer(base_name, pretrained_ckpt_path=base_tokenizer_ckpt)
    known = set(KARLConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown KARL config option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    values.update(overrides)
    return KARLTokenizer(KARLConfig(**values), base)


def create_model_from_config(config: KARLConfig, base_tokenizer: Optional[BaseTokenizer] = None,
                             base_tokenizer_ckpt: Optional[Union[str, Path]] = None,
                             init_weights: bool = True) -> KARLTokenizer:
    """Rebuild a model from a stored config (checkpoints). The base's weights normally come with the model's."""
    if base_tokenizer is None:
        from base_tokenizers import create_base_tokenizer
        base_tokenizer = create_base_tokenizer(config.base_tokenizer, pretrained_ckpt_path=base_tokenizer_ckpt,
                                               **(config.base_tokenizer_config or {}))
    return KARLTokenizer(config, base_tokenizer, init_weights=init_weights)
