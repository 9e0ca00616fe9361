"""What stages 1 and 2 share: building KARL on its base tokenizer, and logging KARL's phase outputs."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from engine.stages import Stage, StepOutput
from kolmogorov_tokenizers.metrics import l1_per_image

if TYPE_CHECKING:
    from engine.config import TrainConfig
    from engine.trainer import Trainer


def create_karl(cfg: "TrainConfig") -> nn.Module:
    """The KARL model named in cfg.model on its base tokenizer (loud warning when the base is untrained)."""
    from base_tokenizers import create_base_tokenizer
    from kolmogorov_tokenizers.registry import create_model

    m = cfg.model
    base_kwargs = dict(m.base_overrides)
    ckpt = m.base_tokenizer_ckpt
    if ckpt is None:
        from base_tokenizers.registry import default_checkpoint_path

        default = default_checkpoint_path(m.base_tokenizer)
        ckpt = str(default) if default.is_file() else None
    if ckpt is None:
        warnings.warn(
            f"\n{'!' * 78}\n!! base tokenizer {m.base_tokenizer!r} has NO trained weights (no --base_tokenizer_ckpt and no "
            f"default file):\n!! it runs with RANDOM weights. Fine for a smoke test, meaningless for real training.\n{'!' * 78}",
            stacklevel=2,
        )
    base = create_base_tokenizer(m.base_tokenizer, pretrained_ckpt_path=ckpt, **base_kwargs)
    overrides = dict(m.overrides)
    overrides.setdefault("input_size", cfg.data.input_size)
    return create_model(m.model, base_tokenizer=base, quantize_latent=m.quantize_latent,
                        factorize_latent=m.factorize_latent, **overrides)


def base_tokenizer_of(model: nn.Module):
    return getattr(model, "base_tokenizer", None)


class KARLStage(Stage):
    """A stage that trains KARL: builds it, and logs its phases (StepOutput.phases: name -> the phase's
    num_tokens (B,), requested epsilon (B,), reconstruction (B, 3, H, W), budget)."""

    def build_model(self, cfg: "TrainConfig") -> nn.Module:
        return create_karl(cfg)

    def finetune_key_tolerance(self) -> Dict[str, Any]:
        # a released checkpoint may carry its stage-2 losses and lack our training-only state: the same
        # tolerance as load_tokenizer
        from kolmogorov_tokenizers.checkpoint import IGNORED_PREFIXES, TRAINING_STATE_PREFIXES

        return dict(ignore_unexpected=IGNORED_PREFIXES, allow_missing=TRAINING_STATE_PREFIXES)

    def behaviour_changes(self, model: nn.Module, ckpt: Dict[str, Any]) -> Optional[Tuple[str, str, str]]:
        """The checkpoint's recorded behaviour settings (kolmogorov_tokenizers.config.RELEASE_BEHAVIOUR keys:
        positional resize, pixel range, losses) against the model's; None when they agree or either side
        records no KARL config."""
        from kolmogorov_tokenizers.config import KARLConfig, behaviour_differences

        config = getattr(model, "config", None)
        if not isinstance(ckpt.get("model_config"), dict) or not isinstance(config, KARLConfig):
            return None
        diff = behaviour_differences(ckpt["model_config"], config)
        if not diff:
            return None
        saved = ", ".join(f"{k}={v[0]!r}" for k, v in diff.items())
        now = ", ".join(f"{k}={v[1]!r}" for k, v in diff.items())
        overrides = " ".join(f"model.overrides.{k}={v[0]}" for k, v in diff.items())
        return saved, now, overrides

    def log_scalars(self, trainer: "Trainer", out: StepOutput, images: torch.Tensor) -> Dict[str, float]:
        """Token-count and epsilon histograms; returns requested vs achieved error and the loss per budget."""
        extra: Dict[str, float] = {}
        step, logger = trainer.global_step, trainer.logger
        for name, phase in (out.phases or {}).items():
            num_tokens = getattr(phase, "num_tokens", None)
            if isinstance(num_tokens, torch.Tensor):
                logger.histogram(step, f"{name}/num_tokens", num_tokens)
            eps = getattr(phase, "epsilon", None)
            if isinstance(eps, torch.Tensor):
                logger.histogram(step, f"{name}/requested_epsilon", eps)
            recon = getattr(phase, "reconstruction", None)
            if isinstance(recon, torch.Tensor) and recon.shape == images.shape:
                achieved = l1_per_image(recon.detach().float().clamp(0, 1), images.float())  # (B,)
                logger.histogram(step, f"{name}/achieved_l1", achieved)
                extra[f"{name}/achieved_l1"] = achieved.mean().item()
                if isinstance(eps, torch.Tensor):
                    extra[f"{name}/requested_epsilon"] = eps.float().mean().item()
            budget = getattr(phase, "budget", None)
            rec = out.losses.get(f"{name}/rec")
            if budget is not None and rec is not None:
                extra[f"{name}/rec_by_budget/T{int(budget):03d}"] = rec.item()
        return extra

    def log_images(self, out: StepOutput) -> List[torch.Tensor]:
        rows = [getattr(phase, "reconstruction", None) for phase in (out.phases or {}).values()]
        return [r for r in rows if isinstance(r, torch.Tensor)]
