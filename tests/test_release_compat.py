"""Released checkpoint layouts, our checkpoints and safetensors exports (kolmogorov_tokenizers/checkpoint.py)."""
import json
import warnings

import pytest
import torch

from kolmogorov_tokenizers import demo_model
from kolmogorov_tokenizers import KARLConfig, create_model, export_safetensors, load_release_state_dict, load_tokenizer
from kolmogorov_tokenizers.config import CONFIG_VERSION, LEGACY_V1_BEHAVIOUR, RELEASE_BEHAVIOUR
from kolmogorov_tokenizers.registry import list_models, preset_config
from modules.io import CheckpointError
from release_fixtures import KARL_LAYOUTS, karl_checkpoint, load_layout, save_checkpoint

TINY = dict(encoder_width=64, decoder_width=64, encoder_layers=1, decoder_layers=1, encoder_heads=2,
            decoder_heads=2, halting_hidden=16)


def _tiny(**kw):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model("karl_demo", base_tokenizer="vqgan_demo", **{**TINY, **kw}).eval()


@pytest.mark.parametrize("base,quantize", sorted(KARL_LAYOUTS))
def test_released_checkpoint_loads_every_tensor_from_ema(tmp_path, base, quantize):
    layout = load_layout(KARL_LAYOUTS[(base, quantize)])
    ckpt = karl_checkpoint(base, quantize, with_gan_losses=True, with_optimizer=False)
    path = save_checkpoint(ckpt, tmp_path / "checkpoint-last.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be silently ignored besides gan_losses.*
        model = load_tokenizer(path)
    cfg = model.config
    assert (cfg.base_tokenizer, cfg.quantize_latent, cfg.factorize_latent) == (base, quantize, True)
    assert (cfg.encoder_width, cfg.encoder_layers, cfg.encoder_heads) == (1024, 8, 8)
    assert (cfg.decoder_width, cfg.decoder_layers, cfg.decoder_heads, cfg.bank_size) == (1024, 8, 8, 512)
    for name, value in RELEASE_BEHAVIOUR.items():  # the release's behaviour, with no option to set
        assert getattr(cfg, name) == value, name
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("conditioning.")}
    assert {k: tuple(v.shape) for k, v in own.items()} == layout  # same keys, same shapes
    for key in layout:
        assert torch.equal(own[key], ckpt["ema"][key]), key  # `ema` preferred over `model`
    assert not model.training


def test_load_release_state_dict_reports_missing_unexpected_and_ignores_gan_losses():
    m = _tiny()
    sd = {k: v.clone() + 1 for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    sd.pop("decoder.ln_post.bias")
    sd["gan_losses.0.main.0.weight"] = torch.zeros(3)
    sd["something_else"] = torch.zeros(1)
    missing, unexpected = load_release_state_dict(m, sd)
    assert missing == ["decoder.ln_post.bias"] and unexpected == ["something_else"]
    torch.testing.assert_close(m.latent_tokens, sd["latent_tokens"])


def test_wrong_shapes_are_refused_with_every_key_named():
    m = _tiny()
    sd = {k: v for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    before = m.latent_tokens.detach().clone()
    sd["latent_tokens"] = torch.zeros(7, 64)
    sd["decoder_embed.weight"] = torch.zeros(64, 3)
    with pytest.raises(CheckpointError, match=r"latent_tokens(.|\n)*decoder_embed.weight"):
        load_release_state_dict(m, sd)
    assert torch.equal(m.latent_tokens, before)  # nothing half-loaded


def test_our_checkpoint_rebuilds_the_model_and_prefers_ema(tmp_path):
    m = _tiny(quantize_latent=True)
    ema = m.state_dict()
    live = {k: (v + 1.0 if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in ema.items()}
    path = tmp_path / "ours.pth"
    torch.save({"model": live, "ema": ema, "model_config": m.config.to_dict(), "epoch": 3}, path)
    loaded = load_tokenizer(path)
    x = torch.rand(2, 3, 64, 64)
    a, b = m.encode(x), loaded.encode(x)
    torch.testing.assert_close(b.reconstruction, a.reconstruction)
    assert torch.equal(b.info["indices"], a.info["indices"])
    assert loaded.config.to_dict() == m.config.to_dict()


def test_safetensors_export_round_trip(tmp_path):
    m = _tiny(drop_halted_tokens=True, tile_halting_mask_in_training=False)
    path = export_safetensors(m, tmp_path / "karl.safetensors")
    meta = json.loads((tmp_path / "karl.safetensors.json").read_text())
    assert meta["model_config"]["drop_halted_tokens"] is True
    loaded = load_tokenizer(path)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded.encode(x).reconstruction, m.encode(x).reconstruction)
    overridden = load_tokenizer(path, drop_halted_tokens=False)
    assert overridden.config.drop_halted_tokens is False
    with pytest.raises(ValueError, match="unknown KARL config option"):
        load_tokenizer(path, widht=3)


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = KARLConfig(encoder_width=32, eic_budget_choices=(4, 8), quantize_latent=True)
    again = KARLConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown KARL config keys: colour"):
        KARLConfig.from_dict({"colour": 1})


def test_bad_paths_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_model, "DEMO_DIR", tmp_path / "no_demo")  # as in a checkout without the files
    with pytest.raises(FileNotFoundError, match="demo model is not available"):
        load_tokenizer("demo")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_tokenizer(tmp_path / "nope.pth")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="base_tokenizer"):
        load_tokenizer(tmp_path / "other.pth")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="w.safetensors.json"):
        load_tokenizer(tmp_path / "w.safetensors")


def test_every_preset_defaults_to_the_releases_behaviour():
    for name in list_models():
        cfg = KARLConfig(**preset_config(name))
        assert {k: getattr(cfg, k) for k in RELEASE_BEHAVIOUR} == RELEASE_BEHAVIOUR, name
        assert cfg.to_dict()["config_version"] == CONFIG_VERSION


def test_configs_from_before_version_2_keep_the_behaviour_they_were_trained_with():
    old = KARLConfig(encoder_width=32, label_smoothing=0.1, vae_decode_scaled_latent=False).to_dict()
    for key in [*LEGACY_V1_BEHAVIOUR, "config_version"]:
        del old[key]  # what this project wrote before the settings existed
    cfg = KARLConfig.from_dict(old)
    assert cfg.positional_resize == "bilinear" and cfg.vae_pixel_range == "signed"
    assert cfg.halting_loss_reduction == "mean" and cfg.eps0_clamp and cfg.ltc_budget_at_least_eic
    assert cfg.label_smoothing == 0.1 and cfg.vae_decode_scaled_latent is False  # stored keys stay as stored
    assert cfg.config_version == CONFIG_VERSION
    current = KARLConfig.from_dict(KARLConfig().to_dict())  # version 2: nothing filled in
    assert {k: getattr(current, k) for k in RELEASE_BEHAVIOUR} == RELEASE_BEHAVIOUR
    with pytest.raises(ValueError, match="config_version 99 is not supported"):
        KARLConfig.from_dict({"config_version": 99})


def test_our_checkpoint_from_before_version_2_loads_with_its_old_behaviour(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = create_model("karl_demo", base_tokenizer="vae_demo", **TINY, **LEGACY_V1_BEHAVIOUR,
                              vae_decode_scaled_latent=False).eval()
    config = legacy.config.to_dict()
    for key in [*LEGACY_V1_BEHAVIOUR, "config_version"]:
        del config[key]
    config["base_tokenizer_config"].pop("pixel_range")
    path = tmp_path / "old.pth"
    torch.save({"ema": legacy.state_dict(), "model_config": config}, path)
    loaded = load_tokenizer(path)
    assert loaded.config.positional_resize == "bilinear" and loaded.base_tokenizer.pixel_range == "signed"
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded.encode(x).reconstruction, legacy.encode(x).reconstruction)
