"""Atomic file writes: the final name only ever points at a complete file.

A crash (exception, kill, full disk) while writing a checkpoint must not destroy the previous one, which
is often the only way to resume a multi-day run. We write to a temporary file in the same folder (so
os.replace is a same-filesystem rename, atomic on POSIX and Windows), fsync it, rename it over the final
name, then fsync the folder so the rename itself survives a power loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch


def _fsync_dir(folder: Path) -> None:
    # Directory fsync is POSIX-only; on Windows opening a directory fails and the rename is already durable.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None]) -> Path:
    """Call `write_fn(f)` on a temp file next to `path`, then atomically rename it to `path`.

    On any exception the temp file is removed and an existing file at `path` is left untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; give the final file the permissions a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return path


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the hidden temp files (`.<name>.<random>.tmp`) that a write killed mid-way (kill -9, power
    loss) left in `folder`. Call only while no other process writes there (a training run holds the
    folder's lock). Returns the removed paths."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
    return removed


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj, path)` that never leaves a partial file under `path`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda f: f.write(text.encode(encoding)))
