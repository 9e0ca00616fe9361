"""The evaluation pipeline and its command line: every section and file is produced, the numbers are
consistent with each other, and bad input ends with a clear message and a non-zero exit."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation import EvalData, EvalSettings, run_evaluation
from evaluation.main import main
from evaluation.search import search_min_budget

SECTIONS = ("fixed", "variable", "calibration", "search", "complexity", "meta")


class FakeTokenizer(torch.nn.Module):
    """The model API with a transparent rule: budget T keeps a T x T block-average of the image, so more
    tokens reconstruct better; at epsilon > 0 it keeps the smallest T whose L1 <= epsilon (an oracle,
    found here by brute force). Lets the tests know the right answers without the code under test."""

    def __init__(self, input_size: int = 32, n: int = 16) -> None:
        super().__init__()
        self.config = SimpleNamespace(input_size=input_size, model_name="fake")
        self.ltc_budget = n
        self.calls = 0

    @staticmethod
    def reconstruct(images: torch.Tensor, budget: int) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(images, budget)
        return F.interpolate(small, size=images.shape[-2:], mode="nearest")

    def oracle_tokens(self, images: torch.Tensor, eps: float) -> torch.Tensor:
        tokens = torch.full((len(images),), self.ltc_budget)
        for t in range(self.ltc_budget, 0, -1):  # the smallest t wins: go down
            l1 = (self.reconstruct(images, t) - images).abs().flatten(1).mean(1)
            tokens[l1 <= eps] = t
        return tokens

    def encode(self, images, input_token_budget=None, desired_reconstruction_quality=0.05):
        self.calls += 1
        budgets = input_token_budget if isinstance(input_token_budget, list) else [input_token_budget]
        results = []
        for budget in budgets:
            if desired_reconstruction_quality > 0:
                tokens = torch.minimum(self.oracle_tokens(images, desired_reconstruction_quality), torch.tensor(budget))
            else:
                tokens = torch.full((len(images),), budget)
            recon = torch.stack([self.reconstruct(im[None], int(t))[0] for im, t in zip(images, tokens)])
            results.append(([], recon, {"num_tokens": tokens, "mask": None, "epsilon": None}))
        return results if isinstance(input_token_budget, list) else results[0]


def _images(n: int = 10, size: int = 32) -> torch.Tensor:
    """Flat colours, gradients, stripes and noise: a spread of complexity."""
    g = torch.Generator().manual_seed(0)
    out = []
    ramp = torch.linspace(0, 1, size)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            im = torch.rand(3, 1, 1, generator=g).expand(3, size, size)
        elif kind == 1:
            im = ramp[None, None, :].expand(3, size, size) * torch.rand(3, 1, 1, generator=g)
        elif kind == 2:
            im = ((torch.arange(size) // (1 + i % 3)) % 2).float()[None, :, None].expand(3, size, size)
        else:
            im = torch.rand(3, size, size, generator=g)
        out.append(im.clone())
    return torch.stack(out)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_fake")
    model = FakeTokenizer()
    data = EvalData.from_tensor(_images(), batch_size=4)
    settings = EvalSettings(epsilons=(0.03, 0.09), grid_images=4)
    metrics = run_evaluation(model, data, out, "cpu", settings, log=lambda *_: None)
    return model, data, out, metrics


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_section_and_file_is_written(fake_run):
    _, _, out, metrics = fake_run
    on_disk = json.loads((out / "metrics.json").read_text())
    for section in SECTIONS:
        assert section in on_disk
    assert on_disk["fixed"]["budgets"] == [2, 4, 6, 8, 10, 12, 14, 16]  # N/8 * k, k = 1..8, for N = 16
    assert len(_csv(out / "per_image.csv")) == 10
    report = (out / "report.md").read_text()
    for png in ("token_histograms", "tokens_vs_png", "calibration", "l1_vs_tokens", "grid_variable", "grid_fixed"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
        assert f"plots/{png}.png" in report


def test_psnr_agrees_with_l2_per_image_and_in_aggregate(fake_run):
    _, _, out, metrics = fake_run
    rows = _csv(out / "per_image.csv")
    per_image_psnr = []
    for row in rows:
        l2, psnr = float(row["fixed_4_l2"]), float(row["fixed_4_psnr"])
        assert psnr == pytest.approx(10 * math.log10(1 / l2), rel=1e-4)
        per_image_psnr.append(psnr)
    assert metrics["fixed"]["per_budget"]["4"]["psnr"] == pytest.approx(np.mean(per_image_psnr), rel=1e-4)


def test_fixed_allocation_improves_with_budget_and_uses_it(fake_run):
    _, _, _, metrics = fake_run
    rows = metrics["fixed"]["per_budget"]
    assert [rows[str(b)]["tokens"] for b in (2, 8, 16)] == [2, 8, 16]
    assert rows["16"]["l1"] < rows["8"]["l1"] < rows["2"]["l1"]


def test_variable_tokens_are_the_models_and_fewer_at_larger_epsilon(fake_run):
    model, _, _, metrics = fake_run
    expected = model.oracle_tokens(_images(), 0.09).float().mean().item()
    rows = metrics["variable"]["per_epsilon"]
    assert metrics["variable"]["budget"] == 16
    assert rows["0.09"]["tokens"] == pytest.approx(expected)
    assert rows["0.09"]["tokens"] < rows["0.03"]["tokens"]


def test_calibration_is_monotone_in_the_offset(fake_run):
    _, _, _, metrics = fake_run
    for entry in metrics["calibration"]["per_epsilon"].values():
        shares = [r["share_above"] for r in entry["rows"]]
        assert all(a >= b for a, b in zip(shares, shares[1:]))
        assert all(0.0 <= s <= 1.0 for s in shares)


def test_search_finds_the_smallest_sufficient_budget(fake_run):
    model, _, out, metrics = fake_run
    search = metrics["search"]
    assert search["budgets"] == list(range(1, 17))  # N/16 * k, k = 1..16, for N = 16
    rows = _csv(out / "per_image.csv")
    oracle = model.oracle_tokens(_images(), 0.03).tolist()
    for row, best in zip(rows, oracle):
        tokens, passes = int(row["search_eps_0.03_tokens"]), int(row["search_eps_0.03_passes"])
        assert tokens in search["budgets"]
        assert passes >= 1
        assert tokens == best  # the fake's own brute force, independent of the search code
        if row["search_eps_0.03_met"] == "1":
            assert passes == search["budgets"].index(tokens) + 1
    # the fake's single pass is an oracle: KARL and the search agree exactly
    assert search["per_epsilon"]["0.03"]["agreement_within_one_step"] == 1.0
    assert search["per_epsilon"]["0.03"]["mean_token_difference_karl_minus_search"] == 0.0


def test_search_with_a_coarse_budget_list_rounds_up():
    model = FakeTokenizer()
    images = _images(8)
    result = search_min_budget(model, EvalData.from_tensor(images, 3), 0.05, [4, 8, 16], torch.device("cpu"))
    oracle = model.oracle_tokens(images, 0.05)
    assert len(result.tokens) == 8
    for found, best, met, passes in zip(result.tokens, oracle.tolist(), result.met, result.passes):
        if met:
            assert found == min(b for b in (4, 8, 16) if b >= best)
            assert passes == (4, 8, 16).index(found) + 1
        else:
            assert found == 16 and passes == 3


def test_complexity_section_correlates_and_measures_structure(fake_run):
    _, _, out, metrics = fake_run
    cx = metrics["complexity"]
    assert {"png_bytes", "jpeg_bytes"} <= set(cx["spearman_tokens_vs"]["0.03"])
    rho = cx["spearman_tokens_vs"]["0.03"]["png_bytes"]["rho"]
    assert rho is not None and -1.0 <= rho <= 1.0
    rows = _csv(out / "per_image.csv")
    d = [float(r["d_structure"]) for r in rows]
    flat = [d[i] for i in range(10) if i % 4 == 0]
    assert all(abs(v) < 1e-6 for v in flat)  # a flat colour: nothing for more tokens to explain
    assert max(d) > 0.05


def test_metadata_families_and_ood_set(tmp_path):
    images = _images(8)
    meta = {f"{i:06d}": {"family": "noise" if i % 4 == 3 else "simple", "complexity_level": float(i % 4)}
            for i in range(8)}
    data = EvalData.from_tensor(images, 4, metadata=meta)
    ood = EvalData.from_tensor(torch.rand(4, 3, 32, 32), 4, name="noise")
    settings = EvalSettings(epsilons=(0.05,), skip=("search",), grid_images=2)
    metrics = run_evaluation(FakeTokenizer(), data, tmp_path, "cpu", settings, ood_data=ood, log=lambda *_: None)
    cx = metrics["complexity"]
    assert set(cx["per_family"]) == {"noise", "simple"}
    assert cx["per_family"]["noise"]["count"] == 2
    assert cx["per_family"]["noise"]["mean_tokens_eps_0.05"] > cx["per_family"]["simple"]["mean_tokens_eps_0.05"]
    assert cx["spearman_tokens_vs"]["0.05"]["complexity_level"]["n"] == 8
    # noise (level 3) compresses worst, flat colours (level 0) best: the reference correlation is positive
    assert cx["spearman_compressors_vs_metadata"]["png_bytes"]["complexity_level"]["rho"] > 0.5
    dist = cx["mean_tokens_by_distribution"]
    assert dist["out_of_distribution"]["0.05"] >= dist["in_distribution"]["0.05"]
    assert "search" not in metrics and any("search" in s for s in metrics["meta"]["skipped"])
    header = _csv(tmp_path / "per_image.csv")[0]
    assert header["family"] in ("noise", "simple")


def test_skipping_variable_skips_what_needs_it(tmp_path):
    data = EvalData.from_tensor(_images(4), 4)
    settings = EvalSettings(skip=("variable",), grid_images=0)
    metrics = run_evaluation(FakeTokenizer(), data, tmp_path, "cpu", settings, log=lambda *_: None)
    assert "fixed" in metrics
    for section in ("variable", "calibration", "search", "complexity"):
        assert section not in metrics
    assert any("calibration: skipped because it needs variable" == s for s in metrics["meta"]["skipped"])


def test_budgets_beyond_the_model_are_refused(tmp_path):
    data = EvalData.from_tensor(_images(2), 2)
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        run_evaluation(FakeTokenizer(), data, tmp_path, "cpu", EvalSettings(fixed_budgets=[4, 20]))


# --- the command line on the real demo model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory) -> Path:
    """A random-init karl_demo checkpoint in our format (plumbing only)."""
    import warnings

    from kolmogorov_tokenizers.checkpoint import model_state_dict
    from kolmogorov_tokenizers.registry import create_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("karl_demo", base_tokenizer="vqgan_demo", encoder_layers=1, decoder_layers=1)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-last.pth"
    torch.save({"model": model_state_dict(model), "model_config": model.config.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("custom_images")
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = (rng.random((80, 96, 3)) * 255 * (i / 2)).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i}.png")
    return folder


def test_cli_end_to_end_on_the_demo_model(demo_ckpt, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--checkpoint", str(demo_ckpt), "--data_path", str(image_folder), "--output_dir", str(out),
                 "--budgets", "16", "64", "--epsilons", "0.05", "--search_budgets", "32", "64",
                 "--batch_size", "2", "--device", "cpu", "--grid_images", "2"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["data_kind"] == "custom" and metrics["meta"]["num_images"] == 3
    assert metrics["meta"]["max_budget"] == 64
    assert set(SECTIONS) <= set(metrics)
    assert "images/s" in printed.out
    if not metrics["meta"]["skipped"] or "LPIPS" not in " ".join(metrics["meta"]["skipped"]):
        assert "lpips" in metrics["fixed"]["per_budget"]["16"]  # weights present on this machine
    else:
        assert "LPIPS/rFID skipped:" in printed.out


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_missing_checkpoint(image_folder, tmp_path, capsys):
    code, err = _run_cli(["--checkpoint", str(tmp_path / "nope.pth"), "--data_path", str(image_folder),
                          "--output_dir", str(tmp_path / "o")], capsys)
    assert code == 2 and "checkpoint not found" in err and "nope.pth" in err


def test_cli_checkpoint_that_is_not_one(image_folder, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    code, err = _run_cli(["--checkpoint", str(bad), "--data_path", str(image_folder), "--output_dir", str(tmp_path / "o")],
                         capsys)
    assert code == 2 and "cannot load checkpoint" in err and "bad.pth" in err


def test_cli_config_mismatch(demo_ckpt, image_folder, tmp_path, capsys):
    code, err = _run_cli(["--checkpoint", str(demo_ckpt), "--data_path", str(image_folder),
                          "--output_dir", str(tmp_path / "o"), "--input_size", "256"], capsys)
    assert code == 2 and "config mismatch" in err and "64" in err and "256" in err


def test_cli_empty_folder(demo_ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run_cli(["--checkpoint", str(demo_ckpt), "--data_path", str(empty), "--output_dir", str(tmp_path / "o")],
                         capsys)
    assert code == 2 and "no images" in err and str(empty) in err


def test_cli_unreadable_image(demo_ckpt, image_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "with_bad"
    shutil.copytree(image_folder, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, err = _run_cli(["--checkpoint", str(demo_ckpt), "--data_path", str(folder), "--output_dir", str(tmp_path / "o"),
                          "--skip", "search", "complexity", "--budgets", "64", "--epsilons", "0.05"], capsys)
    assert code == 2 and "cannot read image" in err and "broken.png" in err
    assert "Traceback" not in err


def test_cli_bad_option_values(demo_ckpt, image_folder, tmp_path, capsys):
    code, err = _run_cli(["--checkpoint", str(demo_ckpt), "--data_path", str(image_folder), "--output_dir",
                          str(tmp_path / "o"), "--budgets", "1000"], capsys)
    assert code == 2 and "[1, 64]" in err
    code, err = _run_cli(["--checkpoint", str(demo_ckpt), "--data_path", str(image_folder), "--output_dir",
                          str(tmp_path / "o"), "--epsilons", "0.5"], capsys)
    assert code == 2 and "epsilons must be in [0, 0.38]" in err and "0.5" in err


def test_demo_data_loads_with_its_metadata(demo_data_dir):
    from evaluation import load_eval_data

    data, kind = load_eval_data(demo_data_dir, 64, kind="auto", batch_size=8, max_images=12)
    assert kind == "val"  # DATA/val exists: the official CenterCrop preprocessing
    batches = list(data.batches())
    ids = [i for b in batches for i in b.ids]
    assert len(ids) == data.num_images == 12
    assert all(b.images.shape[1:] == (3, 64, 64) for b in batches)
    with (demo_data_dir / "metadata.csv").open(newline="") as f:
        truth = {r["path"]: r for r in csv.DictReader(f)}
    for image_id in ids:
        row = truth[f"val/{image_id}"]
        assert data.metadata[image_id]["family"] == row["family"]
        if row["complexity_level"]:
            assert data.metadata[image_id]["complexity_level"] == pytest.approx(float(row["complexity_level"]))
    assert [i for b in data.batches() for i in b.ids] == ids  # a second pass (cached) sees the same images


class _TinyFeatures(torch.nn.Module):
    """Stands in for the FID Inception network (plumbing only): 4x4 average colours -> 48 features."""

    dim = 48

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 4).flatten(1)


def test_lpips_and_rfid_are_reported_when_their_networks_exist(tmp_path, monkeypatch):
    """With weights present the same code computes LPIPS per image and rFID per setting. The networks
    are stand-ins here (no weights offline): a random-backbone LPIPS and a colour-feature extractor."""
    import functools

    import lpips

    from evaluation import perceptual_metrics as pm

    torch.manual_seed(0)  # the stand-in LPIPS backbone is random
    monkeypatch.setattr(pm, "_weights_present", lambda name: True)
    monkeypatch.setattr(pm, "_pytorch_fid_installed", lambda: True)
    monkeypatch.setattr(pm, "InceptionPool3", _TinyFeatures)
    monkeypatch.setattr(lpips, "LPIPS", functools.partial(lpips.LPIPS, pnet_rand=True))
    perceptual = pm.PerceptualMetrics("cpu")
    assert perceptual.skipped_lines() == []
    data = EvalData.from_tensor(_images(8), 4)
    settings = EvalSettings(fixed_budgets=[2, 16], epsilons=(0.05,), skip=("search", "complexity"), grid_images=0)
    metrics = run_evaluation(FakeTokenizer(), data, tmp_path, "cpu", settings, perceptual, log=lambda *_: None)
    rows = metrics["fixed"]["per_budget"]
    assert rows["2"]["rfid"] > rows["16"]["rfid"] >= 0.0  # coarser reconstructions are further away
    assert rows["2"]["lpips"] > rows["16"]["lpips"] >= 0.0
    assert "rfid" in metrics["variable"]["per_epsilon"]["0.05"]
    assert len(_csv(tmp_path / "per_image.csv")[0]["fixed_2_lpips"]) > 0
    assert perceptual.fid.real.count == 8  # the originals are counted once, not once per setting


def test_max_budget_is_the_ltc_budget_when_it_is_smaller_than_the_grid():
    from evaluation.runner import max_budget
    from kolmogorov_tokenizers import create_model

    with pytest.warns(UserWarning):  # random base weights
        model = create_model("karl_demo", base_tokenizer="vqgan_demo", ltc_budget=32, encoder_width=48,
                             decoder_width=32, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2)
    assert model.num_2d_tokens == 64 and max_budget(model) == 32  # 32 = the budget it was trained to use
