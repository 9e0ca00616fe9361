"""The one prefix rule for state dicts saved from wrapped models, shared by every loader (load_tokenizer,
--finetune, --resume): a file saved from a DistributedDataParallel-wrapped model has every key under
`module.`; such keys are stripped. Keys are never renamed otherwise."""

from __future__ import annotations

from typing import Any, Dict, Mapping

DDP_PREFIX = "module."


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """`module.x` -> `x` when EVERY key has the prefix (a DDP save); otherwise the keys unchanged."""
    keys = list(state_dict)
    if keys and all(k.startswith(DDP_PREFIX) for k in keys):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)
