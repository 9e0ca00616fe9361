"""Shared pytest fixtures (used by every helper's tests: keep them tiny and fast)."""
from __future__ import annotations

from pathlib import Path

import pytest

# 44 train / 22 val images at 64 px: 4 (2) per procedural family and 12 (6) photo crops, so every
# family appears in both splits. No system wallpapers, so the fixture is the same on every machine.
DEMO_FIXTURE_SETTINGS = dict(resolution=64, num_train=44, num_val=22, seed=0, use_system_photos=False)


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny demo dataset: <root>/train/<family>/*.png, <root>/val/<family>/*.png, metadata.csv."""
    from engine.demo_data import DemoDataConfig, generate_demo_dataset

    root = tmp_path_factory.mktemp("demo_data") / "demo"
    generate_demo_dataset(root, DemoDataConfig(**DEMO_FIXTURE_SETTINGS))
    return root


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test, restored afterwards. Tiny convolutions gain nothing from a second
    thread, and on a machine shared with other jobs OpenMP's barriers make 2 threads up to 10x slower than 1
    (measured)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
