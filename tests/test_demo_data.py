"""engine.demo_data + run_scripts/prepare_demo_data.py: determinism, metadata, splits, complexity order."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.photos import BUNDLED_PHOTOS, photo_sources
from engine.data.procedural import render
from engine.demo_data import DemoDataConfig, generate_demo_dataset, read_metadata

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "run_scripts" / "prepare_demo_data.py"
SMALL = dict(resolution=32, num_train=22, num_val=11, use_system_photos=False)


def _png_size(pixels: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return len(buffer.getvalue())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    generate_demo_dataset(tmp_path / "a", DemoDataConfig(seed=5, **SMALL))
    generate_demo_dataset(tmp_path / "b", DemoDataConfig(seed=5, **SMALL))
    generate_demo_dataset(tmp_path / "c", DemoDataConfig(seed=6, **SMALL))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    pngs = [name for name in a if name.endswith(".png")]
    assert len(pngs) == 33 and set(pngs) <= set(c)
    assert sum(a[name] != c[name] for name in pngs) >= 30  # flat colours etc. all redrawn


def test_each_image_does_not_depend_on_how_many_are_generated(tmp_path):
    generate_demo_dataset(tmp_path / "small", DemoDataConfig(**SMALL))
    generate_demo_dataset(tmp_path / "large", DemoDataConfig(**{**SMALL, "num_train": 44}))
    small, large = _files(tmp_path / "small"), _files(tmp_path / "large")
    shared = [name for name in small if name.startswith("train/") and name in large]
    assert len(shared) == 22 and all(small[name] == large[name] for name in shared)


def test_metadata_matches_the_files(demo_data_dir):
    rows = read_metadata(demo_data_dir)
    on_disk = {str(p.relative_to(demo_data_dir)) for p in demo_data_dir.glob("*/*/*.png")}
    assert {row["path"] for row in rows} == on_disk and len(rows) == len(on_disk) == 66
    for row in rows:
        split, family, _ = row["path"].split("/")
        assert (row["split"], row["family"]) == (split, family)
        with Image.open(demo_data_dir / row["path"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
        if family == "photo":
            assert row["source"] in BUNDLED_PHOTOS and row["complexity_level"] is None
        else:
            assert row["source"] == "procedural" and isinstance(row["complexity_level"], float)


def test_val_photos_come_from_other_source_photographs_than_train(demo_data_dir):
    rows = read_metadata(demo_data_dir)
    train = {r["source"] for r in rows if r["family"] == "photo" and r["split"] == "train"}
    val = {r["source"] for r in rows if r["family"] == "photo" and r["split"] == "val"}
    assert train and val and not train & val
    assert not set(photo_sources("train", use_system_photos=True)) & set(photo_sources("val"))


def test_complexity_levels_follow_the_intended_family_order(demo_data_dir):
    rows = read_metadata(demo_data_dir)
    levels = {}
    for row in rows:
        if row["complexity_level"] is not None:
            levels.setdefault(row["family"], []).append(row["complexity_level"])
    order = ["flat", "gradient", "shapes", "stripes", "texture", "fractal", "noise"]
    # Every level of a family lies at or above every level of the family before it.
    for lower, higher in zip(order, order[1:]):
        assert max(levels[lower]) <= min(levels[higher]), (lower, higher)
    assert min(levels["checkerboard"]) >= max(levels["shapes"])


def test_png_size_ranks_flat_below_shapes_below_texture_below_noise(demo_data_dir):
    rows = read_metadata(demo_data_dir)
    sizes: dict[str, list[int]] = {}
    for row in rows:
        pixels = np.asarray(Image.open(demo_data_dir / row["path"]).convert("RGB"))
        sizes.setdefault(row["family"], []).append(_png_size(pixels))
    mean = {family: float(np.mean(values)) for family, values in sizes.items()}
    assert mean["flat"] < mean["shapes"] < mean["texture"] < mean["noise"], mean


@pytest.mark.parametrize("family", ["shapes", "texture", "noise"])
def test_png_size_grows_with_the_level_within_a_family(family):
    def mean_size(level: float) -> float:
        return np.mean([_png_size(render(family, np.random.default_rng(s), 64, level)[0]) for s in range(4)])

    assert mean_size(0.1) < mean_size(0.9)


@pytest.mark.parametrize("family", ["stripes", "checkerboard"])
def test_frequency_families_have_more_edges_at_higher_levels(family):
    def edges(level: float) -> float:
        pixels = render(family, np.random.default_rng(0), 64, level)[0].astype(int)
        return (np.abs(np.diff(pixels, axis=0)).sum(-1) > 0).sum() + (np.abs(np.diff(pixels, axis=1)).sum(-1) > 0).sum()

    assert edges(0.0) < edges(0.5) < edges(1.0)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_cli_writes_then_skips_then_guards_changes(tmp_path):
    out = tmp_path / "demo"
    common = ["--output_dir", str(out), "--resolution", "16", "--num_train", "11", "--num_val", "11",
              "--no_system_photos"]
    first = _run(*common)
    assert first.returncode == 0, first.stderr
    assert "wrote 11 train + 11 val images" in first.stdout
    assert len(list(out.glob("*/*/*.png"))) == 22
    assert "nothing to do" in _run(*common).stdout
    changed = _run(*common, "--seed", "1")
    assert changed.returncode == 1 and "--overwrite" in changed.stderr and "Traceback" not in changed.stderr
    assert _run(*common, "--seed", "1", "--overwrite").returncode == 0
    assert len(read_metadata(out)) == 22


def test_cli_refuses_foreign_folders_and_bad_values(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    refused = _run("--output_dir", str(foreign), "--overwrite")
    assert refused.returncode == 1 and "not a demo dataset" in refused.stderr
    assert (foreign / "important.txt").read_text() == "keep me"
    bad = _run("--output_dir", str(tmp_path / "x"), "--resolution", "0")
    assert bad.returncode == 1 and "resolution" in bad.stderr and "Traceback" not in bad.stderr
