"""Entry point of both training stages (and stage 0 when available).

    python -m engine.main_train --stage latent_distillation --config demo_cpu --data_path datasets/demo
    torchrun --nproc_per_node 8 -m engine.main_train --stage full_finetuning --finetune ckpt.pth ...

Exit codes: 0 done (or max_steps reached); 2 bad arguments / config / data; 3 NaN/Inf loss, gradient or
updated weights (the last good checkpoint is kept); 130 SIGINT, 143 SIGTERM (after saving checkpoint-last.pth).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

EXIT_BAD_INPUT = 2


def main(argv: Optional[Sequence[str]] = None, stage: Optional[str] = None) -> int:
    from engine.config import ConfigError, load_config
    from engine.distributed import cleanup, init_distributed
    from engine.stages import get_stage
    from engine.trainer import EXIT_NONFINITE, NonFiniteLossError, Trainer
    from modules.io import CheckpointError

    try:
        cfg = load_config(argv, stage=stage)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if cfg.stage == "full_finetuning" and not cfg.finetune and not cfg.resume:
        print("warning: full finetuning without --finetune starts from random KARL weights", file=sys.stderr)
    dist_info = None
    try:
        dist_info = init_distributed(cfg.device, cfg.dist_url, cfg.dist_backend)
        trainer = Trainer(cfg, get_stage(cfg.stage), dist_info=dist_info)
        return trainer.fit()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except (CheckpointError, ValueError, RuntimeError, OSError) as err:
        # user-fixable problems (missing data / checkpoint, bad sizes, no GPU, a full disk; a folder in use):
        # one line, no traceback
        if isinstance(err, RuntimeError) and not _is_user_error(err):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        cleanup()


def _is_user_error(err: RuntimeError) -> bool:
    name = type(err).__name__
    return name in ("PerceptualWeightsMissing",) or "wandb" in str(err)


if __name__ == "__main__":
    sys.exit(main())
