"""Typed training configuration: defaults < YAML file < official argparse flags < `key=value` overrides.

One dataclass tree holds every setting of both training stages. The official release's flags
(`--batch_size`, `--blr`, ...) map onto fields of this tree, so its run scripts work unchanged, and any
field can also be set with an OmegaConf dotlist override (`optim.betas=[0.9,0.99] model.overrides.width=192`).
Constants of the method default to the official values; comments cite docs METHOD.md (section 4 = recipes).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from modules.device import DeviceError, check_device_name
from modules.transformer import ATTENTION_BACKENDS

CONFIG_DIR = Path(__file__).parent / "configs"
STAGES = ("latent_distillation", "full_finetuning", "base_tokenizer")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GAN_BUCKET_COUNTS = ("eic_budget", "kept_tokens")
PIXEL_RANGES = ("unit", "signed")  # [0, 1] as loaded, or 2x - 1


TRAIN_INTERPOLATIONS = ("bilinear", "bicubic")
FINETUNE_WEIGHTS = ("ema", "model")


class ConfigError(ValueError):
    """A setting is unknown, has the wrong type or an invalid value; the message says which and why."""


@dataclass
class ModelConfig:
    model: str = "karl_small"  # METHOD.md 2: released size
    base_tokenizer: str = "vqgan"
    base_tokenizer_ckpt: Optional[str] = None  # trained base weights; None = the registry's default (or untrained, LOUD warning)
    quantize_latent: bool = False  # official flag (store_true); the official run scripts pass it
    factorize_latent: bool = False  # official flag (store_true); the official run scripts pass it
    overrides: Dict[str, Any] = field(default_factory=dict)  # extra create_model(**overrides), e.g. encoder_width
    base_overrides: Dict[str, Any] = field(default_factory=dict)  # create_base_tokenizer(**overrides), e.g. ch


@dataclass
class DataConfig:
    data_path: str = "datasets/imagenet"  # ImageFolder root (train/ inside, or class folders directly)
    split: str = "train"
    input_size: int = 256  # METHOD.md 4: RandomResizedCrop(256)
    kind: str = "train"  # transform kind passed to engine.data.build_dataset ("train" = augmented)
    num_workers: int = 10  # official run scripts
    # Resampling of the training crop (RandomResizedCrop): "bilinear" = the release (torchvision's default);
    # "bicubic" = this project's choice (as every other resize here). docs/DIFFERENCES.md.
    train_interpolation: str = "bilinear"
    pin_memory: bool = True


@dataclass
class OptimConfig:
    batch_size: int = 64  # per GPU; METHOD.md 4 (stage 2: 18)
    epochs: int = 200  # METHOD.md 4 (stage 2: 400)
    warmup_epochs: float = 20.0  # METHOD.md 4
    blr: float = 1e-4  # METHOD.md 4: lr = blr * global_batch / 256
    lr: Optional[float] = None  # absolute lr; overrides blr when set
    min_lr: float = 0.0  # floor of the half-cycle cosine
    weight_decay: float = 0.05  # METHOD.md 4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # METHOD.md 4
    grad_clip: Optional[float] = 3.0  # METHOD.md 4; None or <= 0 disables clipping
    accum_iter: int = 1  # gradient accumulation (micro-batches per optimizer step)


@dataclass
class GanConfig:
    """Stage-2 pixel losses (METHOD.md 4.2): L1 + LPIPS + hinge PatchGAN with taming's adaptive weight."""

    l1_weight: float = 1.0
    perceptual: str = "lpips"  # "lpips" | "offline_effnet" | "none" (modules/losses/perceptual.py)
    perceptual_weight: float = 1.0
    num_discriminators: int = 8  # one PatchGAN per token-count bucket [code]: 8 buckets
    bucket_size: Optional[int] = None  # tokens per bucket; None = max_tokens // num_discriminators (32 at 256)
    disc_layers: int = 3  # METHOD.md 4.2: NLayer PatchGAN, 3 layers
    disc_ndf: int = 64  # METHOD.md 4.2: ndf 64
    # GAN weight: weights[i] for the i-th interval of boundaries (epoch <= 20 -> 0, <= 100 -> 0.2, else 0.8) [code]
    weight_boundaries: List[int] = field(default_factory=lambda: [20, 100])
    weight_values: List[float] = field(default_factory=lambda: [0.0, 0.2, 0.8])
    # Once the GAN is on, the release steps the discriminator on 8 of every 9 iterations and the
    # autoencoder on 1 (looks accidental, kept as the default for parity; set 1 for alternating steps).
    disc_steps_per_ae_step: int = 8
    # True (release): the autoencoder steps on iterations (i + 1) % (k + 1) == 0 of each epoch (i counted from
    # the epoch's start, so 8 D steps come first and the cycle restarts every epoch); False: one continuous
    # cycle (autoencoder first) counted from the first GAN step, kept across epochs and checkpoints.
    cycle_within_epoch: bool = True
    disc_lr_scale: float = 1.0  # discriminator lr = model lr * this (same schedule)
    # The release's discriminator AdamW is built without parameter groups: torch's default weight decay
    # 0.01 on every parameter (biases and BatchNorm too). 0.0 = no decay.
    disc_weight_decay: float = 0.01
    # Which discriminator judges a reconstruction: bucket = clamp(count // bucket_size - bucket_offset, 0,
    # num_discriminators - 1). The release subtracts 1 (T < 64 -> 0, ..., T >= 256 -> 7 at 8 x 32).
    bucket_offset: int = 1
    # The count: "eic_budget" (release: the iteration's EIC budget T, for both phases: one bucket per batch)
    # or "kept_tokens" (per image: T in EIC, the tokens left after halting in LTC).
    bucket_count: str = "eic_budget"
    # Pixel range the discriminators see: "unit" (release: [0, 1] as loaded) or "signed" (2x - 1, taming's range).
    disc_inputs: str = "unit"
    # Pixel range LPIPS sees: "unit" (release: [0, 1] passed unchanged) or "signed" ([-1, 1], LPIPS's range).
    perceptual_inputs: str = "unit"
    # LPIPS's dropout layers active in training (release: its loss modules follow model.train()).
    perceptual_dropout: bool = True
    # True (release): D sees the real batch and each phase's reconstructions as separate batches (its
    # BatchNorm normalises each on its own) and the D loss is the sum of one hinge per phase. False: one
    # concatenated batch of reals and fakes, one hinge over it.
    disc_separate_batches: bool = True
    # False (release): D loss = hinge. True: hinge x the epoch's GAN weight (0.2 / 0.8).
    disc_loss_gan_weighted: bool = False


@dataclass
class DebugConfig:
    nan_loss_step: int = -1  # >= 0: replace a loss term by NaN at this global step (tests the NaN stop)
    nan_loss_term: Optional[str] = None  # which term; None = the first one


@dataclass
class TrainConfig:
    stage: str = "latent_distillation"  # one of STAGES
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    output_dir: str = "output_dir"
    log_dir: Optional[str] = None  # TensorBoard folder; None = output_dir
    resume: Optional[str] = None  # checkpoint path or "auto" (= output_dir/checkpoint-last.pth if present)
    finetune: Optional[str] = None  # stage 2: stage-1 checkpoint to start from (model weights + EMA)
    # --finetune and --resume refuse any missing / unexpected key; True allows a deliberate partial --finetune
    finetune_non_strict: bool = False
    # Which weights of the --finetune checkpoint start stage 2: "ema" = the release (its EMA goes into both the
    # model and the new EMA); "model" = the live weights into the model, the EMA into the EMA (ours).
    finetune_weights: str = "ema"
    seed: int = 0
    # Each DDP rank draws its own EIC budget (seed + rank): the release, so 8 GPUs see 8 budgets per step.
    # False: one budget per step on every rank (ours). One process: identical either way.
    budget_per_rank: bool = True
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N" | "mps" (modules.device)
    precision: str = "auto"  # auto = fp16 autocast on GPU (official); on CPU bf16 where a probe measures it faster, else fp32
    # modules.transformer backend: "sdpa" (default) | "math" (SDPA's math kernel: faster on CPU in bf16 at
    # the demo's small head dim, benchmarks/bench_training.py) | "reference" (the release's MHA path)
    attention_backend: str = "sdpa"
    log_every: int = 20  # steps between progress lines / scalar logs
    image_log_every: int = 1000  # steps between reconstruction grids in TensorBoard (0 = off)
    save_every: int = 20  # epochs between checkpoint-<epoch>.pth (official 20); 0 = checkpoint-last.pth only
    save_last_every_steps: int = 0  # >0: also refresh checkpoint-last.pth every N optimizer steps (mid-epoch)
    max_steps: int = -1  # >0: stop (and save checkpoint-last) after this many optimizer steps in total
    ema_decay: float = 0.9999  # METHOD.md 4
    ema_reset_every_epoch: bool = False  # the release resets EMA to the live weights every epoch (its presets: true)
    # Stage 2: the release updates the EMA after every iteration, discriminator steps included (the live
    # autoencoder weights then do not change, so the EMA only decays towards them); False: autoencoder steps only.
    ema_update_on_disc_steps: bool = True
    wandb: bool = False  # optional; needs the wandb package
    wandb_project: str = "karl"
    dist_url: str = "env://"  # torchrun sets the env; kept for the official flag
    dist_backend: Optional[str] = None  # None = nccl on GPU, gloo on CPU
    find_unused_parameters: bool = True  # required: parameters of halted paths / unused buckets get no grad


# Official argparse flags -> dotted config key. Flags default to SUPPRESS so only the given ones apply.
FLAG_TO_KEY: Dict[str, str] = {
    "batch_size": "optim.batch_size",
    "epochs": "optim.epochs",
    "warmup_epochs": "optim.warmup_epochs",
    "blr": "optim.blr",
    "lr": "optim.lr",
    "min_lr": "optim.min_lr",
    "weight_decay": "optim.weight_decay",
    "grad_clip": "optim.grad_clip",
    "accum_iter": "optim.accum_iter",
    "model": "model.model",
    "base_tokenizer": "model.base_tokenizer",
    "base_tokenizer_ckpt": "model.base_tokenizer_ckpt",
    "quantize_latent": "model.quantize_latent",
    "factorize_latent": "model.factorize_latent",
    "input_size": "data.input_size",
    "data_path": "data.data_path",
    "num_workers": "data.num_workers",
    "output_dir": "output_dir",
    "log_dir": "log_dir",
    "resume": "resume",
    "finetune": "finetune",
    "finetune_non_strict": "finetune_non_strict",
    "seed": "seed",
    "device": "device",
    "precision": "precision",
    "log_every": "log_every",
    "save_every": "save_every",
    "max_steps": "max_steps",
    "ema_decay": "ema_decay",
    "ema_reset_every_epoch": "ema_reset_every_epoch",
    "wandb": "wandb",
    "dist_url": "dist_url",
    "stage": "stage",
}
_BOOL_FLAGS = {"quantize_latent", "factorize_latent", "ema_reset_every_epoch", "wandb", "finetune_non_strict"}
_FLAG_TYPES = {
    "batch_size": int, "epochs": int, "warmup_epochs": float, "blr": float, "lr": float, "min_lr": float,
    "weight_decay": float, "grad_clip": float, "accum_iter": int, "input_size": int, "num_workers": int,
    "seed": int, "log_every": int, "save_every": int, "max_steps": int, "ema_decay": float,
}


def build_arg_parser(stage: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train KARL (latent distillation / full finetuning). Precedence: defaults < --config YAML "
        "< flags < key=value overrides; later occurrences win.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML file, or the name of a preset in engine/configs/ (e.g. demo_cpu)")
    if stage is None:
        parser.add_argument("--stage", choices=STAGES, help="training stage")
    for flag, key in FLAG_TO_KEY.items():
        if flag == "stage":
            continue
        if flag in _BOOL_FLAGS:
            parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, help=f"sets {key}")
        elif flag == "precision":
            parser.add_argument("--precision", choices=PRECISIONS, help="autocast precision (auto: fp16 on GPU; on CPU bf16 where measurably faster, else fp32)")
        else:
            parser.add_argument(f"--{flag}", type=_FLAG_TYPES.get(flag, str), metavar=flag.upper(), help=f"sets {key}")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # torch.distributed.launch
    parser.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides, e.g. optim.betas=[0.9,0.99]")
    return parser


def resolve_config_file(name_or_path: str) -> Path:
    """A path that exists, else a preset name looked up next to this file (never relative to the cwd)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    preset = CONFIG_DIR / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file not found: {name_or_path!r} (neither a file nor a preset; presets: {presets})")


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid setting in {source}: {_short(err)}") from None


def _short(err: Exception) -> str:
    # OmegaConf messages end with a multi-line "full_key/object_type" block; the first line says it all.
    return str(err).strip().splitlines()[0]


def load_config(
    argv: Optional[Sequence[str]] = None, stage: Optional[str] = None, config_file: Optional[str] = None
) -> TrainConfig:
    """Parse command-line arguments into a validated TrainConfig.

    stage: fixes the stage (the per-stage entry points); its YAML preset is then the base layer.
    config_file: default YAML when no --config is given.
    """
    args = build_arg_parser(stage).parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    flags = vars(args)
    overrides = list(flags.pop("overrides", []))
    flags.pop("local_rank", None)
    chosen_stage = stage or flags.get("stage")

    cfg = OmegaConf.structured(TrainConfig)
    # YAML layers: the stage's preset (official recipe), then --config (e.g. demo_cpu) on top of it.
    yaml_names = [chosen_stage] if chosen_stage in STAGES and (CONFIG_DIR / f"{chosen_stage}.yaml").is_file() else []
    extra = flags.pop("config", None) or config_file
    if extra is not None:
        yaml_names.append(extra)
    for yaml_name in yaml_names:
        path = resolve_config_file(yaml_name)
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # YAML syntax errors
            raise ConfigError(f"cannot parse config file {path}: {_short(err)}") from None
        cfg = _merge(cfg, loaded, str(path))
    if stage is not None:
        cfg = _merge(cfg, {"stage": stage}, "the entry point")

    flag_dotlist = {}
    for flag, value in flags.items():
        flag_dotlist[FLAG_TO_KEY[flag]] = value
    cfg = _merge(cfg, _nested(flag_dotlist), "command-line flags")

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.blr=2e-4)")
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot parse override {item!r}: {_short(err)}") from None
        cfg = _merge(cfg, dot, f"override {item!r}")

    config: TrainConfig = OmegaConf.to_object(cfg)
    validate(config)
    return config


def _nested(dotted: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def validate(cfg: TrainConfig) -> None:
    """Value checks a type system cannot express. Raises ConfigError naming the setting and allowed values."""
    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ConfigError(message)

    need(cfg.stage in STAGES, f"stage must be one of {STAGES}, got {cfg.stage!r}")
    need(cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    need(cfg.attention_backend in ATTENTION_BACKENDS,
         f"attention_backend must be one of {ATTENTION_BACKENDS}, got {cfg.attention_backend!r}")
    try:
        check_device_name(cfg.device, option="device")  # syntax only: a config may be checked on a CPU machine
    except DeviceError as err:
        raise ConfigError(str(err)) from None
    o = cfg.optim
    # inf passes every "> 0" check and NaN slips through some: one NaN/Inf lr writes NaN into every weight
    for name in ("blr", "lr", "min_lr", "weight_decay", "warmup_epochs", "grad_clip"):
        value = getattr(o, name)
        need(value is None or math.isfinite(value), f"optim.{name} must be a finite number, got {value}")
    need(all(math.isfinite(b) for b in o.betas), f"optim.betas must be finite, got {o.betas}")
    need(math.isfinite(cfg.ema_decay), f"ema_decay must be a finite number, got {cfg.ema_decay}")
    need(o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}")
    need(o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}")
    # warmup_epochs > epochs is allowed (short demo runs with the recipe's warmup 20: lr only ramps up)
    need(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    need(o.blr > 0, f"optim.blr must be > 0, got {o.blr}")
    need(o.lr is None or o.lr > 0, f"optim.lr must be > 0 (or unset), got {o.lr}")
    need(o.min_lr >= 0, f"optim.min_lr must be >= 0, got {o.min_lr}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(o.accum_iter >= 1, f"optim.accum_iter must be >= 1, got {o.accum_iter}")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two values in [0, 1), got {o.betas}")
    need(cfg.data.input_size >= 8, f"data.input_size must be >= 8, got {cfg.data.input_size}")
    need(cfg.data.num_workers >= 0, f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    need(cfg.data.train_interpolation in TRAIN_INTERPOLATIONS,
         f"data.train_interpolation must be one of {TRAIN_INTERPOLATIONS}, got {cfg.data.train_interpolation!r}")
    need(cfg.finetune_weights in FINETUNE_WEIGHTS,
         f"finetune_weights must be one of {FINETUNE_WEIGHTS}, got {cfg.finetune_weights!r}")
    need(0.0 <= cfg.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    need(cfg.save_every >= 0, f"save_every must be >= 0 (epochs; 0 = checkpoint-last.pth only), got {cfg.save_every}")
    need(cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}")
    g = cfg.gan
    need(g.perceptual in ("lpips", "offline_effnet", "none"),
         f"gan.perceptual must be one of ('lpips', 'offline_effnet', 'none'), got {g.perceptual!r}")
    need(g.num_discriminators >= 1, f"gan.num_discriminators must be >= 1, got {g.num_discriminators}")
    need(len(g.weight_values) == len(g.weight_boundaries) + 1,
         f"gan.weight_values needs one value more than gan.weight_boundaries "
         f"({len(g.weight_boundaries)} boundaries, {len(g.weight_values)} values)")
    need(list(g.weight_boundaries) == sorted(g.weight_boundaries), f"gan.weight_boundaries must be increasing, got {g.weight_boundaries}")
    need(g.disc_steps_per_ae_step >= 0, f"gan.disc_steps_per_ae_step must be >= 0, got {g.disc_steps_per_ae_step}")
    need(g.bucket_offset >= 0, f"gan.bucket_offset must be >= 0, got {g.bucket_offset}")
    need(g.bucket_count in GAN_BUCKET_COUNTS, f"gan.bucket_count must be one of {GAN_BUCKET_COUNTS}, got {g.bucket_count!r}")
    for key in ("disc_inputs", "perceptual_inputs"):
        need(getattr(g, key) in PIXEL_RANGES, f"gan.{key} must be one of {PIXEL_RANGES}, got {getattr(g, key)!r}")
    need(g.disc_weight_decay >= 0, f"gan.disc_weight_decay must be >= 0, got {g.disc_weight_decay}")


def config_to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    """Plain nested dict (only builtins), safe for weights_only checkpoint loading and YAML."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(data: Dict[str, Any]) -> TrainConfig:
    return OmegaConf.to_object(_merge(OmegaConf.structured(TrainConfig), data, "checkpoint config"))


def save_resolved_config(cfg: TrainConfig, output_dir: str | Path) -> Path:
    """Write the fully resolved config as output_dir/config.yaml (atomically) and return its path."""
    from modules.io import atomic_write_text

    path = Path(output_dir) / "config.yaml"
    return atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def resolved_lr(cfg: TrainConfig, world_size: int) -> float:
    """lr = blr * global batch / 256 unless lr is given (METHOD.md 4)."""
    if cfg.optim.lr is not None:
        return cfg.optim.lr
    return cfg.optim.blr * cfg.optim.batch_size * cfg.optim.accum_iter * world_size / 256
