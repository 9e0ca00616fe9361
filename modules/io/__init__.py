"""File I/O shared by all packages: safe checkpoint loading, atomic writes, verified downloads."""

from modules.io.atomic import (atomic_save, atomic_write, atomic_write_bytes, atomic_write_text,
                              remove_stale_temp_files)
from modules.io.finite import check_finite_weights, nonfinite_tensors
from modules.io.safe_load import ALLOWED_GLOBALS, CheckpointError, safe_torch_load
from modules.io.state_dict import StateDictMatch, match_state_dict, strip_ddp_prefix

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "atomic_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_finite_weights",
    "nonfinite_tensors",
    "remove_stale_temp_files",
    "safe_torch_load",
    "StateDictMatch",
    "match_state_dict",
    "strip_ddp_prefix",
]
