"""Fidelity to the release, judged by the release's own numbers (tests/oracle/, copied from the project's
shared oracle; its README says how they were made).

The official KARL code was run on `karl_small` weights that anyone can rebuild from a seed (the recipes) and
on two photos. Here the same weights are saved as a release checkpoint, loaded with the public
`load_tokenizer` (no option set) and run:
  * inference: `encode` at each golden setting (VQGAN and VAE bases, quantised and continuous tokens,
    budgets 256 and 64, epsilons 0.03 to 0.09) must give the release's token counts exactly, its halting
    probabilities within 1e-3 and its 16 x 16-pooled reconstruction within 2e-3;
  * training: one stage-1 iteration with the release's two random draws fixed
    (`model(images, eic_budget=T, eic_condition=bin)`) must give its total loss and eps0 per image within
    1e-4 relative, and the listed gradient norms within 1e-3 relative.
The tolerances are those the release's own float noise allows (CPU, fp32).

karl_small is large for a CPU (270M values with its base): each variant's model is built once and shared by
its tests (module-scoped, parametrised fixture: pytest runs one variant's tests together and frees the model
before building the next).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kolmogorov_tokenizers import load_tokenizer
from kolmogorov_tokenizers.config import RELEASE_BEHAVIOUR

pytestmark = pytest.mark.slow  # karl_small on a CPU: minutes (still run in CI; `-m "not slow"` skips it)

ORACLE = Path(__file__).resolve().parent / "oracle"
GOLDEN = json.loads((ORACLE / "golden.json").read_text())
GOLDEN_TRAIN = json.loads((ORACLE / "golden_train.json").read_text())
VARIANTS = ("vqgan_quantized", "vqgan_continuous", "vae_quantized", "vae_continuous")
TRAIN_VARIANTS = tuple(step["variant"] for step in GOLDEN_TRAIN["steps"])

# The release's tolerances (oracle README): its own float noise on a CPU in fp32.
HALTING_PROB_ATOL = 1e-3
POOLED_ATOL = 2e-3
LOSS_RTOL = 1e-4
EPS0_RTOL = 1e-4
GRAD_NORM_RTOL = 1e-3


def _variant(result: dict) -> str:
    return f"{result['base']}_{'quantized' if result['quantized'] else 'continuous'}"


def release_state_dict(variant: str) -> dict:
    """The recipe's state dict, in the release's key order, from ONE generator (oracle README)."""
    recipe = json.loads((ORACLE / f"recipe_{variant}.json").read_text())
    g = torch.Generator().manual_seed(recipe["seed"])
    return {key: torch.randn(*shape, generator=g) * std + mean if std > 0 else torch.full(shape, float(mean))
            for key, shape, std, mean in recipe["tensors"]}


@pytest.fixture(scope="module")
def oracle_images() -> torch.Tensor:
    """(2, 3, 256, 256) float32 in [0, 1], in golden.json's order."""
    images = [np.array(Image.open(ORACLE / name).convert("RGB")) for name in GOLDEN["images"]]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module", params=VARIANTS)
def release_model(request, tmp_path_factory):
    """The variant's weights saved as the release saves them, loaded with `load_tokenizer` and nothing else."""
    variant = request.param
    sd = release_state_dict(variant)
    path = tmp_path_factory.mktemp(variant) / "checkpoint-last.pth"
    torch.save({"model": sd, "ema": sd, "epoch": 0,
                "args": argparse.Namespace(model="karl_small", input_size=256)}, path)
    del sd
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor of the file must be used, none ignored
        model = load_tokenizer(path)
    path.unlink()  # ~1 GB: free the disk while the model lives
    yield variant, model
    del model


INFERENCE = [pytest.param(_variant(r), i, id=f"{_variant(r)}-T{r['budget']}-eps{r['epsilon']}")
             for i, r in enumerate(GOLDEN["results"])]


@pytest.mark.parametrize("release_model,index", INFERENCE, indirect=["release_model"], scope="module")
def test_encode_matches_the_release(release_model, index, oracle_images):
    variant, model = release_model
    gold = GOLDEN["results"][index]
    assert not model.training
    for name, value in RELEASE_BEHAVIOUR.items():  # a release checkpoint always gets the release's behaviour
        assert getattr(model.config, name) == value, name
    out = model.encode(oracle_images, input_token_budget=gold["budget"],
                       desired_reconstruction_quality=gold["epsilon"])
    assert out.info["num_tokens"].tolist() == gold["num_tokens"]
    torch.testing.assert_close(out.info["halting_prob"], torch.tensor(gold["halting_prob"]),
                               atol=HALTING_PROB_ATOL, rtol=0)
    pooled = F.avg_pool2d(out.reconstruction.clamp(0, 1), 16).flatten(1)  # (2, 3 * 16 * 16), channel-major
    torch.testing.assert_close(pooled, torch.tensor(gold["reconstruction_pooled16"]), atol=POOLED_ATOL, rtol=0)


# Our loss names -> the release's logged terms (T = the phase's budget): our `rec` of a VQGAN model is the
# release's nll + code loss, logged here as `ce` and `code_mse`; the halting BCE of LTC is its two terms.
def _release_terms(step: dict, base: str) -> dict:
    T, L = step["eic_budget"], step["ltc_budget"]
    t = step["terms"]
    rel = {"eic/halt": t[f"latent_token_active_loss_bce_{T}_0"],
           "ltc/halt": t[f"latent_token_active_loss_bce_{L}"] + t.get(f"latent_token_halt_loss_bce_{L}", 0.0)}
    if base == "vqgan":
        rel.update({"eic/ce": t[f"nll_loss_{T}_0"], "eic/code_mse": t[f"code_loss_{T}_0"],
                    "ltc/ce": t[f"nll_loss_{L}_1"], "ltc/code_mse": t[f"code_loss_{L}_1"]})
    else:
        rel.update({"eic/latent_mse": t[f"code_loss_{T}_0"], "ltc/latent_mse": t[f"code_loss_{L}_1"]})
    if f"quantization_loss_{T}" in t:
        rel.update({"eic/quant": t[f"quantization_loss_{T}"], "ltc/quant": t[f"quantization_loss_{L}"]})
    return rel


@pytest.mark.parametrize("release_model", TRAIN_VARIANTS, indirect=True)
def test_one_training_iteration_matches_the_release(release_model, oracle_images):
    variant, model = release_model
    step = next(s for s in GOLDEN_TRAIN["steps"] if s["variant"] == variant)
    # The oracle replaces the release's VAE posterior sample by its mean: the documented switch for that.
    model.config.vae_sample_posterior = False
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        karl = [p for n, p in model.named_parameters() if not n.startswith("base_tokenizer.")]
        base = [p for n, p in model.named_parameters() if n.startswith("base_tokenizer.")]
        assert all(p.requires_grad for p in karl) and not any(p.requires_grad for p in base)  # stage 1
        out = model(oracle_images, eic_budget=step["eic_budget"], eic_condition=step["eic_epsilon_bin"])
        out.loss.backward()
    finally:
        model.eval()
    assert out.phases["eic"].budget == step["eic_budget"] and out.phases["ltc"].budget == step["ltc_budget"]
    assert torch.allclose(out.phases["eic"].epsilon, torch.tensor(step["eic_epsilon"]))
    torch.testing.assert_close(out.loss.detach(), torch.tensor(step["total_loss"]), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(out.phases["eic"].eps0, torch.tensor(step["eic_reconstruction_l1"]),
                               rtol=EPS0_RTOL, atol=0)
    ours = {**{k: float(v.detach()) for k, v in out.losses.items()}, **out.logs}
    for name, value in _release_terms(step, variant.split("_")[0]).items():  # which term, should one differ
        assert ours[name] == pytest.approx(value, rel=1e-3, abs=1e-6), name
    params = dict(model.named_parameters())  # our parameter names are the release's
    for name, norm in step["grad_norm"].items():
        assert float(params[name].grad.norm()) == pytest.approx(norm, rel=GRAD_NORM_RTOL), name
