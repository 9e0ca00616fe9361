"""Transformer block, attention backends, quantiser and halting helpers (modules/)."""
import pytest
import torch
from torch import nn

from modules.halting import decoder_halting_mask, keep_mask_from_blocked, pack_active_tokens
from modules.quantizer import VectorQuantizer
from modules.transformer import Attention, ResidualAttentionBlock, set_attention_backend


def _random_mask(B, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, L, generator=g) > 0.4
    return mask | torch.eye(L, dtype=torch.bool)  # no empty row


@pytest.mark.parametrize("mask_kind", ["none", "2d", "3d"])
@pytest.mark.parametrize("other", ["reference", "math"])
def test_sdpa_and_other_backends_agree_forward_and_backward(mask_kind, other):
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4)
    x = torch.randn(3, 10, 32)
    mask = {"none": None, "2d": _random_mask(1, 10)[0], "3d": _random_mask(3, 10)}[mask_kind]
    outs, grads = [], []
    for backend in ("sdpa", other):
        block.attn.backend = backend
        xi = x.clone().requires_grad_(True)
        y = block(xi, mask)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append((xi.grad.clone(), block.attn.in_proj_weight.grad.clone()))
        block.zero_grad()
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-4)


def test_attention_matches_torch_multihead_attention_with_same_weights():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    ours = Attention(32, 4)
    # same parameter names and shapes: the release's state dict loads unchanged
    ours.load_state_dict(mha.state_dict())
    x = torch.randn(2, 7, 32)
    allowed = _random_mask(2, 7)
    expected, _ = mha(x, x, x, attn_mask=(~allowed).repeat_interleave(4, dim=0), need_weights=False)
    for backend in ("sdpa", "reference"):
        ours.backend = backend
        torch.testing.assert_close(ours(x, allowed), expected, atol=1e-5, rtol=1e-5)


def test_block_parameter_names_are_the_release_names():
    names = set(ResidualAttentionBlock(16, 2).state_dict())
    assert names == {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
                     "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
                     "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"}


def test_global_backend_switch_and_bad_names():
    attn = Attention(16, 2)
    x = torch.randn(1, 5, 16)
    set_attention_backend("reference")
    try:
        ref = attn(x)
    finally:
        set_attention_backend("sdpa")
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sdpa, reference"):
        set_attention_backend("flash")
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)
    with pytest.raises(TypeError, match="bool"):
        attn(x, torch.ones(5, 5))


def test_halting_mask_blocks_pairs_with_a_halted_token_and_keeps_the_diagonal():
    halted = torch.tensor([[False, True, False], [True, True, True]])
    mask = decoder_halting_mask(2, halted)  # sequence: 2 mask tokens + 3 1D tokens
    assert mask.shape == (2, 5, 5)
    for b in range(2):
        blocked = [False, False] + halted[b].tolist()
        for i in range(5):
            for j in range(5):
                assert bool(mask[b, i, j]) == (i == j or not (blocked[i] or blocked[j]))
    assert decoder_halting_mask(2, torch.zeros(2, 3, dtype=torch.bool)) is None  # nothing to mask
    assert keep_mask_from_blocked(torch.zeros(1, 4, dtype=torch.bool)) is None


def test_pack_active_tokens_keeps_order_and_pads_the_end():
    tokens = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)  # values 0..7
    halted = torch.tensor([[False, True, False, True], [True, False, False, False]])
    packed, padding = pack_active_tokens(tokens, halted)
    assert packed.shape == (2, 3, 1)
    assert packed[0, :2, 0].tolist() == [0.0, 2.0] and padding[0].tolist() == [False, False, True]
    assert packed[1, :, 0].tolist() == [5.0, 6.0, 7.0] and padding[1].tolist() == [False, False, False]


def test_quantizer_picks_nearest_normalised_code_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=4, commitment=0.25)
    z = torch.randn(2, 5, 4, requires_grad=True)
    z_q, loss, idx = vq(z)
    zn = z.detach() / z.detach().norm(dim=-1, keepdim=True)
    codes = vq.embedding.weight.detach() / vq.embedding.weight.detach().norm(dim=-1, keepdim=True)
    brute = torch.cdist(zn.view(-1, 4), codes).argmin(-1).view(2, 5)
    assert torch.equal(idx, brute)
    torch.testing.assert_close(z_q.detach(), codes[brute])
    torch.testing.assert_close(vq.embed(idx), z_q.detach())
    expected_loss = 1.25 * ((codes[brute] - zn) ** 2).mean()  # 0.25 * commitment + codebook term
    torch.testing.assert_close(loss.detach(), expected_loss)
    z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through reaches the encoder
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        vq.embed(torch.tensor([[16]]))
