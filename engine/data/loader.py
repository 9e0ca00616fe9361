"""DataLoader construction: the same code path on one CPU process, one GPU and torchrun (DDP)."""
from __future__ import annotations

import re
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class SeededRandomSampler(Sampler[int]):
    """Single-process shuffling with the DistributedSampler interface: order = f(seed, epoch).

    The trainer calls `loader.sampler.set_epoch(epoch)` in both cases, so a resumed run sees the same
    order as an uninterrupted one.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples = len(dataset)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    distributed: bool | None = None,
    seed: int = 0,
    drop_last: bool = True,
    shuffle: bool = True,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader whose sampler has `set_epoch` (DistributedSampler under torch.distributed).

    distributed=None: use a DistributedSampler exactly when torch.distributed is initialised;
    True: require it (error otherwise); False: never. For evaluation pass shuffle=False, drop_last=False
    (note DistributedSampler then pads the last batch with repeated samples to equalise ranks).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    initialised = dist.is_available() and dist.is_initialized()
    if distributed and not initialised:
        raise ValueError("distributed=True but torch.distributed is not initialised "
                         "(launch with torchrun, or pass distributed=None/False)")
    use_ddp = initialised if distributed is None else distributed
    rank = dist.get_rank() if use_ddp else 0
    if use_ddp:
        # Same seed on every rank: the ranks must agree on the permutation they split.
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = SeededRandomSampler(dataset, seed=seed, shuffle=shuffle)
    # Augmentation randomness differs per rank, is reproducible per seed and advances each epoch.
    generator = torch.Generator().manual_seed(seed + 1000 * rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


# torch re-raises a worker's exception with the worker's whole traceback in the message:
# "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n ...
# \nengine.data.errors.DataError: cannot read image x.png: ...". The last unindented "module.Type: text"
# line is the original message.
_WORKER_HEADER = "in DataLoader worker process"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*: (.*)$")


def worker_error_message(err: BaseException) -> Optional[str]:
    """The original one-line message of an exception a DataLoader worker raised; None for other errors."""
    text = str(err)
    if _WORKER_HEADER not in text or "Original Traceback" not in text:
        return None
    lines = text.split("Original Traceback", 1)[1].splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.match(lines[i])
        if match and not lines[i].startswith(" "):
            return " ".join([match.group(1), *[line.strip() for line in lines[i + 1:] if line.strip()]])
    return None
