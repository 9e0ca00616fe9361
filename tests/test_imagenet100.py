"""run_scripts/create_imagenet100.py on a fake ImageNet tree: links, copies, idempotence, guards."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data.imagenet100 import IMAGENET100_CLASSES

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run_scripts" / "create_imagenet100.py"
EXTRA_CLASS = "n01440764"  # tench: in ImageNet-1k, not in ImageNet-100


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def fake_imagenet(tmp_path) -> Path:
    src = tmp_path / "imagenet"
    for split, per_class in (("train", 2), ("val", 1)):
        for wnid in (*IMAGENET100_CLASSES, EXTRA_CLASS):
            folder = src / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(f"{split}/{wnid}/{i}".encode())
    return src


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_class_list_is_the_100_unique_cmc_wnids():
    assert len(IMAGENET100_CLASSES) == 100 == len(set(IMAGENET100_CLASSES))
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in IMAGENET100_CLASSES)
    # first and last lines of CMC's imagenet100.txt (bonnet, borzoi)
    assert IMAGENET100_CLASSES[0] == "n02869837" and IMAGENET100_CLASSES[-1] == "n02090622"


def test_symlink_mode_links_exactly_the_100_classes_and_is_idempotent(fake_imagenet, tmp_path):
    dst = tmp_path / "in100"
    first = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst))
    assert first.returncode == 0, first.stderr
    assert "train: 100 classes, 200 images" in first.stdout and "val: 100 classes, 100 images" in first.stdout
    for split in ("train", "val"):
        assert sorted(p.name for p in (dst / split).iterdir()) == sorted(IMAGENET100_CLASSES)
        link = dst / split / IMAGENET100_CLASSES[5]
        assert link.is_symlink() and link.resolve() == (fake_imagenet / split / IMAGENET100_CLASSES[5]).resolve()
    before = {p: os.lstat(p).st_ino for p in (dst / "train").iterdir()}
    second = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst))
    assert second.returncode == 0 and "0 new, 100 already in place" in second.stdout
    assert {p: os.lstat(p).st_ino for p in (dst / "train").iterdir()} == before  # links kept, not remade


def test_copy_mode_copies_files_and_leaves_the_source_alone(fake_imagenet, tmp_path):
    source_before = _snapshot(fake_imagenet)
    dst = tmp_path / "in100"
    result = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst), "--copy")
    assert result.returncode == 0, result.stderr
    copied = dst / "val" / IMAGENET100_CLASSES[0] / f"{IMAGENET100_CLASSES[0]}_0.JPEG"
    assert not copied.is_symlink() and not copied.parent.is_symlink()
    assert copied.read_bytes() == f"val/{IMAGENET100_CLASSES[0]}/0".encode()
    assert len(_snapshot(dst)) == 300
    again = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst), "--copy")
    assert again.returncode == 0 and "0 new, 200 already in place" in again.stdout
    assert _snapshot(fake_imagenet) == source_before


def test_missing_class_or_split_fails_before_writing_and_names_them(fake_imagenet, tmp_path):
    dst = tmp_path / "in100"
    gone = IMAGENET100_CLASSES[42]
    (fake_imagenet / "val" / gone / f"{gone}_0.JPEG").unlink()
    (fake_imagenet / "val" / gone).rmdir()
    result = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst))
    assert result.returncode == 1 and gone in result.stderr and "val" in result.stderr
    assert "Traceback" not in result.stderr and not dst.exists()
    (fake_imagenet / "train").rename(tmp_path / "moved")
    result = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst))
    assert result.returncode == 1 and str(fake_imagenet / "train") in result.stderr and not dst.exists()


def test_never_writes_inside_the_source(fake_imagenet, tmp_path):
    before = _snapshot(fake_imagenet)
    inside = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(fake_imagenet / "sub"))
    assert inside.returncode == 1 and "inside the source" in inside.stderr
    # A destination whose train/ is a symlink into the source: writing through it would touch SRC.
    tricky = tmp_path / "tricky"
    tricky.mkdir()
    (tricky / "train").symlink_to(fake_imagenet / "val", target_is_directory=True)
    through = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(tricky), "--copy")
    assert through.returncode == 1 and "symlink" in through.stderr
    assert _snapshot(fake_imagenet) == before and not (fake_imagenet / "sub").exists()


def test_copy_over_a_previous_symlink_run_refuses_to_write_through_links(fake_imagenet, tmp_path):
    dst = tmp_path / "in100"
    assert _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst)).returncode == 0
    before = _snapshot(fake_imagenet)
    result = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst), "--copy")
    assert result.returncode == 1 and "symlink" in result.stderr
    assert _snapshot(fake_imagenet) == before


def test_stale_links_are_repointed(fake_imagenet, tmp_path):
    dst = tmp_path / "in100"
    wnid = IMAGENET100_CLASSES[0]
    (dst / "train").mkdir(parents=True)
    (dst / "train" / wnid).symlink_to(tmp_path / "old_location", target_is_directory=True)
    result = _run("--imagenet_dir", str(fake_imagenet), "--imagenet100_dir", str(dst))
    assert result.returncode == 0 and "re-pointed 1 stale symlink" in result.stdout
    assert (dst / "train" / wnid).resolve() == (fake_imagenet / "train" / wnid).resolve()
