"""The command-line tool: encode/decode round trip, analyze, --help, and one-line errors on bad input.

Runs `cli.main(argv)` in-process (fast) and the real `python -m kolmogorov_tokenizers` once. The model is
a random-weight `karl_demo` whose halting head is rescaled so that some tokens halt (a fully random head
keeps every token, which would leave the mask path untested).
"""
from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kolmogorov_tokenizers import cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random `karl_demo` (64 px, vqgan_demo base, 64-token LTC budget) saved in our checkpoint format."""
    from engine.checkpoint import save_checkpoint
    from kolmogorov_tokenizers import create_model
    from kolmogorov_tokenizers.checkpoint import model_state_dict

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random base weights: intended here
        model = create_model("karl_demo", base_tokenizer="vqgan_demo")
    with torch.no_grad():  # omega = sigmoid(logit) spread around the 0.75 threshold: some tokens halt
        model.halting_mlp[2].weight.normal_(0.0, 0.5)
        model.halting_mlp[2].bias.fill_(math.log(3.0))  # logit(0.75)
    save_checkpoint(path, {"model": model_state_dict(model), "model_config": model.config.to_dict()})
    return path


def write_test_images(folder: Path) -> list[Path]:
    """Three images of other sizes and modes than the model's 64 px RGB: a flat gray one, a smooth
    gradient and uniform noise (far more complex)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 90, dtype=np.uint8)
    images = {
        "flat.png": Image.new("L", (80, 70), 128),
        "gradient.jpg": Image.fromarray(np.stack([np.tile(ramp, (100, 1))] * 3, axis=-1)),  # 90 x 100
        "noise.png": Image.fromarray(rng.integers(0, 256, (72, 96, 4), dtype=np.uint8), mode="RGBA"),
    }
    paths = []
    for name, img in images.items():
        img.save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_test_images(tmp_path_factory.mktemp("images"))


def run_cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


def test_encode_then_decode_gives_the_encode_reconstruction(tmp_path, capsys, tiny_checkpoint, image_paths):
    from kolmogorov_tokenizers import load_image
    from modules.io import safe_torch_load

    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "encode", *image_paths, "--checkpoint", tiny_checkpoint, "--output_dir", out,
                                "--device", "cpu", "--batch_size", 2, "--epsilon", 0.05)
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith(str(image_paths[0].parent))}
    assert len(rows) == 3

    for path in image_paths:
        recon_png, tokens_file = out / f"{path.stem}_recon.png", out / f"{path.stem}_tokens.pt"
        record = safe_torch_load(tokens_file, map_location="cpu")  # loads without unpickling code
        assert record["epsilon"] == 0.05 and record["budget"] == 64 and record["input_size"] == 64
        assert record["tokens"].shape == (64, 12) and record["mask"].dtype == torch.bool
        assert int(record["mask"].sum()) == record["num_tokens"]
        assert record["indices"] is None  # continuous model
        # the printed row: image, tokens n/T, L1, PSNR, reconstruction path
        _, tokens, l1, psnr, recon_path = rows[str(path)]
        assert tokens == f"{record['num_tokens']}/64" and Path(recon_path) == recon_png
        # L1 and PSNR printed = those of the saved reconstruction against the preprocessed input (8-bit rounding)
        x = load_image(path, 64)[0].permute(1, 2, 0).numpy().astype(np.float64)
        r = read_png(recon_png) / 255.0
        assert abs(float(l1) - np.abs(r - x).mean()) < 2.5e-3
        assert abs(float(psnr) - 10 * np.log10(1 / ((r - x) ** 2).mean())) < 0.1
    counts = [safe_torch_load(out / f"{p.stem}_tokens.pt")["num_tokens"] for p in image_paths]
    assert min(counts) < 64, "the fixture's halting head should halt some tokens"

    decoded = tmp_path / "decoded"
    code, stdout, err = run_cli(capsys, "decode", *sorted(out.glob("*_tokens.pt")), "--checkpoint", tiny_checkpoint,
                                "--output_dir", decoded, "--device", "cpu")
    assert code == 0, err
    for path in image_paths:
        a, b = read_png(out / f"{path.stem}_recon.png"), read_png(decoded / f"{path.stem}_decoded.png")
        # batched encode vs single-image decode: float rounding may flip an 8-bit level, nothing more
        assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


def test_decode_refuses_tokens_of_another_model(tmp_path, capsys, tiny_checkpoint, image_paths):
    code, _, err = run_cli(capsys, "encode", image_paths[0], "--checkpoint", tiny_checkpoint, "--output_dir", tmp_path)
    assert code == 0, err
    other = make_tiny_checkpoint(tmp_path / "other.pth", seed=1)
    code, _, err = run_cli(capsys, "decode", tmp_path / "flat_tokens.pt", "--checkpoint", other,
                           "--output_dir", tmp_path)
    assert code == 1
    assert "encoded by another model" in err and str(tiny_checkpoint) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "flat_decoded.png").exists()


def test_tokens_encoded_at_another_input_size_decode_at_that_size(tmp_path, capsys, tiny_checkpoint, image_paths):
    code, _, err = run_cli(capsys, "encode", image_paths[1], "--checkpoint", tiny_checkpoint, "--input_size", 32,
                           "--output_dir", tmp_path)
    assert code == 0, err
    code, _, err = run_cli(capsys, "decode", tmp_path / "gradient_tokens.pt", "--checkpoint", tiny_checkpoint,
                           "--output_dir", tmp_path)
    assert code == 0, err
    recon, decoded = read_png(tmp_path / "gradient_recon.png"), read_png(tmp_path / "gradient_decoded.png")
    assert recon.shape == decoded.shape == (32, 32, 3)
    assert np.abs(recon - decoded).max() <= 1


def test_analyze_writes_one_row_per_readable_image(tmp_path, capsys, tiny_checkpoint, image_paths):
    folder = tmp_path / "folder"
    write_test_images(folder)
    (folder / "sub").mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "sub" / "green.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    csv_path = tmp_path / "res" / "complexity.csv"
    code, stdout, err = run_cli(capsys, "analyze", folder, "--checkpoint", tiny_checkpoint, "--output", csv_path,
                                "--epsilons", "0.03,0.09")
    assert code == 0, err
    assert "broken.png" in err  # skipped with a warning
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == ["flat.png", "gradient.jpg", "noise.png", "sub/green.png"]
    assert list(rows[0]) == ["path", "tokens@0.03", "l1@0.03", "tokens@0.09", "l1@0.09", "png_bytes"]
    by_name = {r["path"]: r for r in rows}
    for r in rows:
        assert 1 <= int(r["tokens@0.03"]) <= 64 and 0 <= float(r["l1@0.09"]) <= 1
    # PNG size of the preprocessed image: uniform noise is far larger than a flat image
    assert int(by_name["noise.png"]["png_bytes"]) > 10 * int(by_name["flat.png"]["png_bytes"])
    assert "wrote 4 rows" in stdout and "mean tokens" in stdout


def test_help_documents_every_subcommand_and_option(capsys):
    expected = {
        (): ["encode", "decode", "analyze"],
        ("encode",): ["--epsilon", "--budget", "--checkpoint", "--output_dir", "--device", "--input_size"],
        ("decode",): ["--checkpoint", "--output_dir", "--device"],
        ("analyze",): ["--epsilons", "--output", "--budget", "--checkpoint", "--device", "--input_size"],
    }
    for prefix, options in expected.items():
        code, out, _ = run_cli(capsys, *prefix, "--help")
        assert code == 0
        for option in options:
            assert option in out, (prefix, option)


BAD_INPUTS = {
    "missing image": (["encode", "{tmp}/missing.png"], "image not found"),
    "unreadable image": (["encode", "{tmp}/fake.png"], "cannot read image"),
    "missing checkpoint": (["encode", "{img}", "--checkpoint", "{tmp}/none.pth"], "checkpoint not found"),
    "checkpoint not a checkpoint": (["encode", "{img}", "--checkpoint", "{tmp}/fake.png"], "fake.png"),
    "epsilon too large": (["encode", "{img}", "--epsilon", "0.5"], "[0, 0.38]"),
    "negative epsilon": (["encode", "{img}", "--epsilon", "-0.01"], "[0, 0.38]"),
    "epsilon not a number": (["encode", "{img}", "--epsilon", "abc"], "epsilon"),
    "budget zero": (["encode", "{img}", "--budget", "0"], "positive integer"),
    "budget above the bank": (["encode", "{img}", "--budget", "129"], "[1, 128]"),
    "input size off the grid": (["encode", "{img}", "--input_size", "60"], "factor"),
    "unknown device": (["encode", "{img}", "--device", "tpu"], "cpu"),
    "output dir under a file": (["encode", "{img}", "--output_dir", "{tmp}/fake.png/out"], "cannot create"),
    "no subcommand": ([], "required"),
    "decode missing tokens": (["decode", "{tmp}/none_tokens.pt"], "tokens file not found"),
    "decode not a tokens file": (["decode", "{ckpt}"], "not a tokens file"),
    "decode damaged tokens file": (["decode", "{tmp}/damaged_tokens.pt"], "damaged tokens file"),
    "analyze missing folder": (["analyze", "{tmp}/nowhere"], "folder not found"),
    "analyze empty folder": (["analyze", "{tmp}/empty"], "no image files"),
    "analyze csv under a file": (["analyze", "{imgdir}", "--output", "{tmp}/fake.png/c.csv"], "cannot create"),
    "analyze bad epsilon list": (["analyze", "{imgdir}", "--epsilons", "0.03,0.9"], "[0, 0.38]"),
    "analyze folder after the list": (["analyze", "--epsilons", "0.03,0.05", "{imgdir}"],
                                      "give it before --epsilons, or end the list with --"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error_and_nonzero_exit(case, tmp_path, capsys, monkeypatch, tiny_checkpoint,
                                                         image_paths):
    monkeypatch.chdir(tmp_path)  # a default --output_dir must never land in the repository
    (tmp_path / "fake.png").write_text("this is text, not a PNG")
    (tmp_path / "empty").mkdir()
    torch.save({"format": cli.TOKENS_FORMAT, "version": cli.TOKENS_FORMAT_VERSION, "tokens": torch.zeros(4, 12)},
               tmp_path / "damaged_tokens.pt")
    argv, needle = BAD_INPUTS[case]
    fill = dict(tmp=tmp_path, img=image_paths[0], imgdir=image_paths[0].parent, ckpt=tiny_checkpoint)
    argv = [a.format(**fill) for a in argv]
    if argv and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(tiny_checkpoint)]
    code, _, err = run_cli(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("karl: error: "), err
    assert needle in lines[0], lines[0]


def test_missing_demo_model_names_the_command_that_creates_it(tmp_path, capsys, monkeypatch, image_paths):
    monkeypatch.chdir(tmp_path)
    def no_demo(path, **kwargs):  # load_tokenizer's behaviour while the demo model is not shipped
        raise FileNotFoundError("the shipped demo model is not available yet")

    monkeypatch.setattr(cli, "load_tokenizer", no_demo)
    code, _, err = run_cli(capsys, "encode", image_paths[0])  # --checkpoint demo is the default
    assert code == 1 and "bash run_scripts/quickstart.sh" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_prints_no_traceback(tmp_path, tiny_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "kolmogorov_tokenizers", "encode", str(tmp_path / "missing.png"),
                           "--checkpoint", str(tiny_checkpoint)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"karl: error: image not found: {tmp_path / 'missing.png'}"
