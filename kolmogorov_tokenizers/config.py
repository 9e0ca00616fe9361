"""Typed configuration of a KARL model: sizes, base tokenizer, quantisation and every method constant.

Defaults are the official values (METHOD.md sections 2, 3 and 5; [code] = the release, [paper] = the paper):
every preset computes what the release computes (checked against the release's own numbers by
tests/test_release_oracle.py). Where this project makes another choice it is a named setting, listed with
its release value in RELEASE_BEHAVIOUR and in docs/DIFFERENCES.md.
`to_dict` / `from_dict` round-trip through plain Python types, so a checkpoint can rebuild its model; configs
written before `config_version` 2 are read with the behaviour they were trained with (LEGACY_V1_BEHAVIOUR).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from modules.halting import HALTING_LOSS_REDUCTIONS
from modules.positional import POSITIONAL_EMBEDDING_INITS

# METHOD.md s.3 [code]: the 19 epsilon-condition levels (mean L1 error in [0, 1] pixel space).
EPSILON_BINS: Tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.09, 0.1,
    0.12, 0.14, 0.16, 0.18, 0.2, 0.24, 0.28, 0.32, 0.38,
)

CONDITION_EMBEDDING_INITS = ("repeat", "sinusoidal")
POSITIONAL_RESIZES = ("nearest", "bilinear")
VAE_PIXEL_RANGES = ("unit", "signed")

TILED_DROP_ERROR = ("drop_halted_tokens=True cannot reproduce the release's tiled training masks: set "
                    "tile_halting_mask_in_training=False with it (docs/DIFFERENCES.md)")

# Version of the config layout written by `to_dict`. Version 1 (no `config_version` key) is this project's
# configs from before the settings below existed; their models were trained with LEGACY_V1_BEHAVIOUR.
CONFIG_VERSION = 2

# The release's value of every behaviour setting where this project offers another choice. Release-format
# checkpoints are always built with these (kolmogorov_tokenizers/checkpoint.py); they are also the defaults.
RELEASE_BEHAVIOUR: Dict[str, Any] = dict(
    positional_resize="nearest",
    vae_pixel_range="unit",
    vae_decode_scaled_latent=True,
    label_smoothing=0.0,
    halting_loss_reduction="split",
    eps0_clamp=False,
    ltc_budget_at_least_eic=False,
    vqgan_soft_code_codebook_grad=False,
    positional_embedding_init="random",
    condition_embedding_init="repeat",
    condition_augmentation=False,
    halting_image_context=False,
    drop_halted_tokens=False,
    tile_halting_mask_in_training=True,
)

# What a version-1 config (no `config_version` key) meant for the settings it did not store: the project's
# behaviour before version 2. Keys it did store (label_smoothing, vae_decode_scaled_latent, ...) keep their
# stored values.
LEGACY_V1_BEHAVIOUR: Dict[str, Any] = dict(
    positional_resize="bilinear",
    vae_pixel_range="signed",
    halting_loss_reduction="mean",
    eps0_clamp=True,
    ltc_budget_at_least_eic=True,
    vqgan_soft_code_codebook_grad=True,
    tile_halting_mask_in_training=False,
)


@dataclass
class KARLConfig:
    # --- identity -------------------------------------------------------------------------------------
    model_name: str = "karl_small"
    base_tokenizer: str = "vqgan"  # a name of base_tokenizers.list_base_tokenizers() (or a custom base's kind)
    input_size: int = 256  # METHOD.md s.2: 256 px -> 16 x 16 grid with f = 16
    # The base tokenizer's own config (sizes), recorded at build time so a checkpoint rebuilds it exactly.
    base_tokenizer_config: Optional[Dict[str, Any]] = None

    # --- sizes (karl_small = the released size, METHOD.md s.2) -----------------------------------------
    encoder_width: int = 1024
    encoder_layers: int = 8
    encoder_heads: int = 8
    decoder_width: int = 1024
    decoder_layers: int = 8
    decoder_heads: int = 8
    mlp_ratio: float = 4.0  # METHOD.md s.2
    bank_size: int = 512  # rows of `latent_tokens` (max budget); METHOD.md s.2: 512
    pos_embed_size: int = 64  # learned (w, 64, 64) positional maps, resized to the grid (positional_resize)
    # How the (w, P, P) maps are resized to the g x g token grid. "nearest" [code, verified]: F.interpolate's
    # default, 64 -> 16 keeps rows/columns 0, 4, 8, ...; only those entries were ever trained in the released
    # models, so any other resize reads untrained values. "bilinear" (ours): every entry contributes.
    positional_resize: str = "nearest"
    # How the encoder's and decoder's positional maps start: "random" [code] N(0, 1/w), or "sincos" (ours, a
    # deviation: smooth 2D sin/cos features, so attention starts local; modules/positional.py).
    positional_embedding_init: str = "random"

    # --- 1D tokens --------------------------------------------------------------------------------------
    factorize_latent: bool = True  # METHOD.md s.2: LayerNorm -> Linear(width -> 12)
    token_dim: int = 12  # used when factorize_latent; otherwise the 1D token dim is the encoder width
    quantize_latent: bool = False
    codebook_size: int = 4096  # METHOD.md s.2
    commitment: float = 0.25  # METHOD.md s.2
    l2_normalize_codes: bool = True  # METHOD.md s.2

    # --- halting ------------------------------------------------------------------------------------------
    halting_hidden: int = 512  # METHOD.md s.2: Linear(w, 512) -> Tanh -> Linear(512, 1)
    halting_threshold: float = 0.75  # METHOD.md s.2: halted iff omega > 0.75
    # What the halting head reads. False [code]: each 1D token's encoder output alone. True (ours, a
    # deviation): also the mean and std over the grid of the encoder's 2D input tokens (RGB patch embedding +
    # base latent, without positions, through their own LayerNorm), the same 2w numbers for every token. The
    # token outputs are dominated by their position, and an encoder learns each image's difficulty slowly
    # (docs/RESEARCH_LOG.md#why-the-halting-head-learns-slowly-finding-6); these statistics carry it from the
    # first step.
    halting_image_context: bool = False
    # Remove halted tokens from the decoder sequence instead of masking them (same 2D outputs, less compute).
    # drop_halted_tokens: in training (off = the release's masked path); inference_drop_halted_tokens: in
    # encode/decode (on: measured faster, benchmarks/bench_decoder.py, docs/PERFORMANCE.md).
    drop_halted_tokens: bool = False
    inference_drop_halted_tokens: bool = True
    # Decoder halting masks in TRAINING. True [code, verified]: as the release, which repeats the batch's masks
    # over heads in the order nn.MultiheadAttention does not expect, so head h of image b is masked with the
    # halting pattern of image (b * heads + h) mod B (modules/halting.tile_masks_over_heads); the released
    # models were trained so, and the oracle's gradients need it. False (ours): each image's own mask.
    # encode/decode always use each image's own mask (the release's result for one image at a time).
    # Dropping halted tokens cannot express the tiled masks: drop_halted_tokens needs this False.
    tile_halting_mask_in_training: bool = True

    # --- speed switches (no effect on outputs beyond float tolerance) ----------------------------------
    compile_blocks: bool = False  # torch.compile every transformer block (dynamic shapes); off: compile time
    # Base tokenizer's convolutions in channels_last layout (opt-in: vqgan_demo encode + decode measured
    # 1.06-1.29x faster in fp32, 1.39-2.54x in bf16 on this project's CPU, benchmarks/bench_channels_last.py).
    base_channels_last: bool = False

    # --- epsilon conditioning and budgets (METHOD.md s.3) ----------------------------------------------
    # A training iteration is EIC (Estimate Image Complexity: a random budget T under a near-zero epsilon,
    # measuring the error eps0) then LTC (Learn to Tokenize Complexity: the LTC budget conditioned on eps0,
    # halting targets keep the first T tokens). The field names below are saved in checkpoints' configs.
    epsilon_bins: Tuple[float, ...] = EPSILON_BINS
    budget_step_divisor: int = 16  # step = N // 16 (16 tokens for a 16 x 16 grid, 4 for 8 x 8)
    eic_max_budget_steps: int = 23  # [code] EIC budgets {step, ..., 23 step} = 16..368; [paper] 16 steps
    eic_budget_choices: Optional[Tuple[int, ...]] = None  # explicit EIC budgets overriding the range
    eic_epsilon_max: float = 0.04  # [code] EIC condition drawn from the bins <= 0.04
    curriculum_decay: float = 0.99  # [code] weight of bins >= the batch's min L1 *= 0.99 per iteration
    # Tokens of the LTC phase and the default (largest) inference budget. [code] 256 = N for 16 x 16;
    # None = N (the grid's token count). Resolved: KARLTokenizer.ltc_budget.
    ltc_budget: Optional[int] = None
    # False [code]: LTC always runs `ltc_budget` tokens; an EIC budget above it (272..368) gets dT = 0 and
    # every halting target "keep". True (ours): LTC runs max(T, ltc_budget) tokens.
    ltc_budget_at_least_eic: bool = False
    eic_halting_loss: bool = True  # [code] EIC also pushes every omega toward 0 (keep)
    condition_augmentation: bool = False  # [code] present in the release but never called: off for parity
    augmentation_prob: float = 0.45  # [code]
    augmentation_small_budget_steps: int = 2  # [code] "T = 32" = 2 steps: move the bin toward the largest
    sampling_seed: int = 0  # seed of the per-batch EIC budget generator (same on every DDP rank)
    # How the per-bin condition embeddings start. "repeat" [code]: bin value repeated across the width. The
    # encoder's first LayerNorm maps every constant vector to the same output, so all bins start identical
    # and each must learn its own direction. "sinusoidal" (ours, a deviation): sin/cos features of log(eps),
    # so the bins start distinct and ordered (neighbours similar). Same parameter, same checkpoint keys.
    condition_embedding_init: str = "repeat"

    # --- losses (all weights 1 [code]) ------------------------------------------------------------------
    eic_loss_weight: float = 1.0
    ltc_loss_weight: float = 1.0
    rec_loss_weight: float = 1.0
    quant_loss_weight: float = 1.0
    halting_loss_weight: float = 1.0
    # VQGAN stage-1 cross-entropy. 0 [code, verified]: the release builds a label-smoothing loss with 0.1 but
    # returns the plain negative log-likelihood (METHOD.md s.4). 0.1: ours.
    label_smoothing: float = 0.0
    soft_code_mse_weight: float = 1.0  # METHOD.md s.4: + MSE(soft code, true code)
    # LTC halting BCE (modules.halting.halting_loss). "split" [code, verified]: mean over the dT tokens that should halt + mean over the T
    # that should stay (one mean over all when dT = 0). "mean" (ours): one mean over all T + dT tokens.
    halting_loss_reduction: str = "split"
    # eps0 (the EIC error that conditions LTC). False [code, verified]: mean |x_hat - x| on the base decoder's
    # raw output. True (ours): on x_hat clamped to [0, 1], the pixels a user would see.
    eps0_clamp: bool = False

    # --- output side ------------------------------------------------------------------------------------
    vqgan_hard_decode: bool = False  # VQGAN: False = softmax-weighted codebook (release), True = argmax code
    # VQGAN soft code = softmax(logits) @ base codebook. False [code]: the release reads the codebook's values
    # without gradient, so full finetuning (stage 2) never moves the codebook through KARL's losses. True
    # (ours): the pixel losses also train the codebook. No effect while the base is frozen (stage 1).
    vqgan_soft_code_codebook_grad: bool = False
    # VAE: True = feed the predicted SCALED latent to the decoder (the release's behaviour, METHOD.md s.2;
    # its VAE was finetuned on that input in stage 2); False = divide by the scale first (ours: the correct
    # inverse, sound for models trained from scratch on a VAE that was not finetuned that way).
    vae_decode_scaled_latent: bool = True
    # VAE pixel convention. "unit" [code, verified]: the release feeds [0, 1] images straight into the VAE
    # (MAR trained it on [-1, 1]) and reads the decoder's raw output as the [0, 1] image. "signed" (ours, MAR's
    # convention): map [0, 1] -> [-1, 1] before the encoder and back after the decoder.
    vae_pixel_range: str = "unit"
    # VAE: METHOD.md s.2 [code] KARL reads posterior.sample() * 0.2325. The frozen base sits in eval mode, so
    # KARL asks for a sample explicitly while it trains; in eval (encode) it reads the posterior mean so the
    # same image always gets the same tokens (a deliberate deviation: set False to read the mean in training).
    vae_sample_posterior: bool = True

    extra: Dict[str, Any] = field(default_factory=dict)  # free-form notes kept with checkpoints
    config_version: int = CONFIG_VERSION  # see CONFIG_VERSION; written by to_dict

    def __post_init__(self) -> None:
        self.epsilon_bins = tuple(float(b) for b in self.epsilon_bins)
        if self.eic_budget_choices is not None:
            self.eic_budget_choices = tuple(int(b) for b in self.eic_budget_choices)
        if list(self.epsilon_bins) != sorted(self.epsilon_bins) or len(self.epsilon_bins) == 0:
            raise ValueError("epsilon_bins must be a non-empty increasing sequence")
        if self.eic_epsilon_max < self.epsilon_bins[0]:
            raise ValueError(f"eic_epsilon_max {self.eic_epsilon_max} is below the smallest bin "
                             f"{self.epsilon_bins[0]}")
        for name in ("encoder_width", "decoder_width", "encoder_layers", "decoder_layers", "bank_size",
                     "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.positional_embedding_init not in POSITIONAL_EMBEDDING_INITS:
            raise ValueError(f"positional_embedding_init must be one of {POSITIONAL_EMBEDDING_INITS}, "
                             f"got {self.positional_embedding_init!r}")
        if self.condition_embedding_init not in CONDITION_EMBEDDING_INITS:
            raise ValueError(f"condition_embedding_init must be one of {CONDITION_EMBEDDING_INITS}, "
                             f"got {self.condition_embedding_init!r}")
        if not 0.0 < self.halting_threshold < 1.0:
            raise ValueError(f"halting_threshold must be in (0, 1), got {self.halting_threshold}")
        for name, allowed in (("positional_resize", POSITIONAL_RESIZES), ("vae_pixel_range", VAE_PIXEL_RANGES),
                              ("halting_loss_reduction", HALTING_LOSS_REDUCTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.drop_halted_tokens and self.tile_halting_mask_in_training:
            raise ValueError(TILED_DROP_ERROR)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def latent_token_dim(self) -> int:
        """Channels of one 1D token (12 when factorised, the encoder width otherwise)."""
        return self.token_dim if self.factorize_latent else self.encoder_width

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["epsilon_bins"] = list(self.epsilon_bins)
        if self.eic_budget_choices is not None:
            d["eic_budget_choices"] = list(self.eic_budget_choices)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "KARLConfig":
        """Rebuild a config written by `to_dict`. A dict without `config_version` comes from this project
        before version 2: the settings it could not store take LEGACY_V1_BEHAVIOUR, the behaviour its model
        was trained with (not today's defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown KARL config keys: {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        d = dict(d)
        version = d.get("config_version", 1)
        if not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
            raise ValueError(f"KARL config_version {version!r} is not supported by this code "
                             f"(it reads versions 1 to {CONFIG_VERSION}); update kolmogorov_tokenizers")
        if version == 1:
            d = {**LEGACY_V1_BEHAVIOUR, **d}
        d["config_version"] = CONFIG_VERSION
        return cls(**d)


def behaviour_differences(saved: Optional[Dict[str, Any]], config: "KARLConfig") -> Dict[str, Tuple[Any, Any]]:
    """{setting: (value the saved config means, value `config` has)} for every behaviour setting (the keys of
    RELEASE_BEHAVIOUR) where a checkpoint's stored model config and a freshly built model disagree. A saved
    dict without `config_version` is read as its model was trained (LEGACY_V1_BEHAVIOUR). None: nothing."""
    if not saved:
        return {}
    then = KARLConfig.from_dict(saved)
    return {key: (getattr(then, key), getattr(config, key)) for key in RELEASE_BEHAVIOUR
            if getattr(then, key) != getattr(config, key)}


# --- precision: one resolver for training, stage 0 and the benchmarks ----------------------------------------
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 must beat fp32 by this factor in the probe to be chosen by "auto": a tie is not worth bf16's rounding.
BF16_MIN_SPEEDUP = 1.2
_cpu_bf16_probe: Optional[Dict[str, float]] = None


def measure_cpu_bf16_speedup(size: int = 256, seconds: float = 0.08) -> Dict[str, float]:
    """Time a (size x size) @ (size x size) matmul in fp32 and in bf16 on this CPU, once per process.

    Returns {"size", "fp32_gflops", "bf16_gflops", "speedup"} with speedup = bf16 / fp32 throughput (one
    thread). A CPU with native bf16 (AVX512_BF16, AMX) gives ~2-5; one without (AVX2 only) emulates bf16 at
    ~1/100 of fp32. At most 5 timed products per dtype, fewer once `seconds` have passed: well under a second
    even where bf16 is slow.
    The CPU flags in /proc/cpuinfo are not used: they do not say what PyTorch's kernels actually do (a
    container, ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY can hide them)."""
    global _cpu_bf16_probe
    if _cpu_bf16_probe is not None:
        return _cpu_bf16_probe
    import time

    rates = {}
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    # One thread, fastest of a few products: on a shared, oversubscribed CPU a multi-threaded product waits at
    # OpenMP barriers (a 256^3 fp32 product measured 40 ms instead of 0.5 ms at load 7 on 2 cores); the ratio
    # of single-thread kernels is what tells native bf16 from emulated.
    torch.set_num_threads(1)
    try:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(size, size, generator=gen).to(dtype)
            b = torch.randn(size, size, generator=gen).to(dtype)
            torch.matmul(a, b)  # first call: kernel selection and allocation, not timed
            best, start = float("inf"), time.perf_counter()
            for _ in range(5):
                t0 = time.perf_counter()
                torch.matmul(a, b)
                best = min(best, time.perf_counter() - t0)
                if time.perf_counter() - start >= seconds:
                    break
            rates[name] = 2 * size ** 3 / best / 1e9
    finally:
        torch.set_num_threads(threads)
    _cpu_bf16_probe = {"size": size, "fp32_gflops": rates["fp32"], "bf16_gflops": rates["bf16"],
                       "speedup": rates["bf16"] / rates["fp32"]}
    return _cpu_bf16_probe


def _probe_text(probe: Dict[str, float]) -> str:
    n = int(probe.get("size", 256))
    return (f"probe: {n}x{n} matmul bf16 {probe['bf16_gflops']:.1f} "
            f"GFLOP/s vs fp32 {probe['fp32_gflops']:.1f} GFLOP/s")


def choose_precision(precision: str, device: torch.device | str) -> Tuple[str, str, Optional[str]]:
    """Resolve a precision setting for `device`: returns (precision, why, warning or None).

    "auto": fp16 autocast on CUDA (the release's recipe), bf16 on a CPU only when the probe measures bf16
    matmuls at least BF16_MIN_SPEEDUP x faster than fp32 there, fp32 otherwise. An explicit choice is kept;
    explicit bf16 on a CPU where the probe measures it slower than fp32 comes with a warning that says by how
    much. Strings match engine.precision ("fp32" | "bf16" | "fp16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        warning = None
        if precision == "bf16" and device.type == "cpu":
            probe = measure_cpu_bf16_speedup()
            if probe["speedup"] < 1.0:
                warning = (f"precision bf16 on this CPU is {1 / probe['speedup']:.0f}x slower than fp32 "
                           f"({_probe_text(probe)}): it has no native bf16; use --precision auto or fp32")
        return precision, "set explicitly", warning
    if device.type == "cuda":
        return "fp16", "auto on CUDA: fp16 autocast, as the release trains", None
    if device.type == "cpu":
        probe = measure_cpu_bf16_speedup()
        if probe["speedup"] >= BF16_MIN_SPEEDUP:
            return "bf16", f"auto on CPU: bf16 is {probe['speedup']:.1f}x faster than fp32 here ({_probe_text(probe)})", None
        return "fp32", (f"auto on CPU: bf16 is not faster here ({probe['speedup']:.2g}x fp32's speed; "
                        f"{_probe_text(probe)})"), None
    return "fp32", f"auto on {device.type}: fp32", None
