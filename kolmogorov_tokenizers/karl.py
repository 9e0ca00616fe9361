"""KARL: single-pass adaptive image tokenizer (arXiv 2507.07995), one class for VQGAN and VAE bases.

Encoder (METHOD.md s.2): [epsilon-condition token] + [N 2D tokens] + [first T rows of the latent bank]
  -> pre-LN transformer -> on the T 1D outputs: 12-d factorised tokens (optionally quantised) and the
  halting probability omega. Decoder: [N mask tokens] + [T 1D tokens] with halted tokens removed from
  attention -> per-2D-position prediction of the base latent (adapter) -> frozen base decoder -> pixels.
Training (METHOD.md s.3): every iteration runs two phases. EIC, Estimate Image Complexity: budget T,
  epsilon ~ 0, no halting; measures eps0, the error T tokens leave on each image. LTC, Learn to Tokenize
  Complexity: the LTC budget N, condition = eps0, halting targets 0 for the first T tokens and 1 for the
  other N - T, so the model learns to stop where T tokens sufficed.
State-dict keys equal those of the released checkpoints (shared/checkpoint_formats).
"""
from __future__ import annotations

import dataclasses
import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from base_tokenizers.base import BaseEncoding, BaseTokenizer
from kolmogorov_tokenizers.conditioning import EpsilonConditioner, initial_condition_embeddings
from kolmogorov_tokenizers.config import TILED_DROP_ERROR, KARLConfig
from modules.halting import (build_halting_mlp, decoder_halting_mask, halted_from_prob, halting_loss,
                             pack_active_tokens, tile_masks_over_heads)
from modules.positional import initial_positional_map
from modules.quantizer import VectorQuantizer
from modules.transformer import build_blocks, run_blocks

# pixel_loss_fn(recon01, images01, num_tokens (B,), phase_name) -> (loss, logs): stage 2 (full finetuning)
PixelLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], Tuple[torch.Tensor, Dict[str, float]]]


# --- what encode and a training iteration return, and the checks on user input ----------------------------

EpsilonArg = Union[float, Sequence[float], torch.Tensor]


@dataclass
class PhaseOutput:
    """One phase (EIC or LTC) of a training iteration."""

    budget: int  # T of this phase
    epsilon: torch.Tensor  # (B,) epsilon condition (bin value) fed to the encoder
    num_tokens: torch.Tensor  # (B,) active tokens (EIC: T; LTC: T - #halted)
    mask: torch.Tensor  # (B, T) bool, True = active
    # (B, 3, H, W) raw pixels: stage 2 both phases (with grad); stage 1 EIC only (the no-grad eps0 decode)
    reconstruction: Optional[torch.Tensor] = None
    # (B,) EIC only: eps0, each image's measured mean L1 error, the condition LTC is given (snapped to a bin)
    eps0: Optional[torch.Tensor] = None


@dataclass
class TrainOutput:
    loss: torch.Tensor  # scalar, sum of losses
    losses: Dict[str, torch.Tensor]  # e.g. eic/rec, eic/quant, eic/halt, ltc/rec, ltc/quant, ltc/halt
    logs: Dict[str, float]
    phases: Dict[str, PhaseOutput]


@dataclass
class ActiveTokens:
    """One image's active 1D tokens."""

    tokens: torch.Tensor  # (n, D)
    positions: torch.Tensor  # (n,) slot of each token among the T (the decoder's 1D position)
    indices: Optional[torch.Tensor] = None  # (n,) code ids when the model is quantised

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class EncodeResult:
    """`embedding, reconstruction, info = model.encode(images)`.

    embedding:      list of ActiveTokens, one per image
    reconstruction: (B, 3, H, W) in [0, 1]
    info:           num_tokens (B,), mask (B, T) active, tokens (B, T, D), indices (B, T) or None,
                    halting_prob (B, T), epsilon (B,) the binned condition, budget (int)
    """

    embedding: List[ActiveTokens]
    reconstruction: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.embedding, self.reconstruction, self.info))

    @property
    def num_tokens(self) -> torch.Tensor:
        return self.info["num_tokens"]


# --- input checks (clear messages naming the allowed values) --------------------------------------------

def check_images(images: Any, input_size: int, factor: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"images is an empty batch (shape {tuple(images.shape)}); pass at least one image")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor with values in [0, 1], got dtype {images.dtype}")
    H, W = images.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"image size {H}x{W} is not a multiple of the base tokenizer's factor {factor}; "
                         f"this model takes {input_size}x{input_size}")
    if H != input_size or W != input_size:
        raise ValueError(f"image size {H}x{W} does not match the model's input size {input_size}x{input_size}; "
                         f"resize/crop first (e.g. Resize({input_size}) + CenterCrop({input_size}))")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"image values must be finite and in [0, 1], got range "
                         f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")


def check_budget(budget: Any, bank_size: int) -> int:
    if isinstance(budget, torch.Tensor) and budget.numel() == 1:
        budget = budget.item()
    if isinstance(budget, bool) or not isinstance(budget, int) and not (
            isinstance(budget, float) and budget.is_integer()):
        raise TypeError(f"input_token_budget must be an integer in [1, {bank_size}], got {budget!r}")
    budget = int(budget)
    if not 1 <= budget <= bank_size:
        raise ValueError(f"input_token_budget must be in [1, {bank_size}] (the model's token bank), got {budget}")
    return budget


def check_epsilon(epsilon: EpsilonArg, batch_size: int, max_bin: float, device: torch.device) -> torch.Tensor:
    """-> (B,) float tensor; scalar or per-image; each value in [0, largest bin]."""
    eps = torch.as_tensor(epsilon, dtype=torch.float32).to(device)
    if eps.dim() == 0:
        eps = eps.expand(batch_size)
    if eps.dim() != 1 or eps.shape[0] != batch_size:
        raise ValueError(f"desired_reconstruction_quality must be a number or one value per image "
                         f"({batch_size}), got shape {tuple(eps.shape)}")
    if not torch.isfinite(eps).all() or eps.min() < 0 or eps.max() > max_bin + 1e-9:
        raise ValueError(f"desired_reconstruction_quality must be in [0, {max_bin}] (mean L1 error in [0, 1] "
                         f"pixels; 0 disables adaptivity), got {eps.tolist()}")
    return eps.clone()


class LatentEncoder(nn.Module):
    """Holds the encoder blocks (keys `encoder.transformer.<i>.*`; its LayerNorms sit on the model)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.transformer = build_blocks(width, layers, heads, mlp_ratio)


class LatentDecoder(nn.Module):
    """ln_pre -> blocks -> ln_post on the N 2D outputs -> ffn = Linear(w, 2w), Tanh, Linear(2w, out)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, out_dim: int) -> None:
        super().__init__()
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = build_blocks(width, layers, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, out_dim))

    def forward(self, x: torch.Tensor, num_2d: int, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        # x: (B, N + T, w) -> (B, N, out_dim)
        x = run_blocks(self.transformer, self.ln_pre(x), attn_mask)
        return self.ffn(self.ln_post(x[:, :num_2d]))


# --- output adapters: what the decoder predicts on its N 2D positions, and how that feeds the base decoder ----
# (METHOD.md s.2, 4)
# VQGAN: logits over the base codebook; stage-1 loss = CE on the base code ids (label smoothing: a setting, 0 as
#        the release) + MSE(soft code, true code); the base decoder receives the softmax-weighted code (or the
#        argmax code, a setting).
# VAE:   the 16-d latent regressed directly; stage-1 loss = MSE on latents.

class OutputAdapter:
    out_dim: int

    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        self.config = config

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        """out (B, N, out_dim) -> base latent grid (B, C, g, g)."""
        raise NotImplementedError

    def latent_loss(self, out: torch.Tensor, target: BaseEncoding, base: BaseTokenizer
                    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise NotImplementedError


class VQGANAdapter(OutputAdapter):
    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        super().__init__(base, config)
        if not base.codebook_size:
            raise ValueError(f"base tokenizer {type(base).__name__} of kind 'vqgan' has no codebook_size")
        self.out_dim = base.codebook_size

    def soft_code(self, out: torch.Tensor, base: BaseTokenizer) -> torch.Tensor:
        # out: (B, N, K) logits -> (B, N, C) probability-weighted code vectors
        codes = base.codebook().float()  # (K, C)
        if not self.config.vqgan_soft_code_codebook_grad:
            codes = codes.detach()  # the release: the codebook's values, no gradient (stage 2 keeps it fixed)
        return out.float().softmax(dim=-1) @ codes

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        code = base.codebook()[out.argmax(dim=-1)] if hard else self.soft_code(out, base)  # (B, N, C)
        return rearrange(code, "b (h w) c -> b c h w", h=grid, w=grid)

    def latent_loss(self, out, target, base):
        if target.indices is None:
            raise ValueError("the VQGAN adapter needs the base encoding's code indices")
        ce = F.cross_entropy(out.float().flatten(0, 1), target.indices.flatten().long(),
                             label_smoothing=self.config.label_smoothing)
        true_code = rearrange(target.target, "b c h w -> b (h w) c").float()
        mse = F.mse_loss(self.soft_code(out, base), true_code)
        loss = ce + self.config.soft_code_mse_weight * mse
        return loss, {"ce": float(ce.detach()), "code_mse": float(mse.detach())}


class VAEAdapter(OutputAdapter):
    def __init__(self, base: BaseTokenizer, config: KARLConfig) -> None:
        super().__init__(base, config)
        self.out_dim = base.embed_dim

    def to_latent(self, out: torch.Tensor, base: BaseTokenizer, grid: int, hard: bool = False) -> torch.Tensor:
        return rearrange(out, "b (h w) c -> b c h w", h=grid, w=grid)

    def latent_loss(self, out, target, base):
        mse = F.mse_loss(out.float(), rearrange(target.target, "b c h w -> b (h w) c").float())
        return mse, {"latent_mse": float(mse.detach())}


ADAPTERS = {"vqgan": VQGANAdapter, "vae": VAEAdapter}


def build_adapter(base: BaseTokenizer, config: KARLConfig) -> OutputAdapter:
    if base.kind not in ADAPTERS:
        raise ValueError(f"base tokenizer kind {base.kind!r} is not supported; allowed: {', '.join(ADAPTERS)}")
    return ADAPTERS[base.kind](base, config)


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # (B, T, D) 1D tokens (quantised when the model is)
    quant_loss: torch.Tensor  # scalar (0 when continuous)
    indices: Optional[torch.Tensor]  # (B, T) code ids or None
    halting_logit: torch.Tensor  # (B, T) fp32; omega = sigmoid(halting_logit)


class KARLTokenizer(nn.Module):
    def __init__(self, config: KARLConfig, base_tokenizer: BaseTokenizer, init_weights: bool = True) -> None:
        """init_weights=False skips the (slow, ~2 s for karl_small) custom init when weights will be loaded."""
        super().__init__()
        cfg = self.config = config
        base = self.base_tokenizer = base_tokenizer
        if base.kind == "vae":
            # METHOD.md s.2: how KARL talks to a VAE base is KARL's setting, recorded in its config
            for attr, value in (("decode_scaled_latent", cfg.vae_decode_scaled_latent),
                                ("pixel_range", cfg.vae_pixel_range)):
                if hasattr(base, attr):
                    setattr(base, attr, value)
                    if dataclasses.is_dataclass(getattr(base, "config", None)) and hasattr(base.config, attr):
                        setattr(base.config, attr, value)
        if dataclasses.is_dataclass(getattr(base, "config", None)):
            cfg.base_tokenizer_config = dataclasses.asdict(base.config)
        self.grid = base.grid_size(cfg.input_size)  # 16 for 256 px / f16, 8 for the 64-px demo
        self.num_2d_tokens = N = self.grid ** 2
        we, wd, C, f, P = cfg.encoder_width, cfg.decoder_width, base.embed_dim, base.downsample_factor, \
            cfg.pos_embed_size
        if we <= C:
            raise ValueError(f"encoder_width {we} must exceed the base latent channels {C}")
        D = cfg.latent_token_dim

        # --- encoder -----------------------------------------------------------------------------------
        self.patch_embed = nn.Conv2d(3, we - C, kernel_size=f, stride=f)  # RGB patch -> (w - C) channels
        self.encoder_positional_embedding = nn.Parameter(initial_positional_map(cfg.positional_embedding_init, we, P))
        self.latent_tokens = nn.Parameter(we ** -0.5 * torch.randn(cfg.bank_size, we))
        self.rec_loss_embeddings = nn.Parameter(initial_condition_embeddings(cfg, we))
        self.encoder_ln_pre = nn.LayerNorm(we)
        self.encoder = LatentEncoder(we, cfg.encoder_layers, cfg.encoder_heads, cfg.mlp_ratio)
        self.encoder_ln_post = nn.LayerNorm(we)
        self.pre_quantizer_mlp = nn.Linear(we, D) if cfg.factorize_latent else None
        self.encoder_ln_post_halt = nn.LayerNorm(we)
        # config.halting_image_context: the head also reads the image's 2D-token statistics (mean and std over
        # the grid, 2w numbers), so its input grows from w to 3w.
        self.halting_context_ln = nn.LayerNorm(we) if cfg.halting_image_context else None
        self.halting_mlp = build_halting_mlp(we * (3 if cfg.halting_image_context else 1), cfg.halting_hidden)
        self.quantize = (VectorQuantizer(cfg.codebook_size, D, cfg.commitment, cfg.l2_normalize_codes)
                         if cfg.quantize_latent else None)

        # --- decoder -----------------------------------------------------------------------------------
        self.decoder_embed = nn.Linear(D, wd)
        self.decoder_latent_tokens_timestep_embed = nn.Parameter(wd ** -0.5 * torch.randn(cfg.bank_size, wd))
        self.decoder_mask_token = nn.Parameter(wd ** -0.5 * torch.randn(1, 1, wd))
        self.decoder_positional_embedding = nn.Parameter(initial_positional_map(cfg.positional_embedding_init, wd, P))
        self.adapter = build_adapter(base, cfg)
        self.decoder = LatentDecoder(wd, cfg.decoder_layers, cfg.decoder_heads, cfg.mlp_ratio, self.adapter.out_dim)

        self.conditioning = EpsilonConditioner(cfg, N)
        largest = max(self.conditioning.max_eic_budget, self.conditioning.ltc_budget_for(1))
        if largest > cfg.bank_size:
            fix = ("karl_demo is sized for 64 px images: add --input_size 64 to the command"
                   if cfg.model_name == "karl_demo" else f"use a smaller --input_size or bank_size >= {largest}")
            raise ValueError(f"bank_size {cfg.bank_size} is smaller than the largest training budget {largest} "
                             f"({cfg.input_size} px images give {N} 2D tokens); {fix}")
        for m in (self.encoder, self.decoder, self.halting_mlp, self.decoder_embed, self.pre_quantizer_mlp):
            if m is not None and init_weights:
                m.apply(_init_weights)
        if cfg.base_channels_last:  # parameters keep this layout through .to(device) and load_state_dict
            base.to(memory_format=torch.channels_last)
        if cfg.compile_blocks:
            # Module.compile keeps parameter names (no `_orig_mod.`), so checkpoints are unaffected;
            # dynamic: budgets (sequence lengths) change every iteration.
            for block in [*self.encoder.transformer, *self.decoder.transformer]:
                block.compile(dynamic=True)

    # --- small helpers -------------------------------------------------------------------------------------
    @property
    def ltc_budget(self) -> int:
        """The LTC budget (config.ltc_budget resolved: N, 256 for karl_small, 64 for the demo, unless the config
        names a smaller one): the most tokens LTC training taught the model to use, and `encode`'s default."""
        return self.conditioning.ltc_budget

    def set_sampling_seed(self, seed: int) -> None:
        """Seed the per-batch EIC budget generator (identical on every DDP rank)."""
        self.conditioning.set_sampling_seed(seed)

    def num_parameters(self, include_base: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if include_base or not n.startswith("base_tokenizer."))

    def _grid_positions(self, pos_map: torch.Tensor) -> torch.Tensor:
        """(w, P, P) learned map -> (1, N, w), resized to the token grid as config.positional_resize says."""
        g = self.grid
        if pos_map.shape[-1] != g:
            if self.config.positional_resize == "nearest":  # the release: 64 -> 16 reads rows/cols 0, 4, 8, ...
                pos_map = F.interpolate(pos_map.unsqueeze(0), size=(g, g), mode="nearest")[0]
            else:
                pos_map = F.interpolate(pos_map.unsqueeze(0), size=(g, g), mode="bilinear", align_corners=False)[0]
        return rearrange(pos_map, "w h x -> 1 (h x) w")

    def base_encode(self, images: torch.Tensor) -> BaseEncoding:
        """Base 2D latent; without gradients while the base tokenizer is frozen (stage 1)."""
        frozen = getattr(self.base_tokenizer, "frozen", True)
        kwargs = {}
        if (self.base_tokenizer.kind == "vae" and self.config.vae_sample_posterior
                and "sample" in inspect.signature(self.base_tokenizer.encode).parameters):
            kwargs["sample"] = self.training  # the release trains on posterior samples; eval reads the mean
        with torch.no_grad() if frozen else nullcontext():
            return self.base_tokenizer.encode(self._base_layout(images), **kwargs)

    def _base_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Images/latents for the base tokenizer's convolutions, in its memory layout (same values)."""
        return x.contiguous(memory_format=torch.channels_last) if self.config.base_channels_last else x

    # --- the two networks ----------------------------------------------------------------------------------
    def encode_tokens(self, images: torch.Tensor, latent: torch.Tensor, budget: int,
                      condition: torch.Tensor) -> EncoderOutput:
        """images (B,3,H,W), latent (B,C,g,g), condition (B,) bin indices -> T = budget 1D tokens."""
        B, N = images.shape[0], self.num_2d_tokens
        content = torch.cat([self.patch_embed(images), latent.to(images.dtype)], dim=1)  # (B, w, g, g)
        content = rearrange(content, "b c h w -> b (h w) c")
        x2d = content + self._grid_positions(self.encoder_positional_embedding)
        cond = self.rec_loss_embeddings[condition].unsqueeze(1)  # (B, 1, w)
        bank = self.latent_tokens[:budget].unsqueeze(0).expand(B, -1, -1)  # (B, T, w)
        x = self.encoder_ln_pre(torch.cat([cond, x2d.to(cond.dtype), bank], dim=1))  # (B, 1 + N + T, w)
        out1d = run_blocks(self.encoder.transformer, x)[:, 1 + N:]  # (B, T, w)

        z = self.encoder_ln_post(out1d)
        if self.pre_quantizer_mlp is not None:
            z = self.pre_quantizer_mlp(z)  # (B, T, 12)
        quant_loss, indices = z.new_zeros(()).float(), None
        if self.quantize is not None:
            z, quant_loss, indices = self.quantize(z)
        halt_in = self.encoder_ln_post_halt(out1d)
        if self.halting_context_ln is not None:
            halt_in = torch.cat([halt_in, self._image_statistics(content).to(halt_in.dtype)
                                 .unsqueeze(1).expand(-1, budget, -1)], dim=-1)  # (B, T, 3w)
        halting_logit = self.halting_mlp(halt_in).squeeze(-1).float()  # (B, T)
        return EncoderOutput(z, quant_loss, indices, halting_logit)

    def _image_statistics(self, content: torch.Tensor) -> torch.Tensor:
        """(B, N, w) 2D tokens without positions -> (B, 2w): mean and std over the grid of their LayerNorm.

        The std says how much the image varies from place to place (0 for a flat image), which the halting head
        needs and which the 1D tokens' outputs, dominated by their position, carry only weakly early in
        training. sqrt(var + 1e-6): the std's gradient is infinite at exactly 0.
        """
        h = self.halting_context_ln(content).float()
        mean = h.mean(dim=1)
        std = (h - mean.unsqueeze(1)).pow(2).mean(dim=1).add(1e-6).sqrt()
        return torch.cat([mean, std], dim=-1)

    def decode_tokens(self, tokens: torch.Tensor, halted: Optional[torch.Tensor] = None,
                      drop: Optional[bool] = None) -> torch.Tensor:
        """tokens (B, T, D), halted (B, T) bool or None -> adapter output (B, N, out_dim).

        Halted tokens are masked out of attention, or dropped from the sequence when `drop` (default:
        config.drop_halted_tokens, the training setting): same 2D outputs. No mask at all when nothing is
        halted (nor padded), so SDPA takes its unmasked kernel.
        """
        drop = self.config.drop_halted_tokens if drop is None else drop
        tiled = self.training and self.config.tile_halting_mask_in_training
        if tiled and drop:
            raise ValueError(TILED_DROP_ERROR)
        B, T, _ = tokens.shape
        N = self.num_2d_tokens
        x1d = self.decoder_embed(tokens) + self.decoder_latent_tokens_timestep_embed[:T]  # (B, T, w)
        x2d = self.decoder_mask_token + self._grid_positions(self.decoder_positional_embedding)  # (1, N, w)
        blocked = halted
        if halted is not None and drop and bool(halted.any()):  # nothing halted: nothing to drop
            x1d, blocked = pack_active_tokens(x1d, halted)  # (B, K, w), padding (B, K)
        x = torch.cat([x2d.expand(B, -1, -1).to(x1d.dtype), x1d], dim=1)  # (B, N + T, w)
        mask = decoder_halting_mask(N, blocked)  # (B, N + T, N + T) or None
        if mask is not None and tiled:
            mask = tile_masks_over_heads(mask, self.config.decoder_heads)  # (B, heads, N + T, N + T)
        return self.decoder(x, N, mask)

    def predict_pixels(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, N, out_dim) -> base latent -> raw pixels (B, 3, H, W), not clamped."""
        hard = self.config.vqgan_hard_decode and not self.training  # training always uses the soft code
        latent = self.adapter.to_latent(out, self.base_tokenizer, self.grid, hard=hard)
        return self.base_tokenizer.decode(self._base_layout(latent))

    # --- training: one iteration = EIC then LTC (METHOD.md s.3) ------------------------------------------
    def forward(self, images: torch.Tensor, pixel_loss_fn: Optional[PixelLossFn] = None,
                eic_budget: Optional[int] = None,
                eic_condition: Union[int, torch.Tensor, None] = None) -> TrainOutput:
        """One training iteration (EIC then LTC) on images (B, 3, H, W) in [0, 1].

        The iteration's two random draws are sampled unless given: `eic_budget` (T, an int) and
        `eic_condition` (the EIC epsilon bin: an index into config.epsilon_bins, one int for the batch or
        (B,) ints). Fixing them makes an iteration reproducible (tests/test_release_oracle.py compares it
        with the release) and lets research code choose its own schedule. Given draws do not advance the
        budget generator.
        """
        cfg, cond = self.config, self.conditioning
        B, device = images.shape[0], images.device
        if eic_budget is not None:
            eic_budget = check_budget(eic_budget, cfg.bank_size)
        if eic_condition is not None:
            eic_condition = self._check_condition(eic_condition, B, device)
        enc = self.base_encode(images)  # once per iteration, reused by both phases
        losses: Dict[str, torch.Tensor] = {}
        logs: Dict[str, float] = {}

        # Phase 1, EIC: budget T, epsilon ~ 0 (curriculum over the bins <= 0.04), no halting mask.
        # (Drawn after the base encode, whose VAE posterior sample also uses the global RNG: the order of the
        # draws is part of a seeded run's reproducibility.)
        T = cond.sample_eic_budget() if eic_budget is None else eic_budget
        if eic_condition is None:
            eic_condition = cond.sample_eic_condition(B, device)
        eic = self.encode_tokens(images, enc.latent, T, eic_condition)
        eic_out = self.decode_tokens(eic.tokens, None)
        keep_all = torch.zeros(B, T, device=device)
        eic_recon = self._phase_losses("eic", cfg.eic_loss_weight, eic_out, eic, enc, images,
                                       keep_all if cfg.eic_halting_loss else None,
                                       torch.full((B,), T, device=device), pixel_loss_fn, losses, logs)
        with torch.no_grad():  # eps0 per image: mean |x_hat - x| in [0, 1] pixels (x_hat raw or clamped)
            x_hat = eic_recon.detach() if eic_recon is not None else self.predict_pixels(eic_out.detach())
            seen = x_hat.float().clamp(0, 1) if cfg.eps0_clamp else x_hat.float()
            eps0 = (seen - images.float()).abs().mean(dim=(1, 2, 3))  # (B,)

        # Phase 2, LTC: budget N (or max(T, N), ltc_budget_at_least_eic), condition = eps0 snapped to a bin,
        # halting targets: keep the first T tokens, halt the last dT = max(0, T_ltc - T).
        T_ltc = cond.ltc_budget_for(T)
        dT = max(0, T_ltc - T)
        ltc_condition = cond.augment(cond.snap(eps0), T, dT)
        ltc = self.encode_tokens(images, enc.latent, T_ltc, ltc_condition)
        halted = halted_from_prob(torch.sigmoid(ltc.halting_logit.detach()), cfg.halting_threshold)  # hard
        ltc_out = self.decode_tokens(ltc.tokens, halted)
        num_tokens = T_ltc - halted.sum(dim=1)
        targets = cond.halting_targets(T, T_ltc, B, device)
        ltc_recon = self._phase_losses("ltc", cfg.ltc_loss_weight, ltc_out, ltc, enc, images, targets,
                                       num_tokens, pixel_loss_fn, losses, logs)

        if self.training:
            cond.update_curriculum(eps0)
        bins = cond.bins
        logs.update({
            "eic/budget": float(T), "ltc/budget": float(T_ltc), "ltc/dT": float(dT),
            "eic/epsilon_mean": float(bins[eic_condition].mean()), "eic/eps0_mean": float(eps0.mean()),
            "ltc/epsilon_mean": float(bins[ltc_condition].mean()),
            "ltc/num_tokens_mean": float(num_tokens.float().mean()),
            "ltc/halt_accuracy": float((halted.float() == targets).float().mean()),
        })
        phases = {
            "eic": PhaseOutput(T, bins[eic_condition], torch.full((B,), T, device=device),
                               torch.ones(B, T, dtype=torch.bool, device=device),
                               eic_recon if eic_recon is not None else x_hat,  # stage 1: the eps0 decode
                               eps0),
            "ltc": PhaseOutput(T_ltc, bins[ltc_condition], num_tokens, ~halted, ltc_recon),
        }
        return TrainOutput(sum(losses.values()), losses, logs, phases)

    def _phase_losses(self, name: str, weight: float, out: torch.Tensor, e: EncoderOutput, enc: BaseEncoding,
                      images: torch.Tensor, halt_targets: Optional[torch.Tensor], num_tokens: torch.Tensor,
                      pixel_loss_fn: Optional[PixelLossFn], losses: Dict[str, torch.Tensor],
                      logs: Dict[str, float]) -> Optional[torch.Tensor]:
        """Adds `<name>/rec`, `<name>/quant`, `<name>/halt` (already weighted) to `losses`; returns the
        differentiable pixel reconstruction in stage 2, None in stage 1."""
        cfg, recon = self.config, None
        if pixel_loss_fn is None:  # stage 1: loss in 2D-token space
            rec, rec_logs = self.adapter.latent_loss(out, enc, self.base_tokenizer)
        else:  # stage 2: pixel losses supplied by the engine
            recon = self.predict_pixels(out)
            rec, rec_logs = pixel_loss_fn(recon, images, num_tokens, name)
        losses[f"{name}/rec"] = weight * cfg.rec_loss_weight * rec
        if self.quantize is not None:
            losses[f"{name}/quant"] = weight * cfg.quant_loss_weight * e.quant_loss
        if halt_targets is not None:
            halt = halting_loss(e.halting_logit, halt_targets, cfg.halting_loss_reduction)
            losses[f"{name}/halt"] = weight * cfg.halting_loss_weight * halt
        logs.update({f"{name}/{k}": float(v) for k, v in rec_logs.items()})
        return recon

    def _check_condition(self, condition: Union[int, torch.Tensor], batch_size: int,
                         device: torch.device) -> torch.Tensor:
        """An EIC condition given by the caller -> (B,) long bin indices on `device`."""
        n = len(self.config.epsilon_bins)
        c = torch.as_tensor(condition)
        if c.is_floating_point() or c.dtype == torch.bool:
            raise TypeError(f"eic_condition must hold epsilon-bin indices (integers in [0, {n - 1}]), "
                            f"got dtype {c.dtype}")
        c = c.long().to(device)
        if c.dim() == 0:
            c = c.expand(batch_size)
        if c.shape != (batch_size,):
            raise ValueError(f"eic_condition must be one bin index or one per image ({batch_size}), "
                             f"got shape {tuple(c.shape)}")
        if bool((c < 0).any()) or bool((c >= n).any()):
            raise ValueError(f"eic_condition bin indices must be in [0, {n - 1}], got {c.tolist()}")
        return c.clone()

    # --- inference API (METHOD.md s.5) -----------------------------------------------------------------
    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval mode inside the block, the previous mode after it (a VAE base samples its posterior in
        training mode). A model already wholly in eval mode, the usual case, is left as it is."""
        if not any(m.training for m in self.modules()):
            yield
            return
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, input_token_budget: Union[int, Sequence[int], None] = None,
               desired_reconstruction_quality=0.05, adaptive: bool = True) -> Union[EncodeResult, List[EncodeResult]]:
        """ONE LTC-style pass: returns `embedding, reconstruction, info` (see EncodeResult).

        input_token_budget: T (default: the LTC budget N), or a list of budgets -> one result per budget.
        desired_reconstruction_quality: target mean L1 epsilon, a number or one per image, in [0, 0.38];
        snapped to the smallest bin >= epsilon (0 = smallest bin = adaptivity off, as in the release).
        adaptive: False disables halting: all T tokens stay active (fixed-allocation evaluation, the search
        baseline); `info["halting_prob"]` is still reported.
        """
        check_images(images, self.config.input_size, self.base_tokenizer.downsample_factor)
        many = isinstance(input_token_budget, (list, tuple))
        budgets = list(input_token_budget) if many else [
            self.ltc_budget if input_token_budget is None else input_token_budget]
        if many and not budgets:
            raise ValueError("input_token_budget list is empty")
        budgets = [check_budget(b, self.config.bank_size) for b in budgets]
        eps = check_epsilon(desired_reconstruction_quality, images.shape[0], self.config.epsilon_bins[-1],
                            images.device)
        if images.device != self.patch_embed.weight.device:
            raise ValueError(f"images are on {images.device} but the model is on {self.patch_embed.weight.device}; "
                             f"move one of them (images.to(device) or model.to(device))")
        images = images.to(self.patch_embed.weight.dtype)
        with self._eval_mode():
            enc = self.base_tokenizer.encode(self._base_layout(images))
            condition = self.conditioning.snap(eps)
            results = [self._encode_once(images, enc, T, condition, adaptive) for T in budgets]
        return results if many else results[0]

    def _encode_once(self, images: torch.Tensor, enc: BaseEncoding, budget: int,
                     condition: torch.Tensor, adaptive: bool = True) -> EncodeResult:
        e = self.encode_tokens(images, enc.latent, budget, condition)
        omega = torch.sigmoid(e.halting_logit)  # (B, T)
        if adaptive:
            halted = halted_from_prob(omega, self.config.halting_threshold)
        else:
            halted = torch.zeros_like(omega, dtype=torch.bool)
        drop = self.config.inference_drop_halted_tokens
        recon = self.predict_pixels(self.decode_tokens(e.tokens, halted if adaptive else None, drop)).clamp(0, 1)
        active = ~halted
        embedding = []
        for b in range(images.shape[0]):
            pos = active[b].nonzero().squeeze(1)
            embedding.append(ActiveTokens(e.tokens[b, pos], pos, None if e.indices is None else e.indices[b, pos]))
        info = {"num_tokens": active.sum(dim=1), "mask": active, "tokens": e.tokens, "indices": e.indices,
                "halting_prob": omega, "epsilon": self.conditioning.bins[condition], "budget": budget}
        return EncodeResult(embedding, recon, info)

    @torch.no_grad()
    def decode(self, tokens_or_indices: Union[torch.Tensor, List[ActiveTokens]],
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rebuild images (B, 3, H, W) in [0, 1] from tokens alone.

        tokens_or_indices: tokens (B, T, D) float, code ids (B, T) long (quantised models), or the
        `embedding` list returned by `encode`. mask: (B, T) bool, True = active (default: all active).
        """
        if isinstance(tokens_or_indices, (list, tuple)):
            tokens_or_indices, mask = self._unpack_active(tokens_or_indices)
        x = tokens_or_indices
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"decode expects a tensor or the embedding list from encode, got {type(x).__name__}")
        if not x.is_floating_point():
            if self.quantize is None:
                raise ValueError("integer code ids given, but this model's 1D tokens are continuous "
                                 "(quantize_latent=False): pass the float tokens (B, T, D)")
            if x.dim() != 2:
                raise ValueError(f"code ids must have shape (B, T), got {tuple(x.shape)}")
            x = self.quantize.embed(x)
        D = self.config.latent_token_dim
        if x.dim() != 3 or x.shape[-1] != D:
            raise ValueError(f"tokens must have shape (B, T, {D}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        if not 1 <= T <= self.config.bank_size:
            raise ValueError(f"number of tokens T must be in [1, {self.config.bank_size}], got {T}")
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if mask.shape != (B, T) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape ({B}, {T}) (True = active), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        with self._eval_mode():
            out = self.decode_tokens(x.to(self.decoder_embed.weight.dtype), ~mask,
                                     self.config.inference_drop_halted_tokens)
            return self.predict_pixels(out).clamp(0, 1)

    def _unpack_active(self, embedding: Sequence[ActiveTokens]) -> Tuple[torch.Tensor, torch.Tensor]:
        """List of ActiveTokens -> tokens (B, T, D) zero-filled at inactive slots, mask (B, T)."""
        if not embedding or not all(isinstance(a, ActiveTokens) for a in embedding):
            raise TypeError("decode expects a non-empty list of ActiveTokens (the embedding from encode)")
        T = max([int(a.positions.max()) + 1 for a in embedding if len(a)] + [1])
        ref = embedding[0].tokens
        tokens = ref.new_zeros(len(embedding), T, self.config.latent_token_dim)
        mask = torch.zeros(len(embedding), T, dtype=torch.bool, device=ref.device)
        for b, a in enumerate(embedding):
            tokens[b, a.positions] = a.tokens
            mask[b, a.positions] = True
        return tokens, mask


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
