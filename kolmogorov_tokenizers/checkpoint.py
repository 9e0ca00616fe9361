"""Loading and saving KARL weights: our checkpoints, the released ones, and safetensors exports.

Released files (shared/checkpoint_formats) hold {model, ema, optimizer, epoch, args[, scaler]} with the
same state-dict keys as our model, so loading them is nearly the identity: `gan_losses.*` (stage-2
discriminators and LPIPS) are ignored, our training-only state (`conditioning.*`) may be absent, and
every other difference is reported. Files are read with `safe_torch_load` (no arbitrary unpickling).
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from kolmogorov_tokenizers.config import RELEASE_BEHAVIOUR, KARLConfig
from kolmogorov_tokenizers.karl import KARLTokenizer
from kolmogorov_tokenizers.registry import _MODELS, create_model_from_config, preset_config
from modules.io import (CheckpointError, atomic_write_bytes, atomic_write_text, check_finite_weights,
                        match_state_dict, safe_torch_load, strip_ddp_prefix)

IGNORED_PREFIXES = ("gan_losses.",)  # stage-2 discriminators + LPIPS: not part of the tokenizer
TRAINING_STATE_PREFIXES = ("conditioning.",)  # curriculum weights, budget generator: absent in releases
PathLike = Union[str, Path]


_strip_ddp_prefix = strip_ddp_prefix  # the one prefix rule, shared with the trainer's --finetune / --resume


def load_release_state_dict(model: KARLTokenizer, state_dict: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """Load a released (or our) state dict into `model`; returns (missing, unexpected) key lists.

    `gan_losses.*` keys are ignored; `conditioning.*` training state is not reported as missing.
    Raises CheckpointError listing every tensor whose shape differs (never loads a partial tensor).
    """
    sd, missing, unexpected, shapes = match_state_dict(model.state_dict(), state_dict, IGNORED_PREFIXES,
                                                       TRAINING_STATE_PREFIXES)
    if shapes:
        raise CheckpointError(f"{len(shapes)} tensor(s) have the wrong shape for this model "
                              f"({model.config.model_name}):\n  " +
                              "\n  ".join(f"{k}: file {f} vs model {m}" for k, f, m in shapes))
    model.load_state_dict(sd, strict=False)
    return missing, unexpected


# --- inferring a model config from a released state dict ---------------------------------------------------

def _count_layers(sd: Mapping[str, Any], prefix: str) -> int:
    ids = {k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)}
    return len(ids)


def _heads_for(width: int, layers: int, side: str, preferred: Optional[str]) -> int:
    names = ([preferred] if preferred in _MODELS else []) + sorted(_MODELS)
    for name in names:
        p = preset_config(name)
        if p[f"{side}_width"] == width and p[f"{side}_layers"] == layers:
            return p[f"{side}_heads"]
    warnings.warn(f"no preset with {side} width {width} and {layers} layers: assuming {width // 64} heads")
    return width // 64


def config_from_release(sd: Mapping[str, Any], args: Any = None) -> KARLConfig:
    """Rebuild the model config of a released checkpoint from its tensor shapes (and `args` if present)."""
    if any(k.startswith("base_tokenizer.vqgan.") for k in sd):
        base = "vqgan"
    elif any(k.startswith("base_tokenizer.vae.") for k in sd):
        base = "vae"
    else:
        raise CheckpointError("cannot tell the base tokenizer: no `base_tokenizer.vqgan.*` or "
                              "`base_tokenizer.vae.*` keys in the state dict (is this a KARL checkpoint?)")
    for key in ("latent_tokens", "decoder_latent_tokens_timestep_embed", "encoder_positional_embedding",
                "halting_mlp.0.weight", "encoder.transformer.0.mlp.c_fc.weight", "rec_loss_embeddings"):
        if key not in sd:
            raise CheckpointError(f"not a KARL checkpoint: key {key!r} is missing")
    bank, we = sd["latent_tokens"].shape
    wd = sd["decoder_latent_tokens_timestep_embed"].shape[1]
    enc_layers = _count_layers(sd, "encoder.transformer.")
    dec_layers = _count_layers(sd, "decoder.transformer.")
    preferred = getattr(args, "model", None)
    values: Dict[str, Any] = dict(
        model_name=preferred if isinstance(preferred, str) else "karl_small",
        base_tokenizer=base,
        input_size=int(getattr(args, "input_size", 256) or 256),
        encoder_width=we, encoder_layers=enc_layers, encoder_heads=_heads_for(we, enc_layers, "encoder", preferred),
        decoder_width=wd, decoder_layers=dec_layers, decoder_heads=_heads_for(wd, dec_layers, "decoder", preferred),
        mlp_ratio=sd["encoder.transformer.0.mlp.c_fc.weight"].shape[0] / we,
        bank_size=bank, pos_embed_size=sd["encoder_positional_embedding"].shape[-1],
        factorize_latent="pre_quantizer_mlp.weight" in sd,
        quantize_latent="quantize.embedding.weight" in sd,
        halting_hidden=sd["halting_mlp.0.weight"].shape[0],
    )
    # The release's behaviour, whatever this code's defaults are: nearest-resized positional maps, [0, 1]
    # pixels into the VAE and its raw output read back, the undivided scaled latent into the VAE decoder
    # (its stage 2 finetuned the decoder on it), ... (config.RELEASE_BEHAVIOUR, checked against the
    # release's own outputs by tests/test_release_oracle.py).
    values.update(RELEASE_BEHAVIOUR)
    if values["factorize_latent"]:
        values["token_dim"] = sd["pre_quantizer_mlp.weight"].shape[0]
    if values["quantize_latent"]:
        values["codebook_size"] = sd["quantize.embedding.weight"].shape[0]
    n_bins = sd["rec_loss_embeddings"].shape[0]
    if n_bins != len(KARLConfig().epsilon_bins):
        raise CheckpointError(f"the checkpoint has {n_bins} epsilon-condition embeddings; this code knows the "
                              f"release's {len(KARLConfig().epsilon_bins)} bins only")
    return KARLConfig(**values)


# --- public loaders ----------------------------------------------------------------------------------------

def _read(path: Path) -> Tuple[KARLConfig, Dict[str, Any], bool]:
    """-> (config, state dict, is_release)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        meta = Path(str(path) + ".json")
        if not meta.is_file():
            raise CheckpointError(f"missing config file {meta} next to {path} (written by export_safetensors)")
        return KARLConfig.from_dict(json.loads(meta.read_text())["model_config"]), load_file(str(path)), False
    ckpt = safe_torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} does not hold a dict checkpoint (got {type(ckpt).__name__})")
    sd = ckpt.get("ema") or ckpt.get("model") or ckpt.get("state_dict")
    if sd is None:
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            sd = ckpt  # a bare state dict
        else:
            raise CheckpointError(f"{path} has no `model`, `ema` or `state_dict` entry; keys: {sorted(ckpt)[:10]}")
    sd = _strip_ddp_prefix(sd)
    if ckpt.get("model_config"):
        return KARLConfig.from_dict(ckpt["model_config"]), sd, False
    return config_from_release(sd, ckpt.get("args")), sd, True


def load_tokenizer(path: PathLike, device: Union[str, torch.device] = "cpu", **overrides: Any) -> KARLTokenizer:
    """Load a KARL tokenizer in eval mode from our checkpoint (`ema` preferred over `model`), a released
    checkpoint (`ema`), or a safetensors export. `overrides` replace config fields, e.g.
    `drop_halted_tokens=True` or `vae_decode_scaled_latent=False`."""
    if str(path) == "demo":  # the shipped demo model, SHA-256 verified (kolmogorov_tokenizers/demo_model.py)
        from kolmogorov_tokenizers.demo_model import demo_model_path
        path = demo_model_path()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KARL checkpoint not found: {path}")
    config, sd, is_release = _read(path)
    check_finite_weights(sd, path)  # a diverged run's weights: refused here for the API, the CLI and evaluation
    if overrides:
        known = {f.name for f in dataclasses.fields(KARLConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown KARL config option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        config = dataclasses.replace(config, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the base's weights come with the model's, not from its own file
        model = create_model_from_config(config, init_weights=False)  # every tensor is loaded below
    missing, unexpected = load_release_state_dict(model, sd)
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensor(s) of this model, e.g. {missing[:5]}")
    if unexpected:
        warnings.warn(f"{path}: ignored {len(unexpected)} unknown key(s), e.g. {unexpected[:5]}")
    if is_release:
        model.config.extra["source"] = "release"
    return model.to(device).eval()


def model_state_dict(model: KARLTokenizer) -> Dict[str, torch.Tensor]:
    """Tensors only (the budget generator's extra state is training state, not weights)."""
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def export_safetensors(model: KARLTokenizer, path: PathLike) -> Path:
    """Write the weights to `path` (safetensors) and the config to `<path>.json`; both written atomically."""
    from safetensors.torch import save
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model_state_dict(model).items()}
    atomic_write_text(str(path) + ".json", json.dumps({"model_config": model.config.to_dict()}, indent=1))
    atomic_write_bytes(path, save(tensors))
    return path
