"""The "command" side of KARL's upside-down RL (METHOD.md section 3): epsilon bins, budget sampling,
the epsilon curriculum, condition augmentation and the halting targets.

Each training iteration has two phases:
  - EIC, Estimate Image Complexity: encode with a random budget of T tokens under a near-zero epsilon
    condition and measure the error eps0 that T tokens achieve on each image;
  - LTC, Learn to Tokenize Complexity: encode with the full LTC budget (`ltc_budget`, N tokens) conditioned
    on eps0, and train the halting head to keep the first T tokens and halt the other dT.

State that must survive a resume lives in the state dict: the curriculum weights as a buffer, the
per-batch budget generator through get_extra_state / set_extra_state. Randomness:
  - the EIC budget T (one per batch) comes from a dedicated generator seeded identically on every rank,
    so all DDP ranks train with the same T at each step;
  - per-image draws (EIC epsilon condition, augmentation) use torch's global RNG, which the engine saves,
    restores and seeds per rank.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from torch import nn

from kolmogorov_tokenizers.config import KARLConfig
from modules.positional import sincos_features


def initial_condition_embeddings(cfg: KARLConfig, width: int) -> torch.Tensor:
    """(n_bins, width) starting values of the per-bin epsilon-condition embeddings.

    "repeat" (METHOD.md s.3 [code]): each bin's value repeated. "sinusoidal": sin/cos of log(eps) at
    geometric frequencies (1/2 to 4 cycles over the bins' range), so neighbouring bins start similar
    and the encoder's first LayerNorm keeps them apart (it maps every constant vector to the same output)."""
    bins = torch.tensor(cfg.epsilon_bins, dtype=torch.float64)
    if cfg.condition_embedding_init == "repeat":
        return bins.unsqueeze(1).repeat(1, width).float()
    log_eps = bins.log()
    u = (log_eps - log_eps.min()) / (log_eps.max() - log_eps.min()).clamp(min=1e-12)  # 0 .. 1 over the bins
    half = width // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(8.0), half, dtype=torch.float64))  # 1/2 .. 4 cycles
    pad = torch.zeros(len(bins), width - 2 * half, dtype=torch.float64)  # odd widths
    return torch.cat([sincos_features(math.pi * u, freqs), pad], dim=1).float()


class EpsilonConditioner(nn.Module):
    def __init__(self, config: KARLConfig, num_2d_tokens: int) -> None:
        super().__init__()
        self.config = config
        self.num_2d_tokens = num_2d_tokens
        bins = torch.tensor(config.epsilon_bins, dtype=torch.float32)
        self.register_buffer("bins", bins, persistent=False)  # (n_bins,), from the config
        self.num_eic_bins = sum(b <= config.eic_epsilon_max + 1e-9 for b in config.epsilon_bins)
        # Sampling weights of the EIC condition bins; decayed by the curriculum, renormalised to max 1.
        self.register_buffer("curriculum_weights", torch.ones(self.num_eic_bins))
        self.budget_step = max(1, num_2d_tokens // config.budget_step_divisor)  # 16 for 16x16, 4 for 8x8
        if config.eic_budget_choices is not None:
            self.eic_budget_choices: List[int] = list(config.eic_budget_choices)
        else:
            self.eic_budget_choices = [self.budget_step * k for k in range(1, config.eic_max_budget_steps + 1)]
        if not self.eic_budget_choices or min(self.eic_budget_choices) < 1:
            raise ValueError(f"EIC budgets must be >= 1, got {self.eic_budget_choices}")
        # config.ltc_budget resolved: N (256 on a 16 x 16 grid [code]) unless the config names a smaller one
        self.ltc_budget: int = config.ltc_budget if config.ltc_budget is not None else num_2d_tokens
        self.generator = torch.Generator()
        self.generator.manual_seed(config.sampling_seed)

    # --- resume / DDP ---------------------------------------------------------------------------------
    def set_sampling_seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def get_extra_state(self) -> Dict[str, Any]:
        return {"budget_generator_state": self.generator.get_state()}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if state and "budget_generator_state" in state:
            self.generator.set_state(state["budget_generator_state"].to(torch.uint8).cpu())

    # --- budgets --------------------------------------------------------------------------------------
    @property
    def max_eic_budget(self) -> int:
        return max(self.eic_budget_choices)

    def sample_eic_budget(self) -> int:
        i = int(torch.randint(len(self.eic_budget_choices), (1,), generator=self.generator))
        return self.eic_budget_choices[i]

    def ltc_budget_for(self, eic_budget: int) -> int:
        """The LTC phase's budget in an iteration whose EIC phase had `eic_budget` tokens: always
        `ltc_budget` (the release: 256 on 16 x 16, even after an EIC budget of 368), or
        max(eic_budget, ltc_budget) with config.ltc_budget_at_least_eic."""
        if self.config.ltc_budget_at_least_eic:
            return max(eic_budget, self.ltc_budget)
        return self.ltc_budget

    @property
    def augmentation_small_budget(self) -> int:
        """The EIC budget whose bin condition augmentation moves toward larger errors ("T = 32" in the code)."""
        return self.config.augmentation_small_budget_steps * self.budget_step

    # --- epsilon conditions -------------------------------------------------------------------------------
    def sample_eic_condition(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B,) bin indices among the bins <= eic_epsilon_max, drawn with the curriculum weights."""
        w = self.curriculum_weights.float().to(device)
        return torch.multinomial(w, batch_size, replacement=True)

    def snap(self, epsilon: torch.Tensor) -> torch.Tensor:
        """epsilon (B,) -> index of the smallest bin >= epsilon (the largest bin when above all)."""
        idx = torch.searchsorted(self.bins.to(epsilon.device), epsilon.float().contiguous(), right=False)
        return idx.clamp_(max=len(self.config.epsilon_bins) - 1)

    @torch.no_grad()
    def update_curriculum(self, measured_l1: torch.Tensor) -> None:
        """After each iteration: weight of EIC bins >= the batch's smallest measured L1 *= decay (0.99)."""
        smallest = measured_l1.detach().float().min().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(smallest, op=dist.ReduceOp.MIN)  # every rank applies the same update
        eic_bins = self.bins[: self.num_eic_bins].to(smallest.device)
        factor = torch.where(eic_bins >= smallest, self.config.curriculum_decay, 1.0)
        w = self.curriculum_weights * factor.to(self.curriculum_weights.device)
        # Only ratios matter to the sampler; renormalising keeps long runs from underflowing to all-zero.
        self.curriculum_weights.copy_(w / w.max())

    def augment(self, bin_idx: torch.Tensor, eic_budget: int, delta: int) -> torch.Tensor:
        """Condition augmentation (METHOD.md s.3), used only when `condition_augmentation` is on.

        dT = 0: with prob. p the bin becomes a random one in [1, bin] (a harder, smaller-error command);
        T = 2 steps (32 for 16 x 16): with prob. p the bin moves randomly toward the largest one.
        """
        cfg = self.config
        if not cfg.condition_augmentation:
            return bin_idx
        B, n = bin_idx.shape[0], len(cfg.epsilon_bins)
        hit = torch.rand(B, device=bin_idx.device) < cfg.augmentation_prob
        u = torch.rand(B, device=bin_idx.device)
        if delta == 0:
            low = bin_idx.clamp(max=1)
            new = low + (u * (bin_idx - low + 1).float()).long().clamp(max=(bin_idx - low))
        elif eic_budget == self.augmentation_small_budget:
            new = bin_idx + (u * (n - bin_idx).float()).long().clamp(max=(n - 1 - bin_idx))
        else:
            return bin_idx
        return torch.where(hit, new, bin_idx)

    # --- halting targets ----------------------------------------------------------------------------------
    @staticmethod
    def halting_targets(eic_budget: int, ltc_phase_budget: int, batch_size: int,
                        device: torch.device) -> torch.Tensor:
        """(B, T_ltc) float, T_ltc = ltc_phase_budget (ltc_budget_for(T)): the first T = eic_budget tokens 0
        (keep), the last dT = T_ltc - T tokens 1 (halt)."""
        targets = torch.zeros(batch_size, ltc_phase_budget, device=device)
        targets[:, eic_budget:] = 1.0
        return targets
