"""The halting-headroom diagnostic (research/halting_probes.py, research/halting_headroom.py):
ideal-predictor BCEs on hand-made error curves, and the script on a small checkpoint."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from research.halting_probes import ideal_halting_bce, ideal_token_counts, ridge_loo_r2
from kolmogorov_tokenizers.conditioning import EpsilonConditioner
from kolmogorov_tokenizers.config import KARLConfig
from research import halting_headroom

BINS = [0.01, 0.02, 0.03, 0.04]


def _bins(curves) -> np.ndarray:
    """Condition bins of error curves, snapped by KARL's own conditioning (as the script does)."""
    curves = torch.as_tensor(curves, dtype=torch.float32)
    return EpsilonConditioner(KARLConfig(epsilon_bins=BINS), 16).snap(curves.flatten()).view(curves.shape).numpy()


def test_snap_picks_the_smallest_bin_at_or_above():
    assert _bins(np.array([0.0, 0.01, 0.011, 0.03, 0.5])).tolist() == [0, 0, 1, 2, 3]


def test_position_only_bce_by_hand():
    # N = 2, budgets 1 and 2: targets [0, 1] and [0, 0]; P(halt) = [0, 0.5]; each pair averages
    # (~0 + ln 2) / 2 over its two tokens.
    curves = np.array([[0.015, 0.015]])  # one bin for both budgets
    r = ideal_halting_bce(_bins(curves), [1, 2], 2)
    assert r["position"] == pytest.approx(math.log(2) / 2, abs=1e-5)
    # one bin everywhere: neither the bin nor the image adds anything
    assert r["position_and_bin"] == pytest.approx(r["position"], abs=1e-9)
    assert r["image_curve"] == pytest.approx(r["position"], abs=1e-9)
    assert r["bins_per_image"] == 1.0


def test_a_bin_per_budget_makes_the_image_predictor_exact():
    curves = np.array([[0.035, 0.025, 0.015, 0.005]])  # bins 3, 2, 1, 0: the bin names the budget
    r = ideal_halting_bce(_bins(curves), [1, 2, 3, 4], 4)
    assert r["image_curve"] < 1e-4 < r["position"]
    assert r["bins_per_image"] == 4.0


def test_the_image_tells_more_than_the_bin_when_images_differ():
    # image B reaches each bin one budget earlier than image A, so a bin alone does not name the budget
    curves = np.array([[0.035, 0.025, 0.015, 0.005], [0.025, 0.015, 0.005, 0.005]])
    r = ideal_halting_bce(_bins(curves), [1, 2, 3, 4], 4)
    assert r["image_curve"] < r["position_and_bin"] < r["position"]
    assert r["bins_per_image"] == 3.5


def test_budgets_above_n_are_left_out_and_bad_shapes_refused():
    r = ideal_halting_bce(_bins(np.array([[0.015, 0.015, 0.015]])), [1, 2, 8], 2)
    assert r["budgets"] == [1, 2]
    with pytest.raises(ValueError, match="bin_idx must have shape"):
        ideal_halting_bce(_bins(np.zeros((2, 3))), [1, 2], 2)
    with pytest.raises(ValueError, match="no budget <= N"):
        ideal_halting_bce(_bins(np.zeros((1, 1))), [8], 2)


def test_ideal_counts_without_augmentation_by_hand():
    # budgets 1 and 2 (N = 2) land in one bin: P(halt) = [0, 0.5] <= 0.75, so both tokens are kept; a bin the
    # image never reaches has no ideal count.
    counts = ideal_token_counts(np.array([[0, 0]]), [1, 2], 2, query_bins=[0, 1], num_bins=3)
    assert counts[0, 0] == 2 and np.isnan(counts[0, 1])
    # one bin per budget: the bin names the budget, so the ideal head keeps exactly that many
    counts = ideal_token_counts(np.array([[1, 0]]), [1, 2], 2, query_bins=[1, 0], num_bins=3)
    assert counts.tolist() == [[1.0, 2.0]]


def test_ideal_counts_follow_the_threshold():
    # three budgets in one bin: P(halt) = [0, 1/3, 2/3]; halting above 0.75 keeps 3, above 0.5 keeps 2
    assert ideal_token_counts(np.zeros((1, 3), int), [1, 2, 3], 3, [0], 1)[0, 0] == 3
    assert ideal_token_counts(np.zeros((1, 3), int), [1, 2, 3], 3, [0], 1, threshold=0.5)[0, 0] == 2


def test_ideal_counts_with_condition_augmentation_by_hand():
    # budgets 1 (the small one) and 2 (= N, dT = 0), both reaching bin 0 of 3. Augmented at p = 1, T = 1 is
    # spread over bins 0, 1, 2 (1/6 each) and T = 2 stays in [min(0, 1), 0] = bin 0 (1/2). Bin 0:
    # P(halt token 1) = (1/6) / (1/6 + 1/2) = 0.25, keep 2; bins 1 and 2 hold only T = 1: keep 1.
    counts = ideal_token_counts(np.array([[0, 0]]), [1, 2], 2, [0, 1, 2], num_bins=3, augmentation_prob=1.0,
                                small_budget=1)
    assert counts.tolist() == [[2.0, 1.0, 1.0]]
    # an image stuck in bin 2 (e.g. noise): dT = 0 commands every smaller bin from 1 up, with "keep all"
    counts = ideal_token_counts(np.array([[2, 2]]), [1, 2], 2, [0, 1, 2], num_bins=3, augmentation_prob=1.0,
                                small_budget=1)
    assert np.isnan(counts[0, 0]) and counts[0, 1] == 2
    # at bin 2: T = 1 (1/2, not moved: it is the largest bin) and T = 2 (1/4): P(halt token 1) = 2/3, keep 2
    assert counts[0, 2] == 2
    with pytest.raises(ValueError, match="augmentation_prob"):
        ideal_token_counts(np.array([[0, 0]]), [1, 2], 2, [0], 3, augmentation_prob=1.5)


def test_repeated_budgets_weigh_more_and_the_threshold_itself_keeps():
    # one bin, N = 2: P(halt token 1) = share of draws with T = 1. KARL halts only above 0.75.
    one_bin = lambda budgets: ideal_token_counts(np.zeros((1, len(budgets)), int), budgets, 2, [0], 1)[0, 0]
    assert one_bin([1, 1, 2]) == 2  # 2/3
    assert one_bin([1, 1, 1, 2]) == 2  # exactly 0.75: kept
    assert one_bin([1, 1, 1, 1, 2]) == 1  # 0.8: halted


def test_budgets_above_n_keep_all_n():
    counts = ideal_token_counts(np.array([[1, 0]]), [2, 4], 2, [1, 0], num_bins=2)
    assert counts.tolist() == [[2.0, 2.0]]


def _brute_force_loo_r2(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """Refit the ridge n times, each without one image (intercept free, features standardised on all n)."""
    x = (x - x.mean(0)) / x.std(0)
    design = np.concatenate([np.ones((len(y), 1)), x], axis=1)
    penalty = alpha * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    press = 0.0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        w = np.linalg.solve(design[rest].T @ design[rest] + penalty, design[rest].T @ y[rest])
        press += (y[i] - design[i] @ w) ** 2
    return 1.0 - press / ((y - y.mean()) ** 2).sum()


def test_ridge_loo_r2_equals_refitting_without_each_image():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    y = x @ rng.normal(size=5) + 0.5 * rng.normal(size=20)
    for alpha in (0.1, 3.0, 100.0):
        r2, picked = ridge_loo_r2(x, y, alphas=[alpha])
        assert picked == alpha and r2 == pytest.approx(_brute_force_loo_r2(x, y, alpha), abs=1e-9)


def test_ridge_loo_r2_tells_informative_from_useless_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16))
    y = x[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=60)
    informative, _ = ridge_loo_r2(x, y)
    useless, _ = ridge_loo_r2(rng.normal(size=(60, 16)), y)
    assert informative > 0.95 and useless < 0.2
    # the picked alpha is the grid's best: no single alpha beats it
    assert informative >= max(ridge_loo_r2(x, y, alphas=[a])[0] for a in (0.01, 1.0, 1e4)) - 1e-12


def test_ridge_loo_r2_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 3 images"):
        ridge_loo_r2(np.zeros((2, 4)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="must be"):
        ridge_loo_r2(np.zeros((5, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="same for every image"):
        ridge_loo_r2(np.random.default_rng(0).normal(size=(5, 2)), np.ones(5))
    with pytest.raises(ValueError, match="finite"):
        ridge_loo_r2(np.full((5, 2), np.nan), np.arange(5.0))


def _small_ckpt(folder: Path, **overrides) -> Path:
    from base_tokenizers import create_base_tokenizer
    from kolmogorov_tokenizers.checkpoint import model_state_dict
    from kolmogorov_tokenizers.registry import create_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = create_base_tokenizer("patch_vae_demo", resolution=32, width=32)
        model = create_model("karl_demo", base_tokenizer=base, input_size=32, encoder_width=32, decoder_width=32,
                             encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2,
                             halting_hidden=8, bank_size=32, **overrides)
    path = folder / "checkpoint-last.pth"
    torch.save({"model": model_state_dict(model), "model_config": model.config.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    return _small_ckpt(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_script_prints_and_writes_the_three_values(small_ckpt, image_folder, tmp_path, capsys):
    out = tmp_path / "headroom.json"
    code = halting_headroom.main(["--checkpoint", str(small_ckpt), "--data_path", str(image_folder),
                                                     "--batch_size", "2", "--device", "cpu", "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ideal LTC halting BCE: position" in printed
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["budgets"] == list(range(1, 17))  # 4x4 grid: budget step 1
    assert result["image_curve"] <= result["position_and_bin"] + 1e-9 <= result["position"] + 2e-9
    assert len(result["mean_l1_per_budget"]) == len(result["budgets"])
    assert "learned / ideal" in printed
    table = result["token_counts"]
    assert table["epsilons"] == [0.03, 0.05, 0.07, 0.09] and table["budget"] == 16
    group = table["groups"]["all"]
    assert group["images"] == 3 and all(0 <= v <= 16 for v in group["learned"])
    assert all(v is None or 1 <= v <= 16 for v in group["ideal"])
    probe = result["encoder_probe"]
    assert probe["epsilon"] == 0.05 and probe["images"] == 3
    assert probe["r2_loo"] <= 1.0 and probe["alpha"] > 0
    assert "encoder probe: leave-one-out R^2" in printed


def test_script_groups_counts_by_family(small_ckpt, image_folder, tmp_path):
    (image_folder / "metadata.csv").write_text("path,family\n0.png,flat\n1.png,noise\n2.png,noise\n")
    out = tmp_path / "headroom.json"
    assert halting_headroom.main(["--checkpoint", str(small_ckpt), "--data_path", str(image_folder),
                                                     "--device", "cpu", "--epsilons", "0.05", "--output", str(out)]) == 0
    groups = json.loads(out.read_text())["token_counts"]["groups"]
    assert {k: g["images"] for k, g in groups.items()} == {"all": 3, "flat": 1, "noise": 2}
    # the per-family learned counts average to the overall one
    assert groups["all"]["learned"][0] == pytest.approx((groups["flat"]["learned"][0] + 2 * groups["noise"]["learned"][0]) / 3, abs=0.02)


def test_script_bad_input_exits_2(small_ckpt, tmp_path, capsys):
    script = halting_headroom
    assert script.main(["--checkpoint", str(small_ckpt), "--data_path", str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert script.main(["--checkpoint", str(small_ckpt), "--data_path", str(tmp_path), "--budgets", "99"]) == 2
    assert "--budgets must be in" in capsys.readouterr().err
    assert script.main(["--checkpoint", str(small_ckpt), "--data_path", str(tmp_path), "--epsilons", "1.5"]) == 2
    assert "--epsilons must lie in" in capsys.readouterr().err
    assert script.main(["--checkpoint", str(small_ckpt), "--data_path", str(tmp_path), "--probe_epsilon", "-0.1"]) == 2
    assert "--probe_epsilon must lie in" in capsys.readouterr().err


def test_script_stops_at_a_smaller_ltc_budget(image_folder, tmp_path):
    ckpt = _small_ckpt(tmp_path, ltc_budget=8)  # trained to use 8 of its 16 grid tokens
    out = tmp_path / "headroom.json"
    assert halting_headroom.main(["--checkpoint", str(ckpt), "--data_path", str(image_folder),
                                                     "--device", "cpu", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["budgets"] == list(range(1, 9))


def test_halting_inputs_reads_the_head_input_and_leaves_no_hook(small_ckpt, image_folder):
    from research.halting_probes import halting_inputs
    from evaluation.inputs import load_eval_data
    from evaluation.main import load_model

    model = load_model(str(small_ckpt), torch.device("cpu"))
    data, _ = load_eval_data(str(image_folder), 32, "auto", 2, None)
    features = halting_inputs(model, data, 0.05, torch.device("cpu"))
    assert features.shape == (3, model.config.encoder_width)
    assert not model.halting_mlp._forward_hooks  # the model is left as it was
    # the same numbers as the head's own input, computed by hand for the first image
    first = next(iter(data.batches())).images[:1]
    with torch.no_grad():
        enc = model.base_tokenizer.encode(first)
        seen = []
        handle = model.halting_mlp.register_forward_hook(lambda _m, i, _o: seen.append(i[0]))
        model.encode_tokens(first, enc.latent, 16, model.conditioning.snap(torch.tensor([0.05])))
        handle.remove()
    assert np.allclose(features[0], seen[0].mean(1)[0].numpy(), atol=1e-5)


def test_script_reports_why_the_probe_was_skipped(small_ckpt, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "two"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "headroom.json"
    assert halting_headroom.main(["--checkpoint", str(small_ckpt), "--data_path", str(folder),
                                                     "--device", "cpu", "--output", str(out)]) == 0
    probe = json.loads(out.read_text())["encoder_probe"]
    assert probe["r2_loo"] is None and "at least 3 images" in probe["skipped"]
    assert "encoder probe: not computed (need at least 3 images" in capsys.readouterr().out
