"""The smaller faults: output-name collisions, extreme aspect ratios, corrupt safetensors, full disks,
empty batches, worker tracebacks (docs/FAULTS.md, rows 6a-6i). Each gets a one-line error or a correct
result, and nothing is left half-written under a final name."""
from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kolmogorov_tokenizers import cli
from test_cli import make_tiny_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def _png(path: Path, seed: int, size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- 6a: one output per input path ---------------------------------------------------------------------------
def test_encode_gives_every_input_path_its_own_outputs(tmp_path, capsys, tiny_ckpt):
    inputs = [_png(tmp_path / "in" / "x.png", 0), _png(tmp_path / "in" / "x_1.png", 1), _png(tmp_path / "in" / "sub" / "x.png", 2)]
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "encode", *inputs, "--checkpoint", tiny_ckpt, "--output_dir", out, "--device", "cpu")
    assert code == 0, err
    sources = sorted(torch.load(p, weights_only=True)["source_image"] for p in out.glob("*_tokens.pt"))
    assert sources == sorted(map(str, inputs))  # three token files, none overwritten
    assert len(list(out.glob("*_recon.png"))) == 3


def test_unique_stems_are_unique_whatever_the_names():
    names = cli.unique_stems([Path("x.png"), Path("x_1.png"), Path("sub/x.png"), Path("X.PNG"), Path("x.png")])
    assert len(set(n.lower() for n in names[:4])) == 4
    assert names[4] == names[0]  # the same path twice: the same output


# --- 6b: decompression guard by resized pixels ---------------------------------------------------------------
def test_thin_image_is_refused_before_it_is_resized(tmp_path, capsys, tiny_ckpt):
    from kolmogorov_tokenizers import DataError, load_image

    thin = tmp_path / "thin.png"
    Image.new("RGB", (60000, 1), (9, 9, 9)).save(thin)
    assert thin.stat().st_size < 2000  # a tiny file ...
    with pytest.raises(DataError, match="aspect ratio 60000:1"):
        load_image(thin, 256)  # ... that Resize(256) would turn into 256 x 15,360,000 pixels
    code, _, err = _cli(capsys, "encode", thin, "--checkpoint", tiny_ckpt, "--output_dir", tmp_path / "o", "--device", "cpu")
    assert code == 1 and "aspect ratio" in err and len(err.strip().splitlines()) == 1


def test_wide_but_reasonable_image_still_loads(tmp_path):
    from kolmogorov_tokenizers import load_image

    assert load_image(_png(tmp_path / "pano.png", 0, size=(1600, 100)), 64).shape == (1, 3, 64, 64)


# --- 6c: corrupt safetensors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_is_a_one_line_error_in_the_cli(tmp_path, capsys, tiny_ckpt, damage):
    from kolmogorov_tokenizers import load_tokenizer
    from kolmogorov_tokenizers.checkpoint import export_safetensors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_safetensors(load_tokenizer(tiny_ckpt), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"garbage" * 10)
    code, _, err = _cli(capsys, "encode", _png(tmp_path / "a.png", 0), "--checkpoint", path, "--output_dir",
                        tmp_path / "o", "--device", "cpu")
    assert code == 1 and "m.safetensors" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- 6d: full disk ---------------------------------------------------------------------------------------------------
def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk_after(monkeypatch):
    """Files written through os.fdopen / open() in `folder` fail with ENOSPC after `limit` bytes, as
    write(2) does on a full disk."""
    real_fdopen, real_open = os.fdopen, open

    class Full:
        def __init__(self, f, limit):
            self.f, self.left = f, limit

        def write(self, data):
            if len(data) > self.left:
                self.f.write(bytes(data[: self.left]))
                self.left = 0
                raise _enospc()
            self.left -= len(data)
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def install(folder: Path, limit: int = 1000):
        folder = str(folder)

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            where = os.readlink(f"/proc/self/fd/{fd}")
            return Full(f, limit) if where.startswith(folder) else f

        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            return Full(f, limit) if writing and str(os.path.abspath(file)).startswith(folder) else f

        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr("builtins.open", open_)

    return install


def test_checkpoint_save_on_a_full_disk_says_disk_and_keeps_the_previous_file(tmp_path, full_disk_after):
    from modules.io import atomic_save, safe_torch_load

    atomic_save({"w": torch.ones(3)}, tmp_path / "checkpoint-last.pth")
    full_disk_after(tmp_path)
    with pytest.raises(OSError, match="no space left on the disk") as info:
        atomic_save({"w": torch.zeros(100_000)}, tmp_path / "checkpoint-last.pth")
    assert info.value.errno == errno.ENOSPC and "inline_container" not in str(info.value)
    assert torch.equal(safe_torch_load(tmp_path / "checkpoint-last.pth")["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pth"]


def test_training_on_a_full_disk_exits_with_one_line_saying_disk(tmp_path, demo_data_dir, capsys, full_disk_after):
    from engine.main_train import main
    from engine_standin import TINY_KARL, tiny_argv

    full_disk_after(tmp_path, limit=200_000)  # config.yaml and metrics fit, a checkpoint does not
    code = main(["--data_path", str(demo_data_dir), *tiny_argv(tmp_path, *TINY_KARL, "--max_steps", "1")],
                stage="latent_distillation")
    err = capsys.readouterr().err
    assert code == 2 and "disk" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob(".*.tmp"))


def test_cli_on_a_full_disk_leaves_no_empty_png(tmp_path, capsys, tiny_ckpt, full_disk_after):
    image = _png(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    full_disk_after(out, limit=0)
    code, _, err = _cli(capsys, "encode", image, "--checkpoint", tiny_ckpt, "--output_dir", out, "--device", "cpu")
    assert code == 1 and "disk" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []  # no 0-byte a_recon.png, no temp file


def test_evaluation_on_a_full_disk_leaves_no_empty_png(tmp_path, capsys, tiny_ckpt, monkeypatch):
    import matplotlib.figure

    from evaluation.main import main

    real = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):  # the disk fills up while the first plot is written
        if isinstance(fname, (str, os.PathLike)):
            open(fname, "wb").close()
        else:
            real(self, io.BytesIO(), *args, **kwargs)
            fname.write(b"\x89PNG")
        raise _enospc()

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    for i in range(2):
        _png(tmp_path / "img" / f"{i}.png", i)
    out = tmp_path / "o"
    code = main(["--checkpoint", str(tiny_ckpt), "--data_path", str(tmp_path / "img"), "--output_dir", str(out),
                 "--device", "cpu", "--budgets", "16", "--epsilons", "0.05", "--skip", "search", "complexity",
                 "--no_perceptual"])
    err = capsys.readouterr().err
    assert code == 2 and "space" in err
    assert not [p for p in out.rglob("*.png") if p.stat().st_size == 0]


# --- 6f: a batch of 0 images -------------------------------------------------------------------------------------------
def test_encode_of_an_empty_batch_is_a_clear_error(tiny_ckpt):
    from kolmogorov_tokenizers import load_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_tokenizer(tiny_ckpt)
    with pytest.raises(ValueError, match="empty batch"):
        model.encode(torch.zeros(0, 3, 64, 64))


# --- 6i: evaluation workers ----------------------------------------------------------------------------------------------
def test_evaluation_with_workers_on_a_bad_folder_prints_one_line(tmp_path, capsys, tiny_ckpt):
    from evaluation.main import main

    folder = tmp_path / "img"
    for i in range(3):
        _png(folder / f"{i}.png", i)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["--checkpoint", str(tiny_ckpt), "--data_path", str(folder), "--output_dir", str(tmp_path / "o"),
                 "--device", "cpu", "--num_workers", "2", "--batch_size", "2", "--budgets", "16", "--epsilons", "0.05",
                 "--skip", "search", "complexity", "--no_perceptual"])
    err = capsys.readouterr().err
    assert code == 2
    assert "broken.png" in err and len(err.strip().splitlines()) == 1, err
