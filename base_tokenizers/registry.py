"""Names -> base tokenizers: `create_base_tokenizer("vqgan", pretrained_ckpt_path="default")`.

Built-in names read their sizes from base_tokenizers/configs/<name>.yaml when created. Users add their own
base with `register_base_tokenizer(name, cls, config)` where `cls(config)` builds a BaseTokenizer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from base_tokenizers.base import BaseTokenizer
from base_tokenizers.checkpoint import extract_state_dict, load_strict, read_checkpoint, stored_config
from base_tokenizers.config_io import CONFIG_DIR, apply_overrides, config_from_dict, load_yaml_config
from base_tokenizers.patch_vae import PatchVAETokenizer
from base_tokenizers.vae import VAETokenizer
from base_tokenizers.vqgan import VQGANTokenizer
from modules.io import CheckpointError

PRETRAINED_DIR = Path(__file__).parent / "pretrained_models"
DOWNLOAD_SCRIPT = "base_tokenizers/pretrained_models/download.py"


@dataclass
class _Entry:
    cls: type
    config: Any  # a config dataclass instance, or a Path to a YAML file read with cls.config_class
    default_ckpt: Path


_REGISTRY: dict[str, _Entry] = {
    name: _Entry(cls, CONFIG_DIR / f"{name}.yaml", PRETRAINED_DIR / ckpt)
    for name, cls, ckpt in [
        ("vqgan", VQGANTokenizer, "vqgan.ckpt"),  # release file names
        ("vae", VAETokenizer, "vae.ckpt"),
        ("vqgan_demo", VQGANTokenizer, "vqgan_demo.ckpt"),
        ("vae_demo", VAETokenizer, "vae_demo.ckpt"),
        ("patch_vae_demo", PatchVAETokenizer, "patch_vae_demo.ckpt"),  # the CPU demo's base (patch_vae.py)
    ]
}


def register_base_tokenizer(name: str, cls: type, config: Any, default_ckpt: Optional[str | Path] = None) -> None:
    """Make `create_base_tokenizer(name)` build `cls(config)`.

    cls: a BaseTokenizer subclass taking its config as the only constructor argument.
    config: a dataclass instance (keyword overrides replace its fields), or a YAML path read into
        `cls.config_class`.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseTokenizer)):
        raise TypeError(f"register_base_tokenizer: {cls!r} is not a BaseTokenizer subclass")
    if not dataclasses.is_dataclass(config) and not isinstance(config, (str, Path)):
        raise TypeError("register_base_tokenizer: config must be a dataclass instance or a YAML path")
    ckpt = Path(default_ckpt) if default_ckpt else PRETRAINED_DIR / f"{name}.ckpt"
    _REGISTRY[name] = _Entry(cls, Path(config) if isinstance(config, str) else config, ckpt)


def list_base_tokenizers() -> list[str]:
    return sorted(_REGISTRY)


def default_checkpoint_path(name: str) -> Path:
    return _entry(name).default_ckpt


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown base tokenizer {name!r}; available: {list_base_tokenizers()}")
    return _REGISTRY[name]


def _base_config(entry: _Entry) -> Any:
    if isinstance(entry.config, Path):
        return load_yaml_config(entry.cls.config_class, entry.config)
    return dataclasses.replace(entry.config)


def _missing_file_message(name: str, path: Path) -> str:
    model = name.removesuffix("_demo")
    download = (f"download the released weights with `python {DOWNLOAD_SCRIPT} --model {model}`, or "
                if name in ("vqgan", "vae") else "")
    return (f"base tokenizer checkpoint for {name!r} not found: {path}. To get one, {download}train it from "
            f"scratch with `bash run_scripts/base_tokenizer_pretrain.sh --model {name}` (then pass the "
            f"written checkpoint as pretrained_ckpt_path), or pass pretrained_ckpt_path=None for random weights.")


def create_base_tokenizer(name: str, pretrained_ckpt_path: Optional[str | Path] = None,
                          **overrides: Any) -> BaseTokenizer:
    """Build base tokenizer `name` (see `list_base_tokenizers()`), frozen.

    pretrained_ckpt_path: None = random weights (the caller should warn); "default" = the release's path
        base_tokenizers/pretrained_models/<vqgan|vae>.ckpt (<name>.ckpt for other names); else a file
        in any supported format (release VQGAN/VAE, or ours, whose stored config decides the sizes).
    overrides: config fields, e.g. `decode_scaled_latent=True`, `resolution=64`.
    """
    entry = _entry(name)
    checkpoint, path = None, None
    if pretrained_ckpt_path is not None:
        path = entry.default_ckpt if str(pretrained_ckpt_path) == "default" else Path(pretrained_ckpt_path)
        if not path.exists():
            raise CheckpointError(_missing_file_message(name, path))
        checkpoint = read_checkpoint(path)

    stored = stored_config(checkpoint)
    if stored is not None:  # our own file: its config rebuilds the size it was trained at
        if stored.get("kind") != entry.cls.kind:
            raise CheckpointError(f"{path} holds a {stored.get('kind')!r} base tokenizer, not {name!r} "
                                  f"({entry.cls.kind!r})")
        stored_name = stored.get("name")
        if stored_name in _REGISTRY and _REGISTRY[stored_name].cls.config_class is not entry.cls.config_class:
            raise CheckpointError(f"{path} holds a {stored_name!r} base tokenizer, not {name!r} (a different "
                                  f"network); load it with create_base_tokenizer({stored_name!r}, ...)")
        config = config_from_dict(entry.cls.config_class, stored["config"], str(path))
    else:
        config = _base_config(entry)
    config = apply_overrides(config, overrides, source=f"overrides of {name!r}")

    tokenizer = entry.cls(config)
    tokenizer.registry_name = name  # lets a KARL checkpoint record which base to rebuild
    if checkpoint is not None:
        network = getattr(tokenizer, tokenizer.kind, tokenizer)  # `.vqgan` / `.vae` hold the weights
        load_strict(network, extract_state_dict(checkpoint, tokenizer.kind, path), path)
    tokenizer.set_trainable(False)
    return tokenizer
