"""Stage 2 and the EMA as the official release trains them (each gan.* / ema_* setting that restores it).

Expected values come from the release's rules written out by hand here (bucket formula, hinge sums,
step pattern), never from the code under test.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from engine.config import load_config
from engine.stages import get_stage
from engine.stages.full_finetuning import BucketedDiscriminators, FullFinetuningStage
from engine.trainer import Trainer
from engine_standin import StandInKARL, make_dataset, read_metrics, tiny_argv
from modules.losses.perceptual import LPIPSLoss

pytestmark = [pytest.mark.filterwarnings("ignore:.*random weights"), pytest.mark.filterwarnings("ignore:.*NO trained weights")]


def _cfg(tmp_path, *extra):
    return load_config(tiny_argv(tmp_path, *extra), stage="full_finetuning")


def _stage_with_disc(cfg, gan_weight=0.5):
    """A stage with 2 discriminators of 8 tokens each (the stand-in's 16 tokens), without a Trainer."""
    g = cfg.gan
    stage = FullFinetuningStage()
    stage.num_buckets, stage.bucket_size, stage.bucket_offset = g.num_discriminators, 8, g.bucket_offset
    torch.manual_seed(0)
    stage.disc = BucketedDiscriminators(g.num_discriminators, g.disc_ndf, g.disc_layers,
                                        signed_inputs=g.disc_inputs == "signed")
    stage.disc_ddp = stage.disc
    stage.gan_weight = gan_weight
    return stage


def _hinge_by_hand(real, fake):
    return 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())


# --- which discriminator judges a reconstruction ----------------------------------------------------------
def test_bucket_rule_of_the_release_subtracts_one_and_clamps():
    stage = FullFinetuningStage()
    stage.bucket_size, stage.num_buckets = 32, 8
    counts = torch.tensor([16, 32, 63, 64, 95, 96, 224, 255, 256, 368])
    stage.bucket_offset = 1  # release: max(0, min(8, T // 32) - 1)
    assert stage.buckets(counts).tolist() == [0, 0, 0, 1, 1, 2, 6, 6, 7, 7]
    stage.bucket_offset = 0  # count // 32, clamped
    assert stage.buckets(counts).tolist() == [0, 1, 1, 2, 2, 3, 7, 7, 7, 7]


@pytest.mark.parametrize("bucket_count,seen", [
    ("eic_budget", {0: [2, 2], 1: []}),  # release: LTC judged by the bucket of the EIC budget (4 -> 0)
    ("kept_tokens", {0: [2, 1], 1: [1]}),  # per image: 16 kept -> bucket 1, 3 kept -> bucket 0
])
def test_ltc_phase_uses_the_eic_budget_bucket_in_the_release(tmp_path, bucket_count, seen):
    cfg = _cfg(tmp_path, "gan.bucket_offset=0", f"gan.bucket_count={bucket_count}")
    stage = _stage_with_disc(cfg)
    model = StandInKARL()
    model.base_tokenizer.set_trainable(True)
    batches = {0: [], 1: []}
    for i, d in enumerate(stage.disc.discriminators):
        d.register_forward_hook(lambda mod, inp, out, i=i: batches[i].append(inp[0].shape[0]))
    fn = stage._pixel_loss_fn(SimpleNamespace(cfg=cfg, raw_model=model))
    images = torch.rand(2, 3, 32, 32)
    recon = model.base_tokenizer.decode(torch.randn(2, 8, 8, 8))
    fn(recon, images, torch.full((2,), 4), "eic")
    fn(recon, images, torch.tensor([16, 3]), "ltc")
    assert batches == seen


# --- the discriminator step --------------------------------------------------------------------------------
def test_separate_groups_get_their_own_batchnorm_statistics():
    torch.manual_seed(0)
    disc = BucketedDiscriminators(1, 8, 3).train()
    a, b = torch.rand(3, 3, 32, 32), 0.3 * torch.rand(3, 3, 32, 32)
    bucket = torch.zeros(6, dtype=torch.long)
    separate = disc(torch.cat([a, b]), bucket, groups=2)
    by_hand = torch.cat([disc.discriminators[0](a), disc.discriminators[0](b)])
    assert torch.allclose(separate, by_hand, atol=1e-6)
    assert not torch.allclose(disc(torch.cat([a, b]), bucket, groups=1), by_hand, atol=1e-3)


@pytest.mark.parametrize("weighted", [False, True])
def test_release_discriminator_loss_sums_one_hinge_per_phase_on_separate_batches(tmp_path, weighted):
    cfg = _cfg(tmp_path, f"gan.disc_loss_gan_weighted={str(weighted).lower()}")
    assert cfg.gan.disc_separate_batches and cfg.gan.disc_inputs == "unit" and cfg.gan.bucket_offset == 1
    stage = _stage_with_disc(cfg, gan_weight=0.5)
    model = StandInKARL().train()
    replay, disc_copy = copy.deepcopy(model), copy.deepcopy(stage.disc)
    images = torch.rand(4, 3, 32, 32)

    torch.manual_seed(7)
    out = stage._discriminator_loss(SimpleNamespace(cfg=cfg, raw_model=model), images)

    torch.manual_seed(7)  # same draws: the same reconstructions and budget
    fakes = []
    with torch.no_grad():
        replay(images, pixel_loss_fn=lambda r, x, n, phase: (fakes.append((r, n)) or (r.new_zeros(()), {})))
    eic_budget = int(fakes[0][1][0])
    d = disc_copy.discriminators[max(0, min(1, eic_budget // 8 - 1))]  # offset 1, both phases: EIC bucket
    want = sum(_hinge_by_hand(d(images), d(fake)) for fake, _ in fakes)  # [0, 1] pixels, separate calls
    if weighted:
        want = 0.5 * want
    assert len(fakes) == 2
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_discriminators_see_unit_pixels_unless_signed_is_chosen():
    torch.manual_seed(0)
    unit = BucketedDiscriminators(1, 8, 3)
    signed = copy.deepcopy(unit)
    signed.signed_inputs = True
    x, bucket = torch.rand(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    assert torch.allclose(unit(x, bucket), unit.discriminators[0](x), atol=1e-6)
    assert torch.allclose(signed(x, bucket), unit.discriminators[0](2 * x - 1), atol=1e-6)


# --- LPIPS ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lpips_net():
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    # random AlexNet backbone (no download); the options under test do not depend on the backbone
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)


def test_lpips_unit_inputs_pass_pixels_unchanged(lpips_net):
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    unit, signed = LPIPSLoss(signed_inputs=False, net=lpips_net), LPIPSLoss(signed_inputs=True, net=lpips_net)
    # signed maps z -> 2z - 1, so signed((x + 1) / 2) is LPIPS on x itself: what unit computes
    assert torch.allclose(unit(x, y), signed((x + 1) / 2, (y + 1) / 2), atol=1e-5)
    assert not torch.allclose(unit(x, y), signed(x, y), atol=1e-4)


def test_lpips_dropout_acts_in_training_only_when_chosen(lpips_net):
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with_dropout = LPIPSLoss(signed_inputs=False, dropout=True, net=lpips_net).train()
    torch.manual_seed(1)
    first, second = with_dropout(x, y), with_dropout(x, y)
    assert not torch.allclose(first, second)  # dropout masks differ between calls
    deterministic = with_dropout.eval()(x, y)
    assert torch.equal(deterministic, with_dropout(x, y))
    without = LPIPSLoss(signed_inputs=False, dropout=False, net=lpips_net).train()
    assert not without.training and torch.equal(without(x, y), deterministic)


# --- the loop: D/AE cycle, D optimizer, EMA -----------------------------------------------------------------
def _fit(tmp_path, *extra, n=20, epochs=2):
    cfg = _cfg(tmp_path, "gan.disc_steps_per_ae_step=2", "gan.weight_boundaries=[-1]", "--epochs", str(epochs), *extra)
    trainer = Trainer(cfg, get_stage("full_finetuning"), model=StandInKARL(), dataset=make_dataset(n=n, size=32))
    updates = []
    update = trainer.ema.update
    trainer.ema.update = lambda model: (updates.append(1), update(model))
    assert trainer.fit() == 0
    kinds = ["disc" if "grad_norm/disc" in r else "model" for r in read_metrics(tmp_path)]
    return trainer, kinds, updates


def test_release_cycle_puts_the_autoencoder_step_last_and_restarts_every_epoch(tmp_path):
    _, kinds, _ = _fit(tmp_path / "release")  # 5 steps per epoch, 2 epochs
    assert kinds == ["disc", "disc", "model", "disc", "disc"] * 2
    _, kinds, _ = _fit(tmp_path / "continuous", "gan.cycle_within_epoch=false")
    assert kinds == ["model", "disc", "disc", "model", "disc", "disc", "model", "disc", "disc", "model"]


def test_ema_follows_every_iteration_and_d_optimizer_decays_weights_as_torch_default(tmp_path):
    trainer, kinds, updates = _fit(tmp_path / "release", n=12, epochs=1)
    assert kinds == ["disc", "disc", "model"] and len(updates) == 3  # after D steps too, like the release
    assert all(g["weight_decay"] == 0.01 for g in trainer.optimizers["disc"].param_groups)
    trainer, kinds, updates = _fit(tmp_path / "ours", "ema_update_on_disc_steps=false", "gan.disc_weight_decay=0",
                                   n=12, epochs=1)
    assert kinds == ["disc", "disc", "model"] and len(updates) == 1
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizers["disc"].param_groups)


def test_release_presets_and_official_flags_default_to_the_release_training():
    official = ("--batch_size 18 --model karl_small --epochs 400 --warmup_epochs 20 --blr 1.e-4 --weight_decay 0.05 "
                "--base_tokenizer vqgan --quantize_latent --factorize_latent --output_dir ./out2 "
                "--finetune ./out/checkpoint-last.pth --data_path /data/imagenet").split()
    for cfg in (load_config([], stage="full_finetuning"), load_config(official, stage="full_finetuning")):
        g = cfg.gan
        assert (g.bucket_offset, g.bucket_count, g.disc_inputs, g.perceptual_inputs) == (1, "eic_budget", "unit", "unit")
        assert g.perceptual_dropout and g.disc_separate_batches and not g.disc_loss_gan_weighted
        assert g.cycle_within_epoch and g.disc_weight_decay == 0.01
        assert cfg.ema_reset_every_epoch and cfg.ema_update_on_disc_steps
    assert load_config([], stage="latent_distillation").ema_reset_every_epoch


# --- where stage 2 starts, the EIC budget per GPU, the training crop ---------------------------------------
@pytest.mark.parametrize("finetune_weights", ["ema", "model"])
def test_finetune_starts_from_the_stage1_ema_in_the_release(tmp_path, finetune_weights):
    """The release loads the stage-1 EMA into both the model and the EMA; "model" keeps the live weights."""
    from engine.distributed import DistInfo

    cfg1 = load_config(tiny_argv(tmp_path / "s1", "--epochs", "1", "ema_decay=0.5"), stage="latent_distillation")
    stage1 = Trainer(cfg1, get_stage("latent_distillation"), model=StandInKARL(), dataset=make_dataset(n=16, size=32),
                     dist_info=DistInfo())
    assert stage1.fit() == 0
    live, ema = stage1.raw_model.state_dict(), stage1.ema.state_dict()
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # otherwise the test could not tell them apart
    cfg2 = load_config(tiny_argv(tmp_path / "s2", "--epochs", "1", "--finetune",
                                 str(tmp_path / "s1" / "checkpoint-last.pth"), f"finetune_weights={finetune_weights}"),
                       stage="full_finetuning")
    stage2 = Trainer(cfg2, get_stage("full_finetuning"), model=StandInKARL(), dataset=make_dataset(n=16, size=32),
                     dist_info=DistInfo())
    start = ema if finetune_weights == "ema" else live
    for name, value in stage2.raw_model.state_dict().items():
        assert torch.equal(value, start[name]), name
        assert torch.equal(stage2.ema.state_dict()[name], ema[name]), name


@pytest.mark.parametrize("budget_per_rank,expected", [(True, 7 + 1), (False, 7)])
def test_each_rank_draws_its_own_eic_budget_in_the_release(tmp_path, monkeypatch, budget_per_rank, expected):
    """Rank 1 of a run seeds the model's budget generator with seed + 1 (the release) or seed (ours)."""
    import engine.trainer
    from engine.distributed import DistInfo

    sampler = engine.trainer.ResumableSampler  # one process plays rank 1: its sampler reads the whole dataset
    monkeypatch.setattr(engine.trainer, "ResumableSampler", lambda ds, world, rank, seed: sampler(ds, 1, 0, seed))

    seeds = []

    class Recording(StandInKARL):
        def set_sampling_seed(self, seed):
            seeds.append(seed)
            super().set_sampling_seed(seed)

    cfg = load_config(tiny_argv(tmp_path, "--seed", "7", f"budget_per_rank={budget_per_rank}"),
                      stage="latent_distillation")
    model = Recording()
    seeds.clear()
    Trainer(cfg, get_stage("latent_distillation"), model=model, dataset=make_dataset(n=16, size=32),
            dist_info=DistInfo(rank=1, world_size=1))
    assert seeds == [expected]


def test_training_crop_resampling_is_bilinear_in_the_release(tmp_path):
    from torchvision.transforms import InterpolationMode, RandomResizedCrop

    from engine.data import DataError, build_dataset

    assert load_config(tiny_argv(tmp_path), stage="latent_distillation").data.train_interpolation == "bilinear"
    root = tmp_path / "data" / "train" / "class0"
    root.mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (40, 40), (10, 20, 30)).save(root / "a.png")

    def crop_mode(**kw):
        ds = build_dataset(tmp_path / "data", "train", 32, "train", **kw)
        crops = [t for t in ds.transform.transforms if isinstance(t, RandomResizedCrop)]
        return crops[0].interpolation

    assert crop_mode() == InterpolationMode.BILINEAR
    assert crop_mode(train_interpolation="bicubic") == InterpolationMode.BICUBIC
    with pytest.raises(DataError, match="train_interpolation"):
        crop_mode(train_interpolation="nearest")
