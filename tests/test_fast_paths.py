"""The fast paths: each is switchable and gives the plain path's outputs (within float tolerance); masks
reach attention only when some token is blocked; `encode(adaptive=False)` keeps all T tokens; the
benchmark suite's plumbing (targets, bad input) behaves."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kolmogorov_tokenizers.karl as karl_module
from kolmogorov_tokenizers import create_model

REPO = Path(__file__).resolve().parent.parent
TINY = dict(encoder_width=64, decoder_width=64, encoder_layers=2, decoder_layers=2, encoder_heads=4,
            decoder_heads=4, halting_hidden=32)


def tiny(**kw):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model("karl_demo", **{**TINY, **kw})


def force_halting(model, logit: float) -> None:
    """Every omega = sigmoid(logit): > 0.75 halts all tokens, < 0.75 keeps all."""
    with torch.no_grad():
        model.halting_mlp[2].weight.zero_()
        model.halting_mlp[2].bias.fill_(logit)


@pytest.fixture
def sdpa_masks(monkeypatch):
    """Records the attn_mask of every F.scaled_dot_product_attention call (None or a tensor)."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask)
        return real(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


def test_no_mask_reaches_attention_when_no_token_is_halted(sdpa_masks):
    m = tiny().train()
    force_halting(m, -5.0)  # nothing halted in LTC
    m(torch.rand(2, 3, 64, 64))
    layers = 2 * (2 + 2)  # (encoder + decoder layers) x (EIC + LTC)
    assert len(sdpa_masks) == layers
    assert all(mask is None for mask in sdpa_masks)


def test_ltc_decoder_gets_a_mask_only_when_tokens_are_halted(sdpa_masks, monkeypatch):
    m = tiny().train()
    halt_some = lambda omega, threshold=0.75: torch.arange(omega.shape[1]).expand_as(omega) % 3 == 0  # noqa: E731
    monkeypatch.setattr(karl_module, "halted_from_prob", halt_some)
    m(torch.rand(2, 3, 64, 64))
    enc_eic, dec_eic, enc_ltc, dec_ltc = (sdpa_masks[i:i + 2] for i in range(0, 8, 2))
    assert all(x is None for x in enc_eic + dec_eic + enc_ltc)
    assert all(x is not None and x.dtype == torch.bool for x in dec_ltc)


def test_dropping_with_equal_active_counts_needs_no_mask(sdpa_masks):
    m = tiny().eval()
    halted = torch.zeros(3, 16, dtype=torch.bool)
    halted[:, 8:] = True  # every image keeps 8 tokens: packed rows need no padding
    with torch.no_grad():
        dropped = m.decode_tokens(torch.randn(3, 16, 12), halted, drop=True)
    assert all(mask is None for mask in sdpa_masks)
    with torch.no_grad():
        masked = m.decode_tokens(torch.randn(3, 16, 12), halted, drop=False)
    assert dropped.shape == masked.shape and all(mask is not None for mask in sdpa_masks[2:])


@pytest.mark.parametrize("share", [1.0, 0.5, 0.0])
def test_inference_drop_equals_masking_in_encode_and_decode(share):
    fast = tiny().eval()
    plain = tiny(inference_drop_halted_tokens=False).eval()
    plain.load_state_dict(fast.state_dict())
    assert fast.config.inference_drop_halted_tokens is True  # the default for encode/decode
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(4, 20, 12, generator=g)
    mask = torch.rand(4, 20, generator=g) < share
    mask[0] = True  # one image fully active, others mixed
    torch.testing.assert_close(fast.decode(tokens, mask), plain.decode(tokens, mask), atol=1e-5, rtol=1e-4)
    images = torch.rand(2, 3, 64, 64, generator=g)
    a, b = fast.encode(images, 32, 0.05), plain.encode(images, 32, 0.05)
    assert torch.equal(a.info["num_tokens"], b.info["num_tokens"])
    torch.testing.assert_close(a.reconstruction, b.reconstruction, atol=1e-5, rtol=1e-4)


def test_encode_non_adaptive_keeps_all_tokens_even_when_the_model_would_halt_them():
    m = tiny().eval()
    force_halting(m, 5.0)  # omega ~ 0.993 > 0.75: the adaptive pass halts every token
    images = torch.rand(2, 3, 64, 64)
    adaptive = m.encode(images, 24, 0.0)
    fixed = m.encode(images, 24, 0.0, adaptive=False)
    assert adaptive.info["num_tokens"].tolist() == [0, 0]
    assert fixed.info["num_tokens"].tolist() == [24, 24] and bool(fixed.info["mask"].all())
    assert all(len(e) == 24 for e in fixed.embedding)
    # the fixed pass reconstructs from all 24 tokens: the same as decoding them with nothing halted
    torch.testing.assert_close(fixed.reconstruction, m.decode(fixed.info["tokens"]), atol=1e-5, rtol=1e-4)
    many = m.encode(images, [8, 16], 0.0, adaptive=False)
    assert [r.info["num_tokens"].tolist() for r in many] == [[8, 8], [16, 16]]


def test_fixed_and_search_evaluations_run_halting_off():
    from evaluation.fixed import encode_fixed_budget
    from evaluation.runner import EvalData
    from evaluation.search import search_min_budget
    m = tiny().eval()
    force_halting(m, 5.0)
    images = torch.rand(3, 3, 64, 64)
    recons = encode_fixed_budget(m, images, [8, 16])
    assert [r.num_tokens.tolist() for r in recons] == [[8, 8, 8], [16, 16, 16]]
    result = search_min_budget(m, EvalData.from_tensor(images, 3), 0.0, [8, 16], torch.device("cpu"))
    assert result.passes == [2, 2, 2]  # epsilon 0 is never met: every budget tried, in order


def test_stage1_eps0_decode_builds_no_graph():
    m = tiny().train()
    out = m(torch.rand(2, 3, 64, 64))
    assert out.phases["eic"].reconstruction is not None
    assert not out.phases["eic"].reconstruction.requires_grad  # measured under no_grad


def test_channels_last_base_gives_the_same_outputs():
    # a deterministic base: a VAE samples its posterior in training, and randn_like follows the memory layout
    plain = tiny(base_tokenizer="vqgan_demo").eval()
    fast = tiny(base_tokenizer="vqgan_demo", base_channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    conv = next(p for p in fast.base_tokenizer.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 64, 64)
    a, b = fast.encode(images, 32, 0.05), plain.encode(images, 32, 0.05)
    torch.testing.assert_close(a.reconstruction, b.reconstruction, atol=1e-4, rtol=1e-4)
    fast.train()
    plain.train()
    fast.set_sampling_seed(3)
    plain.set_sampling_seed(3)
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(fast(images).loss, plain(images).loss, atol=1e-4, rtol=1e-4)


def test_compiled_blocks_keep_checkpoint_keys_and_outputs(monkeypatch):
    # The "eager" backend checks the dynamo path and the state-dict layout without inductor's minutes-long
    # C++ compile on CPU; inductor itself is timed by benchmarks/bench_training.py --compile.
    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: real_compile(self, **{**kw, "backend": "eager"}))
    plain = tiny().eval()
    compiled = tiny(compile_blocks=True).eval()
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no `_orig_mod.` prefixes
    compiled.load_state_dict(plain.state_dict())
    tokens, halted = torch.randn(2, 16, 12), torch.rand(2, 16) < 0.4
    with torch.no_grad():
        torch.testing.assert_close(compiled.decode_tokens(tokens, halted), plain.decode_tokens(tokens, halted),
                                   atol=1e-5, rtol=1e-4)


def test_benchmark_decoder_smoke_and_targets(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the scripts import their shared `common` module
    import bench_decoder
    import run as bench_run
    out = bench_decoder.run(torch.device("cpu"), "karl_demo", [0.5], quick=True, precision="fp32")
    (row,) = out["rows"]
    assert row["active_tokens"] == 32 and row["sdpa_dropped_ms"] > 0 and row["sdpa_masked_ms"] > 0
    fake = {"decoder": {"rows": [{"active_share": 0.5, "drop_vs_masked_wall": 1.4, "drop_vs_masked_cputime": 1.2,
                                  "drop_vs_reference_wall": 2.0, "full_drop_vs_masked_wall": 1.1}]},
            "encode": {"rows": [{"epsilon": 0.05, "speedup_wall": 4.0, "speedup_cputime": 6.0,
                                 "search_mean_passes": 16.0}]}}
    # encode: 4x wall misses 5x, 6x cpu-time meets it; decoder: 1.4, 1.2, 2.0, 1.1 against 1.3
    assert [t["met"] for t in bench_run.targets(fake)] == [False, True, True, False, True, False]


def test_benchmark_run_rejects_bad_arguments(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--sections", "peak", "--output", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "is a directory" in res.stderr
    res = subprocess.run(cmd[:-1] + [str(tmp_path / "r.json"), "--threads", "-2"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0 and "--threads" in res.stderr
