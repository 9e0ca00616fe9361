"""engine.data: official transforms, RGB conversion of odd modes, bad-file handling, errors, loaders."""
from __future__ import annotations

import io
import logging
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from engine.data import (
    DataError,
    ImageFolderDataset,
    SeededRandomSampler,
    build_dataset,
    build_loader,
    build_transform,
    detect_layout,
    load_image,
    open_rgb,
)

REPO = Path(__file__).resolve().parent.parent
LAYOUT = "<root>/train/<class>/<image>"


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize("kind", ["train", "val", "custom"])
@pytest.mark.parametrize("size", [(100, 80), (40, 50), (64, 64)])
def test_transforms_give_square_float_images_in_unit_range(kind, size):
    out = build_transform(kind, 64)(_noise_rgb(*size))
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_val_transform_is_a_plain_center_crop_of_large_images():
    array = np.random.default_rng(1).integers(0, 256, size=(80, 100, 3), dtype=np.uint8)  # H=80, W=100
    out = build_transform("val", 64)(Image.fromarray(array))
    expected = array[8:72, 18:82].transpose(2, 0, 1) / 255.0  # (80-64)/2 = 8, (100-64)/2 = 18
    assert torch.allclose(out, torch.from_numpy(expected).float(), atol=1e-6)


def test_val_transform_resizes_small_images_up_instead_of_zero_padding():
    small = Image.new("RGB", (50, 40), (200, 100, 50))
    out = build_transform("val", 64)(small)
    expected = torch.tensor([200, 100, 50]).view(3, 1, 1) / 255.0
    assert torch.allclose(out, expected.expand(3, 64, 64), atol=1.5 / 255)  # no black border anywhere


def test_custom_transform_resizes_before_cropping():
    quadrants = np.zeros((128, 128, 3), dtype=np.uint8)
    quadrants[:64, :64], quadrants[:64, 64:] = (255, 0, 0), (0, 255, 0)
    quadrants[64:, :64], quadrants[64:, 64:] = (0, 0, 255), (255, 255, 0)
    out = (build_transform("custom", 64)(Image.fromarray(quadrants)) * 255).round()
    # The whole image shrinks to 64 px, so all four quadrants survive (a bare crop would cut them).
    for (y, x), color in {(16, 16): (255, 0, 0), (16, 48): (0, 255, 0), (48, 16): (0, 0, 255),
                          (48, 48): (255, 255, 0)}.items():
        assert out[:, y, x].tolist() == list(color)


def test_train_transform_keeps_most_of_the_image():
    # scale=(0.8, 1): a centred disc covering the middle stays visible in every random crop.
    canvas = np.zeros((100, 100, 3), dtype=np.uint8)
    canvas[40:60, 40:60] = 255
    transform = build_transform("train", 50)
    torch.manual_seed(0)
    for _ in range(10):
        assert transform(Image.fromarray(canvas)).max() == 1.0


def test_transform_rejects_bad_kind_and_size():
    with pytest.raises(DataError, match="train, val, custom"):
        build_transform("test", 64)
    with pytest.raises(DataError, match="positive integer"):
        build_transform("val", 0)


# ---------------------------------------------------------------- image modes

def _mode_cases(tmp: Path):
    """(file, [(x, y, expected RGB)]) for each odd mode, written with PIL and checked on reload."""
    cases = {}
    gray = Image.new("L", (4, 1), 100)
    cases["L"] = (_save(gray, tmp / "l.png"), [(0, 0, (100, 100, 100))])
    bilevel = Image.new("1", (4, 1), 0)
    bilevel.putpixel((1, 0), 1)
    cases["1"] = (_save(bilevel, tmp / "one.png"), [(0, 0, (0, 0, 0)), (1, 0, (255, 255, 255))])
    la = Image.new("LA", (2, 1))
    la.putdata([(100, 0), (100, 255)])
    cases["LA"] = (_save(la, tmp / "la.png"), [(0, 0, (255, 255, 255)), (1, 0, (100, 100, 100))])
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    # transparent -> white (not the stored red), opaque -> itself, half -> half-way to white
    cases["RGBA"] = (_save(rgba, tmp / "rgba.png"), [(0, 0, (255, 255, 255)), (1, 0, (0, 0, 255)),
                                                    (2, 0, (127, 127, 127))])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putdata([0, 1])
    cases["P"] = (_save(palette, tmp / "p.png"), [(0, 0, (0, 0, 0)), (1, 0, (10, 200, 30))])
    cases["P+transparency"] = (_save(palette, tmp / "pt.png", transparency=0),
                               [(0, 0, (255, 255, 255)), (1, 0, (10, 200, 30))])
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(255, 0, 0, 0), (0, 0, 0, 255)])
    cases["CMYK"] = (_save(cmyk, tmp / "cmyk.tif"), [(0, 0, (0, 255, 255)), (1, 0, (0, 0, 0))])
    deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    cases["I;16"] = (_save(deep, tmp / "i16.png"), [(0, 0, (0, 0, 0)), (1, 0, (128, 128, 128)),
                                                    (2, 0, (255, 255, 255))])
    return cases


def test_odd_image_modes_convert_to_the_right_rgb_colours(tmp_path):
    for name, (path, pixels) in _mode_cases(tmp_path).items():
        with Image.open(path) as stored:  # the file really holds the mode under test
            assert stored.mode == name.split("+")[0] or (name == "I;16" and stored.mode.startswith("I")), name
            assert name != "P+transparency" or "transparency" in stored.info
        rgb = open_rgb(path)
        assert rgb.mode == "RGB", name
        for x, y, color in pixels:
            got = rgb.getpixel((x, y))
            assert max(abs(a - b) for a, b in zip(got, color)) <= 1, (name, x, got, color)


# ---------------------------------------------------------------- bad files and layouts

def _folder_with_bad_files(root: Path) -> tuple[Path, Path]:
    for cls in ("a", "b"):
        for i in range(3):
            _save(_noise_rgb(24, 24, seed=i), root / cls / f"{i}.png")
    corrupt = root / "a" / "corrupt.png"
    corrupt.write_bytes(b"this is not an image at all" * 10)
    buffer = io.BytesIO()
    _noise_rgb(64, 64, seed=9).save(buffer, format="PNG")
    truncated = root / "b" / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(OSError):  # precondition: PIL really fails on this file
        with Image.open(truncated) as img:
            img.load()
    return corrupt, truncated


def test_corrupt_and_truncated_files_are_skipped_and_counted(tmp_path, caplog):
    corrupt, truncated = _folder_with_bad_files(tmp_path / "train")
    dataset = ImageFolderDataset(tmp_path / "train", build_transform("val", 16))
    assert len(dataset) == 8
    with caplog.at_level(logging.WARNING, logger="engine.data.folders"):
        items = [dataset[i] for i in range(len(dataset))]
    assert all(image.shape == (3, 16, 16) for image, _ in items)
    assert dataset.num_replaced == 2
    assert dataset.bad_files == {corrupt, truncated}
    assert str(corrupt) in caplog.text and str(truncated) in caplog.text


def test_a_loader_epoch_survives_bad_files_with_worker_processes(tmp_path):
    _folder_with_bad_files(tmp_path / "train")
    dataset = build_dataset(tmp_path, "train", 16, kind="val")
    loader = build_loader(dataset, batch_size=4, num_workers=2, distributed=False, seed=0, drop_last=False)
    seen = sum(images.shape[0] for images, _ in loader)
    assert seen == 8
    assert dataset.num_replaced == 2  # counted in the workers, visible in the main process


def test_missing_root_names_the_path_and_the_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        build_dataset(missing, "train", 64)
    assert str(missing) in str(err.value) and LAYOUT in str(err.value)


def test_missing_split_empty_split_and_classes_without_images_fail_at_start(tmp_path):
    with pytest.raises(DataError, match=re.escape(LAYOUT)) as err:
        build_dataset(tmp_path, "train", 64)  # root exists, train/ does not
    assert str(tmp_path / "train") in str(err.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        build_dataset(tmp_path, "train", 64)
    (tmp_path / "train" / "cls").mkdir()
    (tmp_path / "train" / "cls" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no image files"):
        build_dataset(tmp_path, "train", 64)


def test_unknown_kind_lists_the_allowed_values(tmp_path):
    with pytest.raises(DataError, match="train, val, custom"):
        build_dataset(tmp_path, "train", 64, kind="test")


def test_custom_folder_reads_any_pil_format_in_sorted_order(tmp_path):
    _save(_noise_rgb(30, 20), tmp_path / "b.jpg")
    _save(_noise_rgb(20, 30), tmp_path / "a.png")
    _save(_noise_rgb(25, 25), tmp_path / "c.webp")
    (tmp_path / "readme.txt").write_text("ignored")
    dataset = build_dataset(tmp_path, None, 32, kind="custom")
    assert [p.name for p in dataset.paths] == ["a.png", "b.jpg", "c.webp"]
    assert all(dataset[i][0].shape == (3, 32, 32) for i in range(3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build_dataset(tmp_path / "empty", None, 32, kind="custom")


def test_demo_data_loads_as_train_and_val(demo_data_dir):
    train = build_dataset(demo_data_dir, "train", 64)
    val = build_dataset(demo_data_dir, "val", 32)
    assert set(train.classes) == {"flat", "gradient", "shapes", "stripes", "checkerboard", "texture",
                                  "fractal", "noise", "photo"}
    assert len(train) == 44 and len(val) == 22
    assert train[0][0].shape == (3, 64, 64) and val[0][0].shape == (3, 32, 32)
    assert detect_layout(demo_data_dir / "val") == "imagefolder"
    assert detect_layout(demo_data_dir / "val" / "photo") == "flat"


# ---------------------------------------------------------------- load_image

def test_load_image_returns_a_batch_of_one(tmp_path):
    path = _save(_noise_rgb(90, 60), tmp_path / "x.png")
    image = load_image(path, 48)
    assert image.shape == (1, 3, 48, 48) and 0 <= image.min() and image.max() <= 1
    assert load_image(path, None).shape == (1, 3, 60, 90)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing.png"))):
        load_image(tmp_path / "missing.png", 64)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        load_image(broken, 64)


# ---------------------------------------------------------------- loaders

def test_single_process_sampler_order_depends_only_on_seed_and_epoch(demo_data_dir):
    dataset = build_dataset(demo_data_dir, "val", 16)
    sampler = build_loader(dataset, 4, num_workers=0, distributed=False, seed=3).sampler
    assert isinstance(sampler, SeededRandomSampler)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(len(dataset)))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    again = build_loader(dataset, 4, num_workers=0, distributed=False, seed=3).sampler
    again.set_epoch(1)
    assert list(again) == epoch1


def test_drop_last_and_evaluation_order(demo_data_dir):
    dataset = build_dataset(demo_data_dir, "val", 16)  # 22 images
    assert len(build_loader(dataset, 8, distributed=False, drop_last=True)) == 2
    loader = build_loader(dataset, 8, distributed=False, drop_last=False, shuffle=False)
    assert len(loader) == 3 and list(loader.sampler) == list(range(22))


def test_distributed_loader_uses_a_distributed_sampler(tmp_path, demo_data_dir):
    dataset = build_dataset(demo_data_dir, "val", 16)
    with pytest.raises(ValueError, match="not initialised"):
        build_loader(dataset, 4, distributed=True)
    assert not torch.distributed.is_initialized()
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = build_loader(dataset, 4, distributed=None, seed=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        loader.sampler.set_epoch(2)
        assert sorted(loader.sampler) == list(range(len(dataset)))
    finally:
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------- packaging

def test_environment_yaml_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = set(project["dependencies"]) | set(extras["test"]) | set(extras["metrics"])
    env = yaml.safe_load((REPO / "environment.yaml").read_text())
    assert env["name"] == "kolmogorov_tokenizer"
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) - {"-e ."} == pins and "-e ." in pip_section
