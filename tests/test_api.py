"""The inference API: encode / decode and their input checks (kolmogorov_tokenizers/karl.py)."""
import math
import warnings

import pytest
import torch

from kolmogorov_tokenizers import create_model

TINY = dict(encoder_width=64, decoder_width=64, encoder_layers=1, decoder_layers=1, encoder_heads=2,
            decoder_heads=2, halting_hidden=16)


def _model(quantize=False, base="vqgan_demo"):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = create_model("karl_demo", base_tokenizer=base, quantize_latent=quantize, **TINY)
    # Put omega around the threshold so that an untrained model halts a varied share of tokens.
    with torch.no_grad():
        m.halting_mlp[2].weight.mul_(200.0)
        m.halting_mlp[2].bias.fill_(math.log(0.75 / 0.25))
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_encode_unpacks_into_embedding_reconstruction_info(model, images):
    embedding, reconstruction, info = model.encode(images)
    assert reconstruction.shape == (3, 3, 64, 64) and reconstruction.min() >= 0 and reconstruction.max() <= 1
    assert info["budget"] == 64  # default budget = the LTC budget N of an 8 x 8 grid
    assert info["tokens"].shape == (3, 64, 12) and info["indices"] is None
    assert info["mask"].shape == (3, 64) and info["halting_prob"].shape == (3, 64)
    torch.testing.assert_close(info["mask"], info["halting_prob"] <= 0.75)
    assert torch.equal(info["num_tokens"], info["mask"].sum(1))
    assert 0 < int(info["num_tokens"].min()) and int(info["num_tokens"].max()) < 64  # the test set-up halts some
    for b, active in enumerate(embedding):
        assert len(active) == int(info["num_tokens"][b])
        assert torch.equal(active.tokens, info["tokens"][b][info["mask"][b]])
    assert torch.allclose(info["epsilon"], torch.tensor(0.05))


def test_decode_from_tokens_equals_the_encode_reconstruction(model, images):
    _, reconstruction, info = model.encode(images)
    torch.testing.assert_close(model.decode(info["tokens"], info["mask"]), reconstruction, atol=1e-5, rtol=1e-4)
    embedding, _, _ = model.encode(images)
    torch.testing.assert_close(model.decode(embedding), reconstruction, atol=1e-5, rtol=1e-4)


def test_quantised_model_decodes_from_code_indices():
    m = _model(quantize=True)
    x = torch.rand(2, 3, 64, 64)
    embedding, reconstruction, info = m.encode(x)
    assert info["indices"].shape == (2, 64) and embedding[0].indices.shape == (len(embedding[0]),)
    torch.testing.assert_close(m.decode(info["indices"], info["mask"]), reconstruction, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="continuous"):
        _model().decode(info["indices"], info["mask"])


def test_budget_lists_per_image_epsilon_and_epsilon_zero(model, images):
    results = model.encode(images, input_token_budget=[8, 32])
    assert [r.info["budget"] for r in results] == [8, 32]
    assert results[0].info["tokens"].shape[1] == 8 and (results[0].num_tokens <= 8).all()
    r = model.encode(images, desired_reconstruction_quality=torch.tensor([0.0, 0.031, 0.38]))
    torch.testing.assert_close(r.info["epsilon"], torch.tensor([0.005, 0.04, 0.38]))  # snapped up to a bin


def test_epsilon_condition_reaches_the_encoder(images):
    m = _model()
    # Fresh embeddings are each bin's value repeated, i.e. constant vectors that encoder_ln_pre maps to
    # the same point (the release's init); training separates them. Emulate that here.
    with torch.no_grad():
        m.rec_loss_embeddings.add_(torch.randn_like(m.rec_loss_embeddings))
    a = m.encode(images, desired_reconstruction_quality=0.0).info["tokens"]
    b = m.encode(images, desired_reconstruction_quality=0.3).info["tokens"]
    assert not torch.allclose(a, b)


def test_encode_and_decode_build_no_autograd_graph(images):
    """Inference holds no activations for a backward pass: outputs are plain tensors, in train or eval mode."""
    for m in (_model().eval(), _model().train()):
        embedding, reconstruction, info = m.encode(images)
        assert not reconstruction.requires_grad and not info["tokens"].requires_grad
        assert not m.decode(embedding).requires_grad


def test_encode_restores_training_mode_and_is_deterministic(images):
    m = _model().train()
    r1, r2 = m.encode(images), m.encode(images)
    assert m.training
    assert torch.equal(r1.reconstruction, r2.reconstruction)


@pytest.mark.parametrize("bad,match", [
    ("not a tensor", "torch.Tensor"),
    (torch.rand(3, 64, 64), r"\(B, 3, H, W\)"),
    (torch.rand(1, 1, 64, 64), r"\(B, 3, H, W\)"),
    (torch.randint(0, 255, (1, 3, 64, 64)), "float"),
    (torch.rand(1, 3, 64, 64) * 255, r"\[0, 1\]"),
    (torch.full((1, 3, 64, 64), float("nan")), r"\[0, 1\]"),
    (torch.rand(1, 3, 32, 32), "input size 64x64"),
    (torch.rand(1, 3, 60, 60), "multiple of"),
])
def test_encode_rejects_bad_images(model, bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        model.encode(bad)


@pytest.mark.parametrize("budget,match", [(0, r"\[1, 128\]"), (129, r"\[1, 128\]"), (2.5, "integer"),
                                          ("64", "integer"), ([], "empty")])
def test_encode_rejects_bad_budgets(model, images, budget, match):
    with pytest.raises((TypeError, ValueError), match=match):
        model.encode(images, input_token_budget=budget)


@pytest.mark.parametrize("eps,match", [(-0.01, r"\[0, 0.38\]"), (0.5, r"\[0, 0.38\]"), (float("nan"), r"\[0, 0.38\]"),
                                       ([0.1, 0.2], "one value per image")])
def test_encode_rejects_bad_epsilon(model, images, eps, match):
    with pytest.raises(ValueError, match=match):
        model.encode(images, desired_reconstruction_quality=eps)


def test_decode_rejects_bad_tokens(model):
    with pytest.raises(ValueError, match=r"\(B, T, 12\)"):
        model.decode(torch.randn(1, 4, 7))
    with pytest.raises(ValueError, match=r"\[1, 128\]"):
        model.decode(torch.randn(1, 129, 12))
    with pytest.raises(ValueError, match="mask"):
        model.decode(torch.randn(1, 4, 12), torch.ones(1, 5, dtype=torch.bool))
