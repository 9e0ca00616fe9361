"""One training run per output folder: an exclusive lock on `<output_dir>/train.lock`, which holds the
owner's PID, host and start time for the message a second run gets.

Two runs in one --output_dir would interleave metrics.jsonl and overwrite each other's checkpoint-last.pth
and config.yaml. The lock is an OS lock (flock) on the open file, held for the whole run: the kernel drops
it when the owner exits in any way (kill -9, crash), so a lock file left by a dead run is stale by
construction and the next run takes it over. Linux emulates flock with fcntl locks on NFS, so this also
holds across the machines of a cluster sharing the folder.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

try:
    import fcntl
except ImportError:  # Windows: no flock; the run goes unlocked (with a warning)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "train.lock"


class OutputDirLocked(ValueError):
    """Another run holds the output folder (one-line message with its PID, host and start time)."""


class RunLock:
    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.owner: Dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            warnings.warn(f"no file locking on this platform: nothing stops a second run in {self.path.parent}")
            return self
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._read(fd)
                os.close(fd)
                raise OutputDirLocked(self._refusal(holder)) from None
            # the file may have been removed (a finishing run) between our open and our lock: then the
            # lock is on a dead inode and a third run could lock a new file; retry on the current one
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)  # a stale owner's record (a run that died) is replaced by ours
            os.pwrite(fd, json.dumps(self.owner).encode(), 0)
            self._fd = fd
            return self
        raise OutputDirLocked(f"could not take the lock {self.path} (it keeps being replaced by other runs)")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody holds the file we remove
        finally:
            os.close(fd)  # drops the flock

    def __del__(self) -> None:  # a Trainer dropped without fit(): its folder is free again
        try:
            self.release()
        except Exception:
            pass

    @staticmethod
    def _read(fd: int) -> Dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _refusal(self, holder: Dict[str, Any]) -> str:
        who = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
        return (f"output folder {self.path.parent} is in use by another training run ({who}); wait for it to "
                f"finish or use another --output_dir")
