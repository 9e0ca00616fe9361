"""Training checkpoints in the release's layout, written atomically, resumable mid-epoch and bit-exact.

Keys: model, ema, optimizer, scaler, epoch (as the release) plus config (our resolved config, a plain
dict), model_config (what create_model needs to rebuild the model), global_step, step_in_epoch
(batches consumed in `epoch`; 0 with epoch_done=True after a full epoch), rng (one entry per rank:
torch, numpy, python, cuda) and, for stage 2, discriminator / disc_optimizer / disc_scaler.
Everything is tensors and builtins so `safe_torch_load` (weights_only) reads it back.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from modules.io import CheckpointError, atomic_save, check_finite_weights, match_state_dict, safe_torch_load

LAST = "checkpoint-last.pth"


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint-{epoch}.pth"


def capture_rng_state() -> Dict[str, Any]:
    """This process's RNG states as tensors / builtins (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def save_checkpoint(path: str | Path, state: Dict[str, Any]) -> Path:
    """Atomic write: a crash mid-write leaves the previous file at `path` intact."""
    return atomic_save(state, path)


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    ckpt = safe_torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a training checkpoint (no 'model' entry; found {keys})")
    return ckpt


def check_weights_finite(ckpt: Dict[str, Any], path: Any) -> None:
    """Refuse a checkpoint whose model or EMA weights hold NaN/Inf (a diverged run saved before the check)."""
    for part in ("model", "ema"):
        if isinstance(ckpt.get(part), dict):
            check_finite_weights(ckpt[part], path, f"'{part}'")


def _some(keys: Sequence[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_weights(module: nn.Module, state: Mapping[str, Any], source: Any, option: str, strict: bool = True,
                 ignore_unexpected: Tuple[str, ...] = (), allow_missing: Tuple[str, ...] = ()) -> Tuple[List[str], List[str]]:
    """Load `state` into `module`, compared first by the loaders' shared modules.io.match_state_dict (prefix rule,
    ignored and allowed keys, shapes).

    A tensor of another shape is always an error (never a partial tensor); with `strict` any missing or
    unexpected key is one too. `ignore_unexpected` / `allow_missing` are key prefixes that are not counted
    (e.g. a release's stage-2 losses, training-only state). Raises CheckpointError in one line naming
    `option` (--finetune / --resume), the file and the keys. Returns (missing, unexpected).
    """
    sd, missing, unexpected, shapes = match_state_dict(module.state_dict(), state, ignore_unexpected, allow_missing)
    if shapes:
        wrong = [f"{k} file {f} vs model {m}" for k, f, m in shapes]
        raise CheckpointError(f"{option} {source} was saved from a model of another shape: {len(wrong)} tensor(s) "
                              f"differ, e.g. {_some(wrong, 3)}; build the same model (config / overrides) as that run")
    if strict and (missing or unexpected):
        hint = " (pass --finetune_non_strict for a deliberate partial load)" if option == "--finetune" else ""
        raise CheckpointError(f"{option} {source} does not match this model: {len(missing)} missing key(s)"
                              f"{': ' + _some(missing) if missing else ''}; {len(unexpected)} unexpected key(s)"
                              f"{': ' + _some(unexpected) if unexpected else ''}{hint}")
    module.load_state_dict(sd, strict=False)
    return missing, unexpected


def resolve_resume_path(resume: Optional[str], output_dir: str | Path) -> Optional[Path]:
    """"auto" -> output_dir/checkpoint-last.pth if it exists (else start fresh); a path must exist."""
    if not resume:
        return None
    if resume == "auto":
        path = Path(output_dir) / LAST
        return path if path.is_file() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--resume checkpoint not found: {path}")
    return path


def rng_for_rank(ckpt: Dict[str, Any], rank: int, world_size: int) -> Optional[Dict[str, Any]]:
    """The saved RNG state of this rank, or None when the world size changed (resume is then not exact)."""
    states: List[Dict[str, Any]] = ckpt.get("rng") or []
    if len(states) != world_size:
        return None
    return states[rank]
