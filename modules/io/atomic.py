"""Atomic file writes: the final name only ever points at a complete file.

A crash (exception, kill, full disk) while writing a checkpoint must not destroy the previous one, which
is often the only way to resume a multi-day run. We write to a temporary file in the same folder (so
os.replace is a same-filesystem rename, atomic on POSIX and Windows), fsync it, rename it over the final
name, then fsync the folder so the rename itself survives a power loss.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

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


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def _nearly_full(folder: Path) -> bool:
    """Less than 1 MiB free where a write just failed: a full disk, whatever error the writer raised
    (checked before the temp file is removed, which frees its space again)."""
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


class _RecordingWriter:
    """A binary file that remembers the first OSError of a write (libraries may hide it in their own)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


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
        raw = os.fdopen(fd, "wb")
        f = _RecordingWriter(raw)
        try:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
            raw.close()  # its final flush can fail on a full disk too
        except Exception as err:
            try:
                raw.close()
            except OSError as close_err:
                f.error = f.error or close_err
            # torch.save reports a full disk as a cryptic "inline_container.cc ... file write failed":
            # the OSError the write raised is kept by the writer and named here
            cause = f.error if f.error is not None else err
            if (isinstance(cause, OSError) and cause.errno in _DISK_FULL) or _nearly_full(folder):
                raise OSError(errno.ENOSPC, f"no space left on the disk holding {folder} (writing {path.name}; "
                              f"{cause}); the previous {path.name} is kept") from None
            raise
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
