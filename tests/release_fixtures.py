"""Synthetic checkpoints in the layouts of the public release, for tests that cannot download the real files.

The layouts (every key and shape of each released file) are the JSON files of `checkpoint_formats/`.
Tensors are built so that the files stay tiny yet a wrong key map is caught:

* every tensor's rows (first dimension) hold distinct values drawn from a generator seeded by the key,
  so swapped keys, swapped q/k/v chunks or transposed square matrices change the values;
* by default a tensor is one row vector *expanded* (stride 0) over the other dimensions, so torch.save
  stores only `shape[0]` numbers per key: a full 1024-wide `karl_small` file is ~1 MB instead of ~1 GB.
  `load_state_dict` copies expanded tensors like any other; pass `dense=True` for ordinary tensors.

Public helpers (imported by other test files):
    load_layout(name) -> {key: shape}
    synthetic_state_dict(layout, seed=0, dense=False) -> {key: tensor}
    base_tokenizer_checkpoint(kind, state_dict=None, wrapper=None, ...) -> dict (the released wrapper)
    karl_args(...) -> argparse.Namespace with the official flags
    karl_checkpoint(base_tokenizer, quantize_latent, ...) -> {model, ema, optimizer, epoch, args[, scaler]}
    gan_losses_state_dict(...) -> gan_losses.<i>.* keys of a full-finetuning checkpoint
    save_checkpoint(obj, path) -> Path (torch.save, as the release writes them)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

Shape = tuple[int, ...]

BASE_LAYOUTS = {"vqgan": "vqgan_mage_imagenet", "vae": "vae_kl16_mar_imagenet"}
KARL_LAYOUTS = {
    ("vqgan", True): "karl_small_vqgan_quantized",
    ("vqgan", False): "karl_small_vqgan_continuous",
    ("vae", True): "karl_small_vae_quantized",
    ("vae", False): "karl_small_vae_continuous",
}
LAYOUT_NAMES = tuple(BASE_LAYOUTS.values()) + tuple(KARL_LAYOUTS.values())

CHECKPOINT_FORMATS = Path(__file__).resolve().parent / "checkpoint_formats"


def checkpoint_formats_dir() -> Path:
    """Folder holding the layout JSONs: tests/checkpoint_formats/, the repository's copy of the released
    checkpoints' key/shape listings."""
    if not (CHECKPOINT_FORMATS / f"{LAYOUT_NAMES[0]}.json").is_file():
        raise FileNotFoundError(f"checkpoint layout JSONs not found in {CHECKPOINT_FORMATS}")
    return CHECKPOINT_FORMATS


def load_layout(name: str) -> dict[str, Shape]:
    """{state-dict key: shape} of a released checkpoint; `name` is one of LAYOUT_NAMES."""
    if name not in LAYOUT_NAMES:
        raise ValueError(f"unknown layout {name!r}; allowed: {', '.join(LAYOUT_NAMES)}")
    with open(checkpoint_formats_dir() / f"{name}.json", encoding="utf-8") as f:
        raw = json.load(f)
    return {key: tuple(int(d) for d in shape) for key, shape in raw.items()}


def _key_seed(key: str, seed: int) -> int:
    # Stable across processes (unlike hash()): the same key and seed always give the same tensor.
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def synthetic_tensor(key: str, shape: Sequence[int], seed: int = 0, dense: bool = False,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of `shape` whose rows are distinct values determined by (key, seed)."""
    shape = tuple(shape)
    generator = torch.Generator().manual_seed(_key_seed(key, seed))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(1000 + seed, dtype=torch.long)
    if len(shape) == 0:
        return torch.randn((), generator=generator, dtype=dtype)
    rows = torch.randn(shape[0], generator=generator, dtype=dtype)  # (shape[0],)
    if key.endswith("running_var"):
        rows = rows.abs() + 0.5  # a variance must stay positive
    tensor = rows.reshape((shape[0],) + (1,) * (len(shape) - 1)).expand(shape)
    return tensor.contiguous() if dense else tensor


def synthetic_state_dict(layout: str | Mapping[str, Sequence[int]], seed: int = 0, dense: bool = False,
                         dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A state dict with every key of `layout` (a LAYOUT_NAMES entry or a {key: shape} map)."""
    shapes = load_layout(layout) if isinstance(layout, str) else layout
    return {key: synthetic_tensor(key, shape, seed, dense, dtype) for key, shape in shapes.items()}


def base_tokenizer_checkpoint(kind: str, state_dict: Mapping[str, torch.Tensor] | None = None,
                              wrapper: str | None = None, seed: int = 0, dense: bool = False) -> Any:
    """A base-tokenizer checkpoint as released.

    kind: "vqgan" (MAGE; wrapper "state_dict" = {"state_dict": sd} or "bare" = sd) or
          "vae" (MAR; wrapper "model" = {"model": sd}). Default wrapper: the one of the release.
    """
    if kind not in BASE_LAYOUTS:
        raise ValueError(f"unknown base tokenizer {kind!r}; allowed: {', '.join(BASE_LAYOUTS)}")
    allowed = ("state_dict", "bare") if kind == "vqgan" else ("model",)
    wrapper = wrapper or allowed[0]
    if wrapper not in allowed:
        raise ValueError(f"wrapper {wrapper!r} is not used for {kind}; allowed: {', '.join(allowed)}")
    sd = dict(state_dict) if state_dict is not None else synthetic_state_dict(BASE_LAYOUTS[kind], seed, dense)
    return sd if wrapper == "bare" else {wrapper: sd}


def karl_args(model: str = "karl_small", base_tokenizer: str = "vqgan", quantize_latent: bool = True,
              factorize_latent: bool = True, **overrides: Any) -> argparse.Namespace:
    """The `args` entry of a released KARL checkpoint: the official flags (METHOD.md section 4)."""
    values: dict[str, Any] = dict(
        batch_size=64, epochs=200, warmup_epochs=20, accum_iter=1,
        blr=1e-4, lr=2e-4, min_lr=0.0, weight_decay=0.05, grad_clip=3.0,
        model=model, base_tokenizer=base_tokenizer, quantize_latent=quantize_latent,
        factorize_latent=factorize_latent, input_size=256,
        data_path="/datasets/imagenet100", output_dir="./output_dir", log_dir="./output_dir",
        resume="", finetune="", start_epoch=0, seed=0, num_workers=10, pin_mem=True, device="cuda",
        world_size=8, local_rank=-1, dist_on_itp=False, dist_url="env://", distributed=True, rank=0,
        gpu=0, dist_backend="nccl",
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def _discriminator_shapes(ndf: int = 64, n_layers: int = 3, in_channels: int = 3) -> dict[str, Shape]:
    # taming's NLayerDiscriminator (BatchNorm): conv, lrelu, [conv, bn, lrelu] x n_layers, conv.
    shapes: dict[str, Shape] = {"main.0.weight": (ndf, in_channels, 4, 4), "main.0.bias": (ndf,)}
    index, mult = 2, 1
    for layer in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** layer, 8)
        shapes[f"main.{index}.weight"] = (ndf * mult, ndf * prev, 4, 4)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"main.{index + 1}.{stat}"] = (ndf * mult,)
        shapes[f"main.{index + 1}.num_batches_tracked"] = ()
        index += 3
    shapes[f"main.{index}.weight"] = (1, ndf * mult, 4, 4)
    shapes[f"main.{index}.bias"] = (1,)
    return shapes


def _lpips_shapes() -> dict[str, Shape]:
    # LPIPS(VGG16): the 13 conv layers in 5 slices, and 5 linear 1x1 heads.
    convs = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
             (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    slices = [(1, [0, 2]), (2, [5, 7]), (3, [10, 12, 14]), (4, [17, 19, 21]), (5, [24, 26, 28])]
    shapes: dict[str, Shape] = {}
    conv_iter = iter(convs)
    for slice_id, layer_ids in slices:
        for layer_id in layer_ids:
            out_ch, in_ch = next(conv_iter)
            shapes[f"net.slice{slice_id}.{layer_id}.weight"] = (out_ch, in_ch, 3, 3)
            shapes[f"net.slice{slice_id}.{layer_id}.bias"] = (out_ch,)
    for i, ch in enumerate((64, 128, 256, 512, 512)):
        shapes[f"lin{i}.model.1.weight"] = (1, ch, 1, 1)
    return shapes


def gan_losses_state_dict(num_discriminators: int = 8, seed: int = 0, dense: bool = False,
                          with_lpips: bool = True) -> dict[str, torch.Tensor]:
    """`gan_losses.<i>.*` keys of a full-finetuning checkpoint (one PatchGAN per token bucket + LPIPS).

    The exact sub-key names of the release are not in the layout files; these follow taming's
    `VQLPIPSWithDiscriminator` (`discriminator.main.*`, `perceptual_loss.*`). An inference loader must
    ignore every `gan_losses.` key whatever follows.
    """
    shapes: dict[str, Shape] = {}
    for i in range(num_discriminators):
        shapes.update({f"gan_losses.{i}.discriminator.{k}": s for k, s in _discriminator_shapes().items()})
        if with_lpips:
            shapes.update({f"gan_losses.{i}.perceptual_loss.{k}": s for k, s in _lpips_shapes().items()})
    return synthetic_state_dict(shapes, seed, dense)


def optimizer_state(model_state: Mapping[str, torch.Tensor], lr: float = 2e-4,
                    weight_decay: float = 0.05) -> dict[str, Any]:
    """An AdamW state dict shaped like the release's: 2 param groups (no wd on 1-D params), moments per
    trainable parameter (every non-base-tokenizer tensor in stage 1), all stride-0 zeros so it stays tiny."""
    trainable = [k for k in model_state if not k.startswith(("base_tokenizer.", "gan_losses."))]
    decay = [i for i, k in enumerate(trainable) if model_state[k].dim() > 1]
    no_decay = [i for i, k in enumerate(trainable) if model_state[k].dim() <= 1]
    state = {
        i: {"step": torch.tensor(1000.0),
            "exp_avg": torch.zeros(1).expand(model_state[k].shape),
            "exp_avg_sq": torch.zeros(1).expand(model_state[k].shape)}
        for i, k in enumerate(trainable)
    }
    common = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8, amsgrad=False, foreach=None, maximize=False,
                  capturable=False, differentiable=False, fused=None, lr_scale=1.0)
    return {"state": state, "param_groups": [
        dict(common, weight_decay=0.0, params=no_decay),
        dict(common, weight_decay=weight_decay, params=decay),
    ]}


def karl_checkpoint(base_tokenizer: str = "vqgan", quantize_latent: bool = True, *,
                    model_state: Mapping[str, torch.Tensor] | None = None,
                    ema_state: Mapping[str, torch.Tensor] | None = None,
                    epoch: int = 199, with_gan_losses: bool = False, with_scaler: bool = False,
                    with_optimizer: bool = True, seed: int = 0, dense: bool = False,
                    **args_overrides: Any) -> dict[str, Any]:
    """A KARL checkpoint as the release writes it: {model, ema, optimizer, epoch, args[, scaler]}.

    By default `model` and `ema` follow the `karl_small_<base>_<quantized|continuous>` layout with
    DIFFERENT values (ema uses seed + 1) so a test can tell which one a loader used. Pass your own
    `model_state` (e.g. a tiny model's state_dict()) to wrap it instead; `ema_state` defaults to a
    perturbed copy of it. `with_gan_losses` adds the `gan_losses.*` keys of a full-finetuning file.
    """
    if (base_tokenizer, bool(quantize_latent)) not in KARL_LAYOUTS:
        raise ValueError(f"unknown base tokenizer {base_tokenizer!r}; allowed: {', '.join(BASE_LAYOUTS)}")
    layout = KARL_LAYOUTS[(base_tokenizer, bool(quantize_latent))]
    if model_state is None:
        model = synthetic_state_dict(layout, seed, dense)
        ema = dict(ema_state) if ema_state is not None else synthetic_state_dict(layout, seed + 1, dense)
    else:
        model = dict(model_state)
        ema = dict(ema_state) if ema_state is not None else {
            k: (v + 0.5 if v.is_floating_point() else v.clone()) for k, v in model.items()}
    if with_gan_losses:
        model.update(gan_losses_state_dict(seed=seed, dense=dense))
        ema.update(gan_losses_state_dict(seed=seed + 1, dense=dense))
    checkpoint: dict[str, Any] = {"model": model, "ema": ema}
    if with_optimizer:
        checkpoint["optimizer"] = optimizer_state(model)
    checkpoint["epoch"] = epoch
    if with_scaler:
        checkpoint["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                "growth_interval": 2000, "_growth_tracker": 17}
    checkpoint["args"] = karl_args(base_tokenizer=base_tokenizer, quantize_latent=bool(quantize_latent),
                                   **args_overrides)
    return checkpoint


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save as the release does (default pickle protocol, zip format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path
