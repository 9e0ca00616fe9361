"""The one prefix rule for state dicts saved from wrapped models, shared by every loader (load_tokenizer,
--finetune, --resume): a file saved from a DistributedDataParallel-wrapped model has every key under
`module.`; such keys are stripped. Keys are never renamed otherwise."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Tuple

import torch

DDP_PREFIX = "module."


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """`module.x` -> `x` when EVERY key has the prefix (a DDP save); otherwise the keys unchanged."""
    keys = list(state_dict)
    if keys and all(k.startswith(DDP_PREFIX) for k in keys):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


class StateDictMatch(NamedTuple):
    state: Dict[str, Any]  # the file's entries to load: prefix stripped, ignored keys dropped
    missing: List[str]  # the module's keys the file lacks (allowed prefixes not counted)
    unexpected: List[str]  # the file's keys the module does not have
    wrong_shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]  # (key, file shape, module shape)


def match_state_dict(own: Mapping[str, Any], state: Mapping[str, Any], ignore_unexpected: Tuple[str, ...] = (),
                     allow_missing: Tuple[str, ...] = ()) -> StateDictMatch:
    """Compare a file's state dict with a module's (`own` = module.state_dict()) before loading it: the shared
    first half of load_tokenizer, --finetune and --resume. Each caller words its own error."""
    sd = {k: v for k, v in strip_ddp_prefix(state).items() if not (ignore_unexpected and k.startswith(ignore_unexpected))}
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items()
             if k in own and isinstance(v, torch.Tensor) and isinstance(own[k], torch.Tensor) and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd and not (allow_missing and k.startswith(allow_missing))]
    return StateDictMatch(sd, missing, [k for k in sd if k not in own], wrong)
