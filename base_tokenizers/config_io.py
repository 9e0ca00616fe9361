"""Typed configs from YAML files and keyword overrides (read at create time, never at import time)."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


def _coerce(value: Any, annotation: Any) -> Any:
    # YAML gives lists where the dataclass wants tuples (hashable, and `res in attn_resolutions` works either way).
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def config_from_dict(config_class: type, values: Mapping[str, Any], source: str) -> Any:
    """Build `config_class(**values)`; unknown keys raise a ValueError naming `source` and the allowed keys."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} keys {unknown} in {source}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(config_class)
    return config_class(**{k: _coerce(v, hints[k]) for k, v in values.items()})


def load_yaml_config(config_class: type, path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(values).__name__}")
    return config_from_dict(config_class, values, str(path))


def apply_overrides(config: Any, overrides: Mapping[str, Any], source: str = "overrides") -> Any:
    if not overrides:
        return config
    merged = {**dataclasses.asdict(config), **overrides}
    return config_from_dict(type(config), merged, source)
