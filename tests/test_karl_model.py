"""The KARL model: halting semantics, both training phases, gradients, learning (kolmogorov_tokenizers/karl.py)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from base_tokenizers.base import BaseEncoding, BaseTokenizer
from kolmogorov_tokenizers import create_model
from kolmogorov_tokenizers.karl import TrainOutput
from modules.halting import halted_from_prob, halting_loss


class PatchBase(BaseTokenizer):
    """A lossless 'base tokenizer' (pixel unshuffle, f=4): reconstruction error then depends only on KARL,
    so token counts can track image complexity in a short test run."""

    kind, embed_dim, downsample_factor = "vae", 48, 4

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.set_trainable(False)

    def encode(self, images):
        z = F.pixel_unshuffle(images, 4)
        return BaseEncoding(z, z, None)

    def decode(self, latent):
        return F.pixel_shuffle(latent, 4)

    def last_layer(self):
        return self.dummy


TINY = dict(encoder_width=64, decoder_width=64, encoder_layers=2, decoder_layers=2, encoder_heads=4,
            decoder_heads=4, halting_hidden=32)


def tiny_demo_model(base="vqgan_demo", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model("karl_demo", base_tokenizer=base, **{**TINY, **kw})


def patch_model(**kw):
    return create_model("karl_demo", base_tokenizer=PatchBase(), input_size=16, bank_size=32, pos_embed_size=4,
                        **{**TINY, **kw})


def test_budgets_scale_with_the_8x8_grid():
    m = tiny_demo_model()
    assert m.num_2d_tokens == 64 and m.ltc_budget == 64
    assert m.conditioning.eic_budget_choices == list(range(4, 93, 4))
    with pytest.raises(ValueError, match="bank_size"):
        tiny_demo_model(bank_size=64)  # smaller than the largest EIC budget 92


def _halted_pattern(B, T):
    g = torch.Generator().manual_seed(1)
    halted = torch.rand(B, T, generator=g) < 0.5
    halted[0] = False  # one row with nothing halted
    halted[1, :] = True  # one row with everything halted
    return halted


@pytest.mark.parametrize("base", ["vqgan_demo", "vae_demo"])
def test_decoder_outputs_ignore_halted_tokens_but_not_active_ones(base):
    torch.manual_seed(0)
    m = tiny_demo_model(base).eval()
    B, T = 4, 20
    tokens = torch.randn(B, T, 12)
    halted = _halted_pattern(B, T)
    with torch.no_grad():
        ref = m.decode_tokens(tokens, halted)
        changed_halted = torch.where(halted.unsqueeze(-1), torch.randn_like(tokens) * 5, tokens)
        torch.testing.assert_close(m.decode_tokens(changed_halted, halted), ref, atol=1e-5, rtol=1e-5)
        changed_active = torch.where(halted.unsqueeze(-1), tokens, torch.randn_like(tokens) * 10)
        diff = (m.decode_tokens(changed_active, halted) - ref).abs().flatten(1).amax(1)
    assert (diff[[0, 2, 3]] > 1e-4).all()  # rows with active tokens react
    assert diff[1] < 1e-6  # the all-halted row has no active token to react to


def test_dropping_halted_tokens_equals_masking_them():
    torch.manual_seed(0)
    masked = tiny_demo_model(tile_halting_mask_in_training=False)  # each image's own mask, also in train mode
    dropped = tiny_demo_model(drop_halted_tokens=True, tile_halting_mask_in_training=False)
    dropped.load_state_dict(masked.state_dict())
    tokens = torch.randn(4, 24, 12)
    halted = _halted_pattern(4, 24)
    with torch.no_grad():
        torch.testing.assert_close(dropped.decode_tokens(tokens, halted), masked.decode_tokens(tokens, halted),
                                   atol=1e-5, rtol=1e-4)


def test_reference_attention_backend_gives_the_same_model_outputs():
    from modules.transformer import set_attention_backend
    torch.manual_seed(0)
    m = tiny_demo_model().eval()
    tokens, halted = torch.randn(3, 16, 12), _halted_pattern(3, 16)
    with torch.no_grad():
        fast = m.decode_tokens(tokens, halted)
        set_attention_backend("reference")
        try:
            ref = m.decode_tokens(tokens, halted)
        finally:
            set_attention_backend("sdpa")
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("base,quantize", [("vqgan_demo", False), ("vqgan_demo", True), ("vae_demo", False)])
def test_training_step_has_both_phases_with_finite_losses(base, quantize):
    torch.manual_seed(0)
    m = tiny_demo_model(base, quantize_latent=quantize, eic_budget_choices=(8,)).train()
    out = m(torch.rand(2, 3, 64, 64))
    assert isinstance(out, TrainOutput)
    expected = {f"{p}/{n}" for p in ("eic", "ltc") for n in ("rec", "halt") + (("quant",) if quantize else ())}
    assert set(out.losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.losses.values())
    torch.testing.assert_close(out.loss, sum(out.losses.values()))
    assert out.phases["eic"].budget == 8 and out.phases["ltc"].budget == 64  # LTC = N
    assert out.logs["ltc/dT"] == 56.0
    ltc = out.phases["ltc"]
    assert ltc.mask.shape == (2, 64) and torch.equal(ltc.num_tokens, ltc.mask.sum(1))
    # stage 1 decodes pixels only for the EIC error measurement, without gradients
    assert out.phases["eic"].reconstruction.shape == (2, 3, 64, 64) and ltc.reconstruction is None
    assert not out.phases["eic"].reconstruction.requires_grad
    # LTC's condition is eps0 snapped to a bin: always a bin value >= eps0
    bins = torch.tensor(m.config.epsilon_bins)
    assert all(bool((bins - e).abs().min() < 1e-7) for e in ltc.epsilon)


def _grads(m, loss):
    m.zero_grad()
    loss.backward(retain_graph=True)
    return {n: (p.grad is not None and p.grad.abs().sum() > 0) for n, p in m.named_parameters()}


def test_gradients_reach_the_right_parameters():
    torch.manual_seed(0)
    m = tiny_demo_model(eic_budget_choices=(8,)).train()
    out = m(torch.rand(2, 3, 64, 64))
    rec = _grads(m, out.losses["eic/rec"] + out.losses["ltc/rec"])
    assert rec["decoder.ffn.2.weight"] and rec["encoder.transformer.0.attn.in_proj_weight"]
    assert rec["latent_tokens"] and rec["patch_embed.weight"] and rec["rec_loss_embeddings"]
    assert not rec["halting_mlp.2.weight"]  # the hard mask passes no gradient to the halting head
    halt = _grads(m, out.losses["eic/halt"] + out.losses["ltc/halt"])
    assert halt["halting_mlp.2.weight"] and halt["encoder_ln_post_halt.weight"]
    assert not halt["decoder.ffn.2.weight"]
    assert not any(g for n, g in rec.items() if n.startswith("base_tokenizer."))  # frozen in stage 1


def test_stage2_pixel_loss_is_called_per_phase_with_differentiable_reconstructions():
    torch.manual_seed(0)
    m = tiny_demo_model(eic_budget_choices=(8,)).train()
    m.base_tokenizer.set_trainable(True)
    calls = []

    def pixel_loss_fn(recon, images, num_tokens, phase):
        calls.append((phase, recon.requires_grad, recon.shape, num_tokens.tolist()))
        return (recon - images).abs().mean(), {"l1": 0.0}

    out = m(torch.rand(2, 3, 64, 64), pixel_loss_fn=pixel_loss_fn)
    assert [c[0] for c in calls] == ["eic", "ltc"] and all(c[1] for c in calls)
    assert calls[0][3] == [8, 8] and out.phases["eic"].reconstruction.shape == (2, 3, 64, 64)
    g = _grads(m, out.losses["ltc/rec"])
    assert g["decoder.ffn.2.weight"] and g["base_tokenizer." + m.base_tokenizer.kind + "." +
                                           next(n for n, _ in getattr(m.base_tokenizer, m.base_tokenizer.kind)
                                                .named_parameters() if n.startswith("decoder"))]


def test_curriculum_updates_only_in_training_and_eval_is_deterministic():
    torch.manual_seed(0)
    m = tiny_demo_model(eic_budget_choices=(8,))
    x = torch.rand(2, 3, 64, 64)
    m.train()
    out = m(x)
    w = m.conditioning.curriculum_weights
    assert (w < 1).any() or out.logs["eic/eps0_mean"] > 0.04  # bins >= the batch's min L1 decayed
    r1, r2 = m.encode(x), m.encode(x)
    assert torch.equal(r1.reconstruction, r2.reconstruction) and torch.equal(r1.info["tokens"], r2.info["tokens"])
    assert m.training  # encode restored the mode


TRAIN_STEPS = 300  # seeds 0 and 1: 16 tokens at eps 0.03 vs 11 at 0.2 (from ~100 steps on, fewer at 0.2)


@pytest.mark.slow
def test_brief_training_gives_fewer_tokens_at_larger_epsilon():
    """Upside-down RL in miniature: 8 images from flat to noise, ~300 iterations on a lossless base."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    g = torch.Generator().manual_seed(0)
    images = torch.stack([
        torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1).expand(3, 16, 16),
        torch.tensor([0.9, 0.1, 0.3]).view(3, 1, 1).expand(3, 16, 16),
        torch.stack([xx, yy, 1 - xx]), torch.stack([yy, 0.5 * torch.ones_like(yy), xx]),
        ((xx * 8).floor() % 2).expand(3, 16, 16) * 0.8 + 0.1,
        torch.stack([(xx * 6 + yy * 6).floor() % 2, (yy * 4).floor() % 2, 0.5 * torch.ones_like(xx)]),
        torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g),
    ]).float()
    m = patch_model().train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and fair to a shared machine
    try:
        for _ in range(TRAIN_STEPS):
            out = m(images)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    fine = m.encode(images, desired_reconstruction_quality=0.03).num_tokens.float().mean()
    coarse = m.encode(images, desired_reconstruction_quality=0.2).num_tokens.float().mean()
    assert coarse < fine, (coarse, fine)


def test_unfactorised_tokens_have_the_encoder_width():
    torch.manual_seed(0)
    m = tiny_demo_model(factorize_latent=False, eic_budget_choices=(8,))
    assert m.pre_quantizer_mlp is None and not any(k.startswith("pre_quantizer_mlp") for k in m.state_dict())
    out = m.train()(torch.rand(2, 3, 64, 64))
    assert torch.isfinite(out.loss)
    assert m.encode(torch.rand(1, 3, 64, 64)).info["tokens"].shape == (1, 64, 64)  # D = encoder width 64


def test_hard_vqgan_decoding_uses_the_argmax_codes():
    torch.manual_seed(0)
    soft = tiny_demo_model().eval()
    hard = tiny_demo_model(vqgan_hard_decode=True).eval()
    hard.load_state_dict(soft.state_dict())
    x = torch.rand(1, 3, 64, 64)
    info = soft.encode(x).info
    with torch.no_grad():
        logits = soft.decode_tokens(info["tokens"], ~info["mask"])  # (1, 64, K)
        codes = soft.base_tokenizer.codebook()[logits.argmax(-1)]  # (1, 64, C)
        expected = soft.base_tokenizer.decode(codes.transpose(1, 2).reshape(1, -1, 8, 8)).clamp(0, 1)
    torch.testing.assert_close(hard.encode(x).reconstruction, expected)
    assert not torch.allclose(soft.encode(x).reconstruction, expected)


def test_vae_base_is_sampled_in_training_and_read_at_its_mean_in_eval():
    """METHOD.md s.2: KARL trains on posterior.sample() * 0.2325 although the frozen VAE sits in eval mode;
    encode reads the posterior mean so that an image always gets the same tokens."""
    torch.manual_seed(0)
    model = tiny_demo_model(base="vae_demo")
    images = torch.rand(2, 3, 64, 64)
    model.train()
    assert not model.base_tokenizer.training  # frozen base stays in eval mode
    a, b = model.base_encode(images).latent, model.base_encode(images).latent
    assert not torch.allclose(a, b)  # two posterior samples
    model.eval()
    c, d = model.base_encode(images).latent, model.base_encode(images).latent
    assert torch.equal(c, d)
    mean = model.base_tokenizer.encode(images, sample=False).latent
    assert torch.allclose(c, mean)
    model.config.vae_sample_posterior = False
    model.train()
    assert torch.allclose(model.base_encode(images).latent, mean)


# --- halting_image_context (ours, off by default) --------------------------------------------------------------
def _head_inputs(m, images, budget=8):
    seen = []
    handle = m.halting_mlp.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            enc = m.base_encode(images)
            m.encode_tokens(images, enc.latent, budget, torch.zeros(len(images), dtype=torch.long))
    finally:
        handle.remove()
    return seen[0], enc.latent


def test_halting_image_context_is_off_by_default_so_the_release_keys_are_unchanged():
    w = TINY["encoder_width"]
    plain = tiny_demo_model()
    assert not any(k.startswith("halting_context_ln") for k in plain.state_dict())
    assert plain.halting_mlp[0].in_features == w
    with_context = tiny_demo_model(halting_image_context=True)
    assert with_context.halting_mlp[0].in_features == 3 * w
    assert "halting_context_ln.weight" in with_context.state_dict()


def test_halting_image_context_appends_the_grids_mean_and_std_to_every_token():
    torch.manual_seed(0)
    m = patch_model(halting_image_context=True).eval()
    nn.init.normal_(m.halting_context_ln.weight, 1.0, 0.3)  # a trained-looking affine, not the identity
    images = torch.rand(2, 3, 16, 16)
    images[1] = 0.3  # a flat image: every 2D token the same
    head_in, latent = _head_inputs(m, images)
    w = TINY["encoder_width"]
    assert head_in.shape == (2, 8, 3 * w)
    content = torch.cat([m.patch_embed(images), latent], dim=1).flatten(2).transpose(1, 2)  # (B, N, w)
    h = m.halting_context_ln(content).detach()
    expected = torch.cat([h.mean(1), h.std(1, unbiased=False)], dim=-1)  # (B, 2w)
    for t in range(8):  # the same per-image numbers beside every token's own features
        torch.testing.assert_close(head_in[:, t, w:], expected, atol=2e-3, rtol=1e-4)
    assert float(head_in[1, 0, 2 * w:].max()) < 2e-3  # flat image: std ~ 0 (sqrt of the 1e-6 floor)
    assert float(head_in[0, 0, 2 * w:].mean()) > 0.1


def test_halting_image_context_trains_from_the_halting_loss_even_on_flat_images():
    torch.manual_seed(0)
    m = tiny_demo_model(halting_image_context=True, eic_budget_choices=(8,)).train()
    images = torch.rand(2, 3, 64, 64)
    images[0] = 0.5  # exactly flat: the std's gradient must stay finite
    out = m(images)
    halt = _grads(m, out.losses["eic/halt"] + out.losses["ltc/halt"])
    assert halt["halting_context_ln.weight"] and halt["patch_embed.weight"]
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    rec = _grads(m, out.losses["eic/rec"] + out.losses["ltc/rec"])
    assert not rec["halting_context_ln.weight"]  # only the halting loss reads the statistics


def test_halting_image_context_lets_a_head_tell_flat_images_from_noise_quickly():
    """The reason for the setting: a head that must halt after 2 tokens on flat images and keep all 8 on
    noise learns it from the grid statistics in a few dozen steps, only the head updated. (Without the
    setting, the same 60 steps leave every image at 8 tokens: checked when this test was written.)"""
    torch.manual_seed(0)
    m = patch_model(halting_image_context=True).train()
    g = torch.Generator().manual_seed(0)
    flat = torch.rand(6, 3, 1, 1, generator=g).expand(6, 3, 16, 16)
    noise = torch.rand(6, 3, 16, 16, generator=g)
    images = torch.cat([flat, noise])
    targets = torch.zeros(12, 8)
    targets[:6, 2:] = 1.0  # flat: keep 2; noise: keep all
    params = list(m.halting_mlp.parameters()) + list(m.halting_context_ln.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    with torch.no_grad():
        latent = m.base_encode(images).latent
    cond = torch.zeros(12, dtype=torch.long)
    for _ in range(60):
        logit = m.encode_tokens(images, latent, 8, cond).halting_logit
        loss = F.binary_cross_entropy_with_logits(logit, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        omega = torch.sigmoid(m.encode_tokens(images, latent, 8, cond).halting_logit)
        kept = (~halted_from_prob(omega, m.config.halting_threshold)).sum(1)
    assert kept[:6].tolist() == [2] * 6 and kept[6:].tolist() == [8] * 6, kept


# --- the release's training-step details and the call that fixes an iteration's random draws -------------

def test_fixed_draws_make_an_iteration_reproducible_and_leave_sampling_alone():
    torch.manual_seed(0)
    m = tiny_demo_model(eic_budget_choices=(4, 8, 12)).train()
    x = torch.rand(2, 3, 64, 64)
    state = m.conditioning.generator.get_state()
    a = m(x, eic_budget=12, eic_condition=3)
    assert torch.equal(m.conditioning.generator.get_state(), state)  # given draws do not advance the generator
    b = m(x, eic_budget=12, eic_condition=torch.tensor([3, 3]))
    assert a.phases["eic"].budget == 12 and torch.equal(a.phases["eic"].epsilon, torch.full((2,), 0.03))
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    assert a.phases["eic"].eps0.shape == (2,)
    budgets = {m(x).phases["eic"].budget for _ in range(20)}  # model(images) still samples T
    assert budgets == {4, 8, 12}
    with pytest.raises(ValueError, match=r"eic_condition bin indices must be in \[0, 18\]"):
        m(x, eic_budget=8, eic_condition=19)
    with pytest.raises(TypeError, match="epsilon-bin indices"):
        m(x, eic_budget=8, eic_condition=0.03)
    with pytest.raises(ValueError, match="one bin index or one per image"):
        m(x, eic_condition=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="input_token_budget must be in"):
        m(x, eic_budget=1000)


def _ltc_halting_logits(m, x, T, condition):
    """Re-run the LTC encoder of an iteration whose draws were fixed: (B, T_ltc) logits, targets."""
    with torch.no_grad():
        enc = m.base_encode(x)
        out = m(x, eic_budget=T, eic_condition=condition)
        ltc = m.encode_tokens(x, enc.latent, out.phases["ltc"].budget, m.conditioning.snap(out.phases["eic"].eps0))
    targets = m.conditioning.halting_targets(T, out.phases["ltc"].budget, x.shape[0], x.device)
    return out, ltc.halting_logit, targets


@pytest.mark.parametrize("reduction", ["split", "mean"])
def test_ltc_halting_loss_is_two_means_as_in_the_release_or_one_mean(reduction):
    torch.manual_seed(0)
    m = tiny_demo_model(halting_loss_reduction=reduction).eval()  # eval: no curriculum update, same logits
    x = torch.rand(2, 3, 64, 64)
    out, logit, targets = _ltc_halting_logits(m, x, 16, 0)
    bce = F.binary_cross_entropy_with_logits
    if reduction == "split":  # mean over the 48 halted tokens + mean over the 16 kept ones
        expected = bce(logit[:, 16:], torch.ones(2, 48)) + bce(logit[:, :16], torch.zeros(2, 16))
    else:
        expected = bce(logit, targets)
    torch.testing.assert_close(out.losses["ltc/halt"], expected)
    assert tiny_demo_model().config.halting_loss_reduction == "split"  # the release's, by default


def test_halting_loss_weighs_each_side_once_and_refuses_an_unknown_reduction():
    logit = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, 1.5]])
    targets = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2)  # 3 kept, 1 halted: "split" does not let 3 outvote 1
    bce = F.binary_cross_entropy_with_logits
    torch.testing.assert_close(halting_loss(logit, targets),
                               bce(logit[:, :3], targets[:, :3]) + bce(logit[:, 3:], targets[:, 3:]))
    keep_all = torch.zeros(2, 4)  # EIC: nothing halts, so "split" is the plain mean
    torch.testing.assert_close(halting_loss(logit, keep_all), bce(logit, keep_all))
    with pytest.raises(ValueError, match="split"):
        halting_loss(logit, targets, "sum")


def test_ltc_runs_the_base_budget_even_after_a_larger_eic_budget_as_the_release():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    release = tiny_demo_model().train()
    out = release(x, eic_budget=92, eic_condition=0)
    assert out.phases["ltc"].budget == 64 and out.logs["ltc/dT"] == 0.0  # every target: keep
    ours = tiny_demo_model(ltc_budget_at_least_eic=True).train()
    assert ours(x, eic_budget=92, eic_condition=0).phases["ltc"].budget == 92


@pytest.mark.parametrize("clamp", [False, True])
def test_eps0_is_measured_on_the_raw_or_the_clamped_reconstruction(clamp):
    torch.manual_seed(0)
    m = tiny_demo_model(eps0_clamp=clamp).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = m(x, eic_budget=8, eic_condition=0)
    x_hat = out.phases["eic"].reconstruction  # stage 1: the eps0 decode, raw
    assert bool((x_hat < 0).any() or (x_hat > 1).any())  # an untrained model leaves [0, 1]: the choice matters
    expected = ((x_hat.clamp(0, 1) if clamp else x_hat) - x).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.phases["eic"].eps0, expected)


@pytest.mark.parametrize("pixel_range", ["unit", "signed"])
def test_vae_pixel_range_is_the_models_setting_and_reaches_its_base(pixel_range):
    torch.manual_seed(0)
    m = tiny_demo_model("vae_demo", vae_pixel_range=pixel_range).eval()
    assert m.base_tokenizer.pixel_range == pixel_range
    assert m.config.base_tokenizer_config["pixel_range"] == pixel_range  # recorded with the checkpoint
    x = torch.rand(2, 3, 64, 64)
    net_in = x if pixel_range == "unit" else x * 2 - 1
    with torch.no_grad():
        expected = m.base_tokenizer.vae.posterior(net_in).mean * m.base_tokenizer.scale
        torch.testing.assert_close(m.base_encode(x).latent, expected)


@pytest.mark.parametrize("codebook_grad", [False, True])
def test_stage2_moves_the_vqgan_codebook_only_when_asked(codebook_grad):
    """The release's soft code reads the codebook's values without gradient: its stage 2 keeps it fixed."""
    torch.manual_seed(0)
    m = tiny_demo_model(vqgan_soft_code_codebook_grad=codebook_grad).train()
    m.base_tokenizer.set_trainable(True)
    out = m(torch.rand(2, 3, 64, 64), eic_budget=8, eic_condition=0,
            pixel_loss_fn=lambda recon, images, n, phase: ((recon - images).abs().mean(), {}))
    g = _grads(m, out.losses["ltc/rec"])
    assert g["base_tokenizer.vqgan.quantize.embedding.weight"] == codebook_grad
    assert g["decoder.ffn.2.weight"]


def test_tiled_training_masks_are_what_multihead_attention_does_with_the_releases_repeat():
    """The release passes `mask.repeat(heads, 1, 1)` (True = blocked) to nn.MultiheadAttention; our tiled
    per-head masks must give the same attention output, and differ from per-image masks when images differ."""
    from modules.halting import decoder_halting_mask, tile_masks_over_heads
    from modules.transformer import Attention

    torch.manual_seed(0)
    B, heads, N, T, w = 3, 4, 6, 5, 32
    attn = Attention(w, heads).eval()
    x = torch.randn(B, N + T, w)
    halted = torch.rand(B, T) < 0.5
    own = decoder_halting_mask(N, halted)  # (B, L, L), True = may attend
    release_mask = (~own).repeat(heads, 1, 1)  # what the release hands to nn.MultiheadAttention
    with torch.no_grad():
        expected, _ = F.multi_head_attention_forward(
            x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), w, heads, attn.in_proj_weight,
            attn.in_proj_bias, None, None, False, 0.0, attn.out_proj.weight, attn.out_proj.bias,
            training=False, need_weights=False, attn_mask=release_mask)
        tiled = tile_masks_over_heads(own, heads)
        assert tiled.shape == (B, heads, N + T, N + T)
        assert all(torch.equal(tiled[b, h], own[(b * heads + h) % B]) for b in range(B) for h in range(heads))
        torch.testing.assert_close(attn(x, tiled), expected.transpose(0, 1), atol=1e-5, rtol=1e-5)
        attn.backend = "reference"
        torch.testing.assert_close(attn(x, tiled), expected.transpose(0, 1), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(attn(x, own), expected.transpose(0, 1), atol=1e-3)


def test_training_uses_tiled_masks_only_when_set_and_encode_never():
    torch.manual_seed(0)
    tiled = tiny_demo_model().train()
    own = tiny_demo_model(tile_halting_mask_in_training=False).train()
    own.load_state_dict(tiled.state_dict())
    tokens, halted = torch.randn(3, 24, 12), _halted_pattern(3, 24)
    with torch.no_grad():
        a, b = tiled.decode_tokens(tokens, halted), own.decode_tokens(tokens, halted)
        assert not torch.allclose(a, b, atol=1e-4)  # images' masks differ, so tiling changes outputs
        tiled.eval()
        own.eval()
        torch.testing.assert_close(tiled.decode_tokens(tokens, halted), own.decode_tokens(tokens, halted))
    with pytest.raises(ValueError, match="tile_halting_mask_in_training=False"):
        tiny_demo_model(drop_halted_tokens=True)
