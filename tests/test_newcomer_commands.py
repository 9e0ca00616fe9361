"""What a newcomer types, run as the documentation writes it: `.venv/bin/karl ...` without activating the
virtualenv, epsilon 0 keeping every token, a warning when an image misses its epsilon, one spelling per option
(`--checkpoint`; lists space- or comma-separated) and the run scripts' CPU examples."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
VENV_KARL = REPO / ".venv" / "bin" / "karl"


def karl_command() -> list[str]:
    """`.venv/bin/karl` as documented; where a checkout has no .venv (the suite run with another interpreter),
    the same entry point through this interpreter."""
    return [str(VENV_KARL)] if VENV_KARL.exists() else [sys.executable, "-m", "kolmogorov_tokenizers"]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))  # this checkout's code, even from an installed entry point


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (64, 64), (120, 80, 200)).save(folder / "flat.png")
    checker = (np.indices((64, 64)).sum(0) // 4 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([checker] * 3, -1)).save(folder / "checker.png")
    return folder


def run_karl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(karl_command() + list(args), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=300)


def test_epsilon_zero_keeps_every_token_of_the_budget(images, tmp_path):
    result = run_karl("encode", str(images / "flat.png"), "--epsilon", "0", "--budget", "64",
                      "--output_dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"flat\.png\s+64/64\s", result.stdout)  # the demo model's head alone keeps 18 of 64
    assert "adaptivity off" in result.stdout


def test_encode_warns_when_an_image_misses_epsilon_and_counts_misses(images, tmp_path):
    result = run_karl("encode", str(images / "flat.png"), str(images / "checker.png"), "--epsilon", "0.05",
                      "--budget", "32", "--output_dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = re.search(r"checker\.png\s+(\d+)/32\s+(\d\.\d+)", result.stdout)
    assert float(row.group(2)) > 0.05  # the demo model cannot reach 0.05 on a fine checkerboard
    assert f"warning: {images / 'checker.png'}: L1 {row.group(2)} misses epsilon 0.05" in result.stderr
    assert "flat.png: L1" not in result.stderr
    assert "1 of 2 images reached epsilon 0.05 (L1 <= epsilon); 1 missed it" in result.stdout


def test_old_ckpt_spelling_still_works_with_a_deprecation_warning(images, tmp_path):
    result = run_karl("encode", str(images / "flat.png"), "--ckpt", "demo", "--output_dir", str(tmp_path),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--ckpt is deprecated; use --checkpoint" in result.stderr


def test_list_options_take_spaces_or_commas_in_karl_and_evaluate():
    from evaluation.main import build_parser as evaluate_parser
    from kolmogorov_tokenizers.cli import build_parser as karl_parser

    spaced = karl_parser().parse_args(["analyze", "folder", "--epsilons", "0.03", "0.09"])
    commas = karl_parser().parse_args(["analyze", "folder", "--epsilons", "0.03,0.09"])
    assert spaced.epsilons == commas.epsilons == [0.03, 0.09]
    common = ["--checkpoint", "demo", "--data_path", "d", "--output_dir", "o"]
    spaced = evaluate_parser().parse_args(common + ["--epsilons", "0.05", "0.09", "--budgets", "16", "32"])
    commas = evaluate_parser().parse_args(common + ["--epsilons", "0.05,0.09", "--budgets", "16,32"])
    assert (spaced.epsilons, spaced.budgets) == (commas.epsilons, commas.budgets) == ([0.05, 0.09], [16, 32])
    old = evaluate_parser().parse_args(["--ckpt", "demo", "--data_path", "d", "--output_dir", "o"])
    assert old.checkpoint == "demo"


def header_example(script: str) -> str:
    """The CPU example in a run script's header comment, continuation lines joined."""
    lines = (REPO / "run_scripts" / script).read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("#   NPROC_PER_NODE=1"))
    command = ""
    for line in lines[start:]:
        part = line[1:].strip()
        command += " " + part.rstrip("\\").strip()
        if not part.endswith("\\"):
            break
    return command.strip()


def test_stage1_and_stage2_header_examples_run_on_a_cpu(demo_data_dir, tmp_path):
    # As written, from a folder holding datasets/demo; one step each (--max_steps 1, --batch_size 4 for the
    # tiny test dataset) appended, which wins over the example's own values.
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "demo").symlink_to(demo_data_dir)
    run_env = dict(env(), KARL_VENV_DIR=str(Path(sys.executable).parent.parent), KARL_SKIP_INSTALL="1")
    for script in ("latent_distillation_pretrain.sh", "full_finetuning.sh"):
        command = header_example(script)
        assert "--input_size 64" in command, script
        # NAME=value ... bash run_scripts/X.sh args -> run the repository's script
        command = command.replace("bash run_scripts/", f"bash {REPO}/run_scripts/")
        result = subprocess.run(f"{command} --max_steps 1 --batch_size 4 --precision fp32", shell=True,
                                cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
        assert "reached max_steps=1" in result.stdout, script


def test_karl_demo_at_the_recipe_size_says_how_to_fix_the_command(demo_data_dir, tmp_path, capsys):
    from engine.main_train import main

    code = main(["--stage", "latent_distillation", "--model", "karl_demo", "--base_tokenizer", "vqgan_demo",
                 "--data_path", str(demo_data_dir), "--output_dir", str(tmp_path), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "karl_demo is sized for 64 px images: add --input_size 64" in err
