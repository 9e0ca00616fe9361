"""File I/O shared by all packages: safe checkpoint loading, atomic writes, verified downloads."""

from modules.io.atomic import atomic_save, atomic_write, atomic_write_bytes, atomic_write_text
from modules.io.safe_load import ALLOWED_GLOBALS, CheckpointError, safe_torch_load

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "atomic_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "safe_torch_load",
]
