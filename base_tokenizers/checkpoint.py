"""Reading base-tokenizer weights: the released files (MAGE VQGAN, MAR VAE) and our own stage-0 files.

Formats recognised (checkpoint_formats/README.md):
- ours (written by run_scripts/base_tokenizer_pretrain.py): {"base_tokenizer": {"name", "kind", "config"},
  "state_dict": {...}, ...training state}. The stored config rebuilds the right size.
- MAGE VQGAN: {"state_dict": {...}} or the bare state dict.
- MAR VAE: {"model": {...}}.
Loading is strict: a mismatched file raises CheckpointError listing missing, unexpected and misshapen keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from modules.io import CheckpointError, match_state_dict, safe_torch_load

OWN_FORMAT_KEY = "base_tokenizer"  # marks a checkpoint written by our stage-0 trainer
_MAX_LISTED = 8  # keys listed per category in an error message


def read_checkpoint(path: str | Path) -> Any:
    return safe_torch_load(path, map_location="cpu")


def stored_config(obj: Any) -> Optional[dict]:
    """{"name", "kind", "config"} for our own files, None for the release formats."""
    if isinstance(obj, Mapping) and isinstance(obj.get(OWN_FORMAT_KEY), Mapping):
        return dict(obj[OWN_FORMAT_KEY])
    return None


def extract_state_dict(obj: Any, kind: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The network's state dict from any supported wrapper."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    state = None
    for key in ("state_dict", "model"):  # ours and MAGE use "state_dict", MAR and the generic trainer "model"
        if isinstance(obj.get(key), Mapping):
            state = dict(obj[key])
            break
    if state is None and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)  # a bare state dict (MAGE)
    if state is not None:
        # The generic trainer saves the whole wrapper: keys "<kind>.encoder...". Strip that one prefix.
        prefix = f"{kind}."
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        return state
    raise CheckpointError(
        f"{path}: not a {kind} checkpoint: expected a dict with key 'state_dict' (VQGAN, ours), 'model' "
        f"(MAR VAE) or a bare state dict; found keys {sorted(map(str, obj))[:_MAX_LISTED]}"
    )


def _listed(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_strict(network: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Copy every tensor into `network`; any missing, unexpected or misshapen key is an error.
    The comparison is the one every loader shares (modules.io.match_state_dict); the wording is ours."""
    state, missing, unexpected, wrong = match_state_dict(network.state_dict(), state_dict)
    misshapen = sorted(f"{k} (file {f} vs model {m})" for k, f, m in wrong)
    if missing or unexpected or misshapen:
        missing, unexpected = sorted(missing), sorted(unexpected)
        parts = [f"{len(missing)} missing: {_listed(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listed(unexpected)}" if unexpected else "",
                 f"{len(misshapen)} wrongly shaped: {_listed(misshapen)}" if misshapen else ""]
        raise CheckpointError(
            f"{path} does not match the {type(network).__name__} built from this config ("
            + "; ".join(p for p in parts if p) + "). Check the tokenizer name / config sizes.")
    network.load_state_dict(state, strict=True)


def own_checkpoint(name: str, tokenizer: nn.Module, **extra: Any) -> dict:
    """The dict our stage-0 trainer saves: weights of `.vqgan` / `.vae`, the config that rebuilds them, and
    any training state in `extra` (optimizer, step, ...). `create_base_tokenizer(name, path)` reads it."""
    import dataclasses

    network = getattr(tokenizer, tokenizer.kind)
    return {
        OWN_FORMAT_KEY: {"name": name, "kind": tokenizer.kind, "config": dataclasses.asdict(tokenizer.config)},
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        **extra,
    }
