"""Epsilon bins, budgets, curriculum, augmentation and halting targets (kolmogorov_tokenizers/conditioning.py)."""
import pytest
import torch

from kolmogorov_tokenizers.conditioning import EpsilonConditioner, initial_condition_embeddings
from kolmogorov_tokenizers.config import KARLConfig

BINS = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.09, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.24, 0.28,
        0.32, 0.38]  # METHOD.md section 3, written out independently of the code


def _cond(num_2d=256, **kw):
    return EpsilonConditioner(KARLConfig(**kw), num_2d)


def test_default_bins_are_the_release_bins():
    assert list(KARLConfig().epsilon_bins) == BINS


def test_budget_ranges_scale_with_the_grid():
    c16 = _cond(256)
    assert c16.eic_budget_choices == list(range(16, 369, 16))  # release: 16..368
    assert c16.ltc_budget_for(16) == 256 and c16.ltc_budget_for(368) == 256  # the release: always 256
    assert _cond(256, ltc_budget_at_least_eic=True).ltc_budget_for(368) == 368  # ours: T when T > 256
    c8 = _cond(64)
    assert c8.eic_budget_choices == list(range(4, 93, 4))  # 8 x 8 grid: step 4
    assert c8.ltc_budget_for(4) == 64 and c8.ltc_budget == 64  # the resolved config.ltc_budget (None = N)
    assert _cond(256, eic_max_budget_steps=16).eic_budget_choices[-1] == 256  # the paper's range
    assert _cond(64, eic_budget_choices=(8, 24)).eic_budget_choices == [8, 24]


def test_snap_to_smallest_bin_at_or_above():
    c = _cond()
    eps = torch.tensor([0.0, 0.005, 0.0051, 0.04, 0.041, 0.38, 0.9])
    assert [BINS[i] for i in c.snap(eps).tolist()] == [0.005, 0.005, 0.01, 0.04, 0.05, 0.38, 0.38]


def test_eic_condition_uses_only_bins_up_to_eic_max():
    torch.manual_seed(0)
    c = _cond()
    idx = c.sample_eic_condition(4000, torch.device("cpu"))
    assert set(idx.tolist()) == {0, 1, 2, 3, 4}  # 0.005 .. 0.04
    counts = torch.bincount(idx, minlength=5).float() / 4000
    assert (counts - 0.2).abs().max() < 0.04  # uniform at the start
    assert set(_cond(eic_epsilon_max=0.01).sample_eic_condition(500, torch.device("cpu")).tolist()) == {0, 1}


def test_curriculum_decays_bins_at_or_above_the_batch_minimum():
    c = _cond()
    assert c.curriculum_weights.tolist() == [1.0] * 5
    c.update_curriculum(torch.tensor([0.5, 0.015, 0.2]))  # smallest L1 0.015: bins 0.02, 0.03, 0.04 decay
    torch.testing.assert_close(c.curriculum_weights, torch.tensor([1.0, 1.0, 0.99, 0.99, 0.99]))
    c.update_curriculum(torch.tensor([0.035]))
    torch.testing.assert_close(c.curriculum_weights, torch.tensor([1.0, 1.0, 0.99, 0.99, 0.99 ** 2]))
    c.update_curriculum(torch.tensor([0.3]))  # above every EIC bin: no change
    torch.testing.assert_close(c.curriculum_weights, torch.tensor([1.0, 1.0, 0.99, 0.99, 0.99 ** 2]))
    # the weights are a buffer: they travel in the state dict (exact resume)
    assert "curriculum_weights" in c.state_dict()
    fresh = _cond()
    fresh.load_state_dict(c.state_dict())
    torch.testing.assert_close(fresh.curriculum_weights, c.curriculum_weights)


def test_curriculum_drifts_sampling_toward_the_smallest_bin_and_never_underflows():
    c = _cond()
    for _ in range(20000):  # 0.99 ** 20000 underflows fp32 if not renormalised
        c.update_curriculum(torch.tensor([0.006]))  # every bin but 0.005 decays
    assert torch.isfinite(c.curriculum_weights).all() and c.curriculum_weights[0] == 1.0
    torch.manual_seed(0)
    assert set(c.sample_eic_condition(1000, torch.device("cpu")).tolist()) == {0}


def test_budget_generator_is_seeded_saved_and_independent_of_the_global_rng():
    a, b = _cond(), _cond()
    seq_a = [a.sample_eic_budget() for _ in range(20)]
    torch.manual_seed(123)  # global RNG must not matter
    seq_b = [b.sample_eic_budget() for _ in range(20)]
    assert seq_a == seq_b and len(set(seq_a)) > 5
    b.set_sampling_seed(7)
    assert [b.sample_eic_budget() for _ in range(20)] != seq_a
    # resume: the generator state travels through the state dict
    state = a.state_dict()
    expected = [a.sample_eic_budget() for _ in range(10)]
    c = _cond()
    c.load_state_dict(state)
    assert [c.sample_eic_budget() for _ in range(10)] == expected
    global_before = torch.get_rng_state()
    a.sample_eic_budget()
    assert torch.equal(torch.get_rng_state(), global_before)


def test_halting_targets_keep_first_T_and_halt_the_rest():
    t = EpsilonConditioner.halting_targets(3, 5, 2, torch.device("cpu"))
    assert t.tolist() == [[0, 0, 0, 1, 1]] * 2
    assert EpsilonConditioner.halting_targets(5, 5, 1, torch.device("cpu")).sum() == 0  # dT = 0


def test_augmentation_is_off_by_default_and_moves_bins_in_the_documented_direction():
    idx = torch.tensor([0, 3, 10, 18] * 50)
    assert torch.equal(_cond().augment(idx, 2 * 16, 0), idx)  # off: identity
    torch.manual_seed(0)
    on = _cond(condition_augmentation=True, augmentation_prob=1.0)
    harder = on.augment(idx, 256, 0)  # dT = 0: a random bin in [1, bin]
    assert (harder <= idx).all() and (harder[idx >= 1] >= 1).all() and (harder != idx).any()
    easier = on.augment(idx, 32, 224)  # T = 32: toward the largest bin
    assert (easier >= idx).all() and (easier <= 18).all() and (easier != idx).any()
    assert torch.equal(on.augment(idx, 64, 192), idx)  # other budgets: untouched


def test_bad_conditioning_settings_fail_clearly():
    with pytest.raises(ValueError, match="increasing"):
        KARLConfig(epsilon_bins=(0.1, 0.05))
    with pytest.raises(ValueError, match=">= 1"):
        _cond(eic_budget_choices=(0, 4))


def test_curriculum_update_runs_under_an_initialised_process_group(tmp_path):
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip("a process group is already initialised by another test")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        c = _cond()
        c.update_curriculum(torch.tensor([0.025, 0.3]))  # reduced across ranks (here: one)
        torch.testing.assert_close(c.curriculum_weights, torch.tensor([1.0, 1.0, 1.0, 0.99, 0.99]))
    finally:
        dist.destroy_process_group()


def _normalised(table: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(table, table.shape[-1:])  # the encoder's first LayerNorm, at init


def test_release_condition_init_is_erased_by_the_first_layernorm():
    table = initial_condition_embeddings(KARLConfig(), 64)
    assert torch.allclose(table[:, 0], torch.tensor(BINS)) and torch.equal(table, table[:, :1].expand(-1, 64))
    ln = _normalised(table)
    assert torch.allclose(ln, ln[:1].expand_as(ln), atol=1e-5)  # every bin looks the same to the encoder


def test_sinusoidal_condition_init_is_distinct_and_ordered_after_layernorm():
    with pytest.raises(ValueError, match="condition_embedding_init must be one of"):
        KARLConfig(condition_embedding_init="random")
    ln = _normalised(initial_condition_embeddings(KARLConfig(condition_embedding_init="sinusoidal"), 128))
    sim = torch.nn.functional.cosine_similarity(ln.unsqueeze(1), ln.unsqueeze(0), dim=-1)  # (19, 19)
    assert (sim - torch.eye(len(BINS))).max() < 0.99  # no two bins coincide
    i = BINS.index(0.05)
    assert sim[i, i + 1] > sim[i, i + 3] > sim[i, i + 9]  # 0.06 closer than 0.09, 0.09 closer than 0.2
