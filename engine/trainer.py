"""The generic training loop: optimisation, precision, distribution, checkpoints, logging, faults.

It knows nothing of halting or of what a stage computes (engine/stages/). One code path for CPU,
one GPU and torchrun; mid-epoch checkpoints resume bit-exactly (CPU, fp32, num_workers 0).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import random
import signal
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from engine import checkpoint as ckpt_io
from engine.config import TrainConfig, config_to_dict, resolved_lr, save_resolved_config
from engine.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier, init_distributed
from engine.ema import ModelEMA
from engine.logging import TrainLogger
from engine.optim import build_adamw, lr_at, param_groups, set_lr
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.run_lock import OutputDirLocked, RunLock
from engine.stages import Stage, StepOutput
from modules.io import CheckpointError, remove_stale_temp_files
from modules.transformer import set_attention_backend

EXIT_OK, EXIT_NONFINITE, EXIT_SIGINT, EXIT_SIGTERM = 0, 3, 130, 143


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN/Inf. The run stops without overwriting the last good checkpoint."""


class NonFiniteUpdateError(NonFiniteLossError):
    """The gradients (or the weights after an update) became NaN/Inf while the loss was finite: the run
    stops before the update is saved or reaches the EMA (fp16's loss scaler skips such steps instead)."""


def ignore_stop_signals(worker_id: int) -> None:
    """worker_init_fn of every training DataLoader: the workers ignore SIGINT / SIGTERM.

    A scheduler (Slurm, systemd, Kubernetes) or Ctrl-C signals the whole process group; a worker killed
    by it made the main process fail with "DataLoader worker ... killed by signal" before it could save.
    Ignoring the signal lets the main process finish the step, save and shut its workers down; workers
    still exit when the main process is gone (torch's worker watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# torch's message when a worker died by a signal, e.g. "DataLoader worker (pid 12) is killed by signal: Terminated."
_WORKER_KILLED = {"Terminated": signal.SIGTERM, "Interrupt": signal.SIGINT}


def _stop_signal_of_worker_failure(err: BaseException) -> Optional[int]:
    text = str(err)
    if "DataLoader worker" not in text or "killed by signal" not in text:
        return None
    return next((sig for name, sig in _WORKER_KILLED.items() if f"signal: {name}" in text), None)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle, seed, set_epoch) that can skip the samples an interrupted epoch consumed."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


class Trainer:
    def __init__(self, cfg: TrainConfig, stage: Stage, dist_info: Optional[DistInfo] = None,
                 model: Optional[nn.Module] = None, dataset: Optional[Dataset] = None) -> None:
        self.cfg = cfg
        self.stage = stage
        self.dist = dist_info or init_distributed(cfg.device, cfg.dist_url, cfg.dist_backend)
        self.device = self.dist.device
        self.output_dir = Path(cfg.output_dir)
        self._lock = self._lock_output_dir()  # before anything is read from or written to the folder
        try:
            self._build(model, dataset)
        except BaseException:
            self.release_output_dir()
            raise

    def _build(self, model: Optional[nn.Module], dataset: Optional[Dataset]) -> None:
        cfg, stage = self.cfg, self.stage
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "fp16" and not stage.fp16_ok:
            self.precision = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
            print(f"[precision] stage {stage.name} does not train in fp16: {self.precision}", flush=True)
        set_attention_backend(cfg.attention_backend)  # process-wide: every block follows it
        # a missing --resume file fails before any building; a resumed run skips --finetune (its weights are inside)
        self._resume_path = ckpt_io.resolve_resume_path(cfg.resume, self.output_dir)
        _seed_everything(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)

        raw = model if model is not None else stage.build_model(cfg)
        self.raw_model: nn.Module = raw.to(self.device)
        if hasattr(self.raw_model, "set_sampling_seed"):
            # budget_per_rank (the release): each rank draws its own EIC budget; else one budget per step
            self.raw_model.set_sampling_seed(cfg.seed + (self.dist.rank if cfg.budget_per_rank else 0))
        self.stage.prepare_model(self)
        self._load_finetune()
        self.model = self.wrap_ddp(self.raw_model)
        # stage 0 saves its live weights, so it keeps no EMA (Stage.keeps_ema)
        self.ema: Optional[ModelEMA] = ModelEMA(self.raw_model, cfg.ema_decay) if self.stage.keeps_ema else None
        if self._finetune_ema is not None and self.ema is not None:
            ema_state, tolerate = self._finetune_ema
            ckpt_io.load_weights(self.ema.module, ema_state, self.cfg.finetune, "--finetune", **tolerate)

        self.world_batch = cfg.optim.batch_size * cfg.optim.accum_iter * self.dist.world_size
        self.base_lr = resolved_lr(cfg, self.dist.world_size)
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.scalers: Dict[str, torch.amp.GradScaler] = {}
        self.clip_params: Dict[str, List[nn.Parameter]] = {}
        self.add_optimizer("model", param_groups(self.raw_model, cfg.optim.weight_decay))
        self.stage.setup(self)

        self.dataset = dataset if dataset is not None else self._build_dataset()
        self.sampler = ResumableSampler(self.dataset, self.dist.world_size, self.dist.rank, cfg.seed)
        self.steps_per_epoch = len(self.sampler) // (cfg.optim.batch_size * cfg.optim.accum_iter)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the dataset has {len(self.dataset)} images: too few for one optimizer step of "
                f"{self.world_batch} images (batch_size x accum_iter x world size); lower --batch_size")

        # per-image draws (augmentation, conditioning) differ per rank; the EIC budget comes from the
        # model's own generator, seeded identically on every rank (model.set_sampling_seed)
        _seed_everything(cfg.seed + self.dist.rank)
        self.epoch, self.batches_done, self.global_step = 0, 0, 0
        self.logger = TrainLogger(self.output_dir, cfg.log_dir, self.dist.is_main, cfg.wandb, cfg.wandb_project,
                                  config_to_dict(cfg))
        self._stop_signal: Optional[int] = None
        self._updating = False  # inside an optimizer update (weights, EMA, step counters change together)
        self._resume()

    # --- the output folder belongs to one run -----------------------------------------------------------
    def _lock_output_dir(self) -> Optional[RunLock]:
        """Rank 0 locks output_dir (engine/run_lock.py) and removes temp files a killed save left there;
        every rank fails when the folder is in use."""
        lock, refusal = None, None
        if self.dist.is_main:
            try:
                lock = RunLock(self.output_dir).acquire()
            except (OutputDirLocked, OSError) as err:  # any failure: the other ranks must hear of it, not hang
                refusal = err
        if self._any_rank(refusal is not None):
            raise refusal or OutputDirLocked(f"output folder {self.output_dir} is in use by another run (see rank 0)")
        if self.dist.is_main:
            removed = remove_stale_temp_files(self.output_dir)
            if removed:
                print(f"[train] removed {len(removed)} temp file(s) of an interrupted save: "
                      f"{', '.join(p.name for p in removed[:5])}", flush=True)
        return lock

    def release_output_dir(self) -> None:
        """Let another run use output_dir (fit() does this when it returns or fails)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    # --- construction helpers ------------------------------------------------------------------------------
    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not self.dist.distributed or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                   find_unused_parameters=self.cfg.find_unused_parameters)

    def add_optimizer(self, name: str, params: Any, lr_scale: float = 1.0, weight_decay: Optional[float] = None) -> None:
        groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
        for g in groups:
            g["lr_scale"] = lr_scale
            if weight_decay is not None:
                g["weight_decay"] = weight_decay
        self.optimizers[name] = build_adamw(groups, self.base_lr, self.cfg.optim.betas)
        self.scalers[name] = make_grad_scaler(self.precision, self.device)
        self.clip_params[name] = [p for g in groups for p in g["params"]]

    def _build_dataset(self) -> Dataset:
        from engine.data import build_dataset

        d = self.cfg.data
        return build_dataset(d.data_path, d.split, d.input_size, d.kind, d.train_interpolation)

    def _load_finetune(self) -> None:
        """--finetune CKPT: weights of a previous stage (its EMA, or its live model with finetune_weights "model")
        and its EMA; optimizer and epoch start fresh."""
        self._finetune_ema = None
        if not self.cfg.finetune or self._resume_path is not None:
            return
        source = self.cfg.finetune
        ckpt = ckpt_io.load_checkpoint(source)
        ckpt_io.check_weights_finite(ckpt, source)
        # what the stage tolerates (KARL: a release's extra losses, our training-only state); everything else
        # must match unless --finetune_non_strict
        tolerate = dict(strict=not self.cfg.finetune_non_strict, **self.stage.finetune_key_tolerance())
        # finetune_weights "ema" (the release): the stage-1 EMA starts both the model and the new EMA
        start = ckpt.get("ema") if self.cfg.finetune_weights == "ema" and ckpt.get("ema") else ckpt["model"]
        missing, unexpected = ckpt_io.load_weights(self.raw_model, start, source, "--finetune", **tolerate)
        if self.dist.is_main:
            print(f"[finetune] loaded {source}: {len(missing)} missing keys, {len(unexpected)} unexpected keys",
                  flush=True)
            for k in missing[:10]:
                print(f"[finetune]   missing: {k}")
            for k in unexpected[:10]:
                print(f"[finetune]   unexpected: {k}")
        self._finetune_ema = (ckpt.get("ema") or start, tolerate)
        changed = self.stage.behaviour_changes(self.raw_model, ckpt)
        if changed and self.dist.is_main:
            print(f"[finetune] warning: {source} was trained with {changed[0]}; this run uses {changed[1]} "
                  f"(to keep the earlier behaviour: {changed[2]})", flush=True)

    def _resume(self) -> None:
        path = self._resume_path
        if path is None:
            return
        ckpt = ckpt_io.load_checkpoint(path)
        ckpt_io.check_weights_finite(ckpt, path)
        changed = self.stage.behaviour_changes(self.raw_model, ckpt)
        if changed:  # the same weights would now train differently: a resume must continue the same run
            raise CheckpointError(f"--resume {path}: the model was trained with {changed[0]}, but this run's "
                                  f"config says {changed[1]}; set {changed[2]} to continue it")
        ckpt_io.load_weights(self.raw_model, ckpt["model"], path, "--resume")  # strict: our own checkpoint
        if self.ema is not None:
            if "ema" not in ckpt:
                raise CheckpointError(f"--resume {path} has no 'ema' entry: not a training checkpoint of this code "
                                      f"(start from it with --finetune instead)")
            ckpt_io.load_weights(self.ema.module, ckpt["ema"], path, "--resume")
        try:
            self.optimizers["model"].load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                self.scalers["model"].load_state_dict(ckpt["scaler"])
            for name in self.optimizers:
                if name != "model" and f"{name}_optimizer" in ckpt:
                    self.optimizers[name].load_state_dict(ckpt[f"{name}_optimizer"])
                    if ckpt.get(f"{name}_scaler"):
                        self.scalers[name].load_state_dict(ckpt[f"{name}_scaler"])
            self.stage.load_extra_state(ckpt)
        except (KeyError, ValueError, RuntimeError) as err:  # another stage's / model's optimizer or extra state
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"--resume {path} does not fit this run (stage {self.stage.name}; the file is "
                                  f"from stage {ckpt.get('stage', '?')}): {first}") from None
        # epoch_done (and release checkpoints, whose `epoch` is the finished one): continue with the next epoch
        if ckpt.get("epoch_done", True):
            self.epoch, self.batches_done = int(ckpt["epoch"]) + 1, 0
        else:
            self.epoch, self.batches_done = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt.get("global_step", 0))
        rng = ckpt_io.rng_for_rank(ckpt, self.dist.rank, self.dist.world_size)
        if rng is not None:
            ckpt_io.restore_rng_state(rng)
        elif self.dist.is_main:
            print("[resume] world size changed: RNG states not restored (the run continues, not bit-exactly)")
        self.logger.event(f"[resume] {path}: epoch {self.epoch}, batch {self.batches_done}, step {self.global_step}")

    # --- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint_state(self, epoch_done: bool) -> Dict[str, Any]:
        rng = all_gather_object(ckpt_io.capture_rng_state())  # every rank's RNG, so resume is exact per rank
        cfg = self.cfg
        config = getattr(self.raw_model, "config", None)
        state: Dict[str, Any] = {"model": self.raw_model.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        state.update({
            "optimizer": self.optimizers["model"].state_dict(),
            "scaler": self.scalers["model"].state_dict(),
            "epoch": self.epoch,
            "epoch_done": epoch_done,
            "step_in_epoch": self.batches_done,
            "global_step": self.global_step,
            "stage": self.stage.name,
            "config": config_to_dict(cfg),
            "model_config": config.to_dict() if hasattr(config, "to_dict") else None,
            # the release's `args` (argparse.Namespace, allowed by the safe loader) for release-style readers
            "args": argparse.Namespace(model=cfg.model.model, base_tokenizer=cfg.model.base_tokenizer,
                                       quantize_latent=cfg.model.quantize_latent,
                                       factorize_latent=cfg.model.factorize_latent,
                                       input_size=cfg.data.input_size, batch_size=cfg.optim.batch_size,
                                       epochs=cfg.optim.epochs, seed=cfg.seed),
            "rng": rng,
        })
        for name in self.optimizers:
            if name != "model":
                state[f"{name}_optimizer"] = self.optimizers[name].state_dict()
                state[f"{name}_scaler"] = self.scalers[name].state_dict()
        state.update(self.stage.extra_state())
        return state

    def save(self, epoch_done: bool, also_epoch_file: bool = False) -> None:
        state = self.checkpoint_state(epoch_done)
        if self.dist.is_main:
            ckpt_io.save_checkpoint(self.output_dir / ckpt_io.LAST, state)
            if also_epoch_file:
                ckpt_io.save_checkpoint(self.output_dir / ckpt_io.epoch_checkpoint_name(self.epoch), state)
        barrier()

    # --- faults ----------------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> Callable[[], None]:
        def handler(signum, frame):
            if self._stop_signal is not None:  # second signal: give up immediately
                raise KeyboardInterrupt
            self._stop_signal = signum
            self.logger.event(f"[signal] {signal.Signals(signum).name}: saving checkpoint-last after this step")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in previous.items()]

    def _save_after_worker_killed(self, err: RuntimeError) -> int:
        """A worker died of SIGTERM / SIGINT before it could ignore it (it was starting up): the group was
        signalled, so stop as for the signal itself. The partial step is dropped: checkpoint-last holds the
        last completed optimizer step. Anything else (or a failure inside an update) is re-raised, and so
        is this under torchrun: the other ranks may be inside a collective, and saving needs all of them."""
        sig = self._stop_signal or _stop_signal_of_worker_failure(err)
        if sig is None or self._updating or _stop_signal_of_worker_failure(err) is None or self.dist.distributed:
            raise err
        self._stop_signal = sig
        self.batches_done -= self.batches_done % self.cfg.optim.accum_iter  # back to the last step boundary
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.save(epoch_done=False)
        self.logger.event(f"[signal] {signal.Signals(sig).name} (a data-loading worker was killed by it): saved "
                          f"{self.output_dir / ckpt_io.LAST} at step {self.global_step}; exiting (resume with --resume auto)")
        return EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT

    def _check_finite(self, out: StepOutput) -> None:
        bad = [k for k, v in out.losses.items() if not bool(torch.isfinite(v.detach()).all())]
        if not math.isfinite(out.loss.item()) and not bad:
            bad = ["loss"]
        flag = all_reduce_sum(torch.tensor([float(bool(bad))], device=self.device))
        if flag.item() > 0:
            where = f"loss term(s) {', '.join(bad)}" if bad else "a loss term on another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step} (epoch {self.epoch}): {where} is NaN/Inf. "
                f"Stopped without saving; the last good checkpoint in {self.output_dir} is kept. "
                f"Try a lower lr (--blr), --precision fp32 or bf16, or a smaller --grad_clip.")

    def _inject_nan(self, out: StepOutput) -> None:
        d = self.cfg.debug
        if d.nan_loss_step == self.global_step and out.losses:
            term = d.nan_loss_term or next(iter(out.losses))
            out.losses[term] = out.losses[term] * float("nan")
            out.loss = sum(out.losses.values())

    # --- the loop -----------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.batches_done * self.cfg.optim.batch_size
        # own generator: creating the iterator does not draw from the global RNG (exact mid-epoch resume)
        generator = torch.Generator().manual_seed(self.cfg.seed * 100003 + self.epoch * 1009 + self.dist.rank)
        d = self.cfg.data
        return DataLoader(self.dataset, batch_size=self.cfg.optim.batch_size, sampler=self.sampler,
                          num_workers=d.num_workers, pin_memory=d.pin_memory and self.device.type == "cuda",
                          drop_last=True, generator=generator, persistent_workers=False,
                          worker_init_fn=ignore_stop_signals if d.num_workers > 0 else None)

    def _stop_requested(self) -> bool:
        flag = torch.tensor([float(self._stop_signal is not None)], device=self.device)
        return all_reduce_sum(flag).item() > 0

    def fit(self) -> int:
        """Train to the end (or max_steps / a signal). Returns the process exit code."""
        cfg = self.cfg
        if self._lock is not None:
            self._lock.acquire()  # no-op while held; again when fit() is called a second time
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_resolved_config(cfg, self.output_dir)
        restore_signals = self._install_signal_handlers()
        self.logger.event(
            f"[train] stage {self.stage.name} | {self.dist.world_size} process(es) on {self.device} | precision "
            f"{self.precision} | global batch {self.world_batch} | lr {self.base_lr:.3g} | "
            f"{self.steps_per_epoch} steps/epoch x {cfg.optim.epochs} epochs")
        try:
            while self.epoch < cfg.optim.epochs:
                if self.batches_done == 0 and cfg.ema_reset_every_epoch and self.ema is not None:
                    self.ema.reset(self.raw_model)
                try:
                    code = self._train_epoch()
                except RuntimeError as err:
                    code = self._save_after_worker_killed(err)
                if code is not None:
                    return code
                last = self.epoch + 1 == cfg.optim.epochs
                self.batches_done = self.steps_per_epoch * cfg.optim.accum_iter  # the whole epoch is consumed
                self.save(epoch_done=True, also_epoch_file=cfg.save_every > 0 and (self.epoch % cfg.save_every == 0 or last))
                self.epoch += 1
                self.batches_done = 0
            return EXIT_OK
        finally:
            restore_signals()
            self.logger.close()
            self.release_output_dir()

    def _train_epoch(self) -> Optional[int]:
        cfg, accum = self.cfg, self.cfg.optim.accum_iter
        self.model.train()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        total_steps = cfg.optim.epochs * self.steps_per_epoch
        if cfg.max_steps > 0:
            total_steps = min(total_steps, cfg.max_steps)
        names, log_acc, shown_keys = ("model",), {}, {"loss"}
        for micro, batch in enumerate(self._loader()):
            images = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(self.device, non_blocking=True)
            first_micro = micro % accum == 0
            boundary = micro % accum == accum - 1
            if first_micro:
                chosen = self.stage.optimizer_for_step(self, self.epoch)
                names = (chosen,) if isinstance(chosen, str) else tuple(chosen)
                step_in_epoch = self.batches_done // accum
                lr = lr_at(self.epoch + step_in_epoch / self.steps_per_epoch, self.base_lr, cfg.optim.min_lr,
                           cfg.optim.warmup_epochs, cfg.optim.epochs)
                for opt in self.optimizers.values():
                    set_lr(opt, lr)
            outputs, grad_norms = self.train_step(images, names, last_micro_batch=boundary)
            for out in outputs:
                values = {k: v.item() for k, v in out.losses.items()}
                values.update({k: float(v) for k, v in out.logs.items()})
                values[out.loss_name] = out.loss.item()
                for k, v in values.items():  # (sum, count) per key: D and autoencoder steps log different keys
                    total, count = log_acc.get(k, (0.0, 0))
                    log_acc[k] = (total + v, count + 1)
                shown_keys.update(out.losses, out.shown, (out.loss_name,))
            first_out = outputs[0]  # the step's main output: the stage's log hooks read it
            if not boundary:
                continue

            if self.global_step % cfg.log_every == 0 or self.global_step == 1:
                scalars = {k: total / count for k, (total, count) in log_acc.items()}
                scalars["lr"] = lr
                scalars.update({f"grad_norm/{which}": norm for which, norm in grad_norms.items()})
                if self.dist.is_main:
                    scalars.update(self.stage.log_scalars(self, first_out, images))
                self.logger.scalars(self.global_step, scalars, epoch=self.epoch)
                shown = {k: v for k, v in scalars.items() if k in shown_keys or k == "lr"}
                position = ((self.stage.label or self.stage.name, self.global_step, cfg.max_steps)
                            if cfg.max_steps > 0 else None)
                self.logger.progress(self.epoch, cfg.optim.epochs, self.batches_done // accum, self.steps_per_epoch,
                                     total_steps - self.global_step, shown, self.dist.world_size, position)
                log_acc = {}
            if cfg.image_log_every and self.global_step % cfg.image_log_every == 0:
                self._log_images(images, first_out)

            if self._stop_requested():
                self.save(epoch_done=False)
                sig = self._stop_signal
                self.logger.event(f"[signal] saved {self.output_dir / ckpt_io.LAST}; exiting (resume with --resume auto)")
                return EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT
            if cfg.max_steps > 0 and self.global_step >= cfg.max_steps:
                self.save(epoch_done=False)
                self.logger.event(f"[train] reached max_steps={cfg.max_steps}; saved {self.output_dir / ckpt_io.LAST}")
                return EXIT_OK
            if cfg.save_last_every_steps > 0 and self.global_step % cfg.save_last_every_steps == 0:
                self.save(epoch_done=False)
        return None  # epoch complete: fit() saves and moves on

    def train_step(self, images: torch.Tensor, optimizer_names: Sequence[str], last_micro_batch: bool = True
                   ) -> Tuple[List[StepOutput], Dict[str, float]]:
        """One micro-batch `images` (B, 3, H, W) in [0, 1]: for each optimizer this step updates, the stage's
        losses (stage.train_step) and their backward pass (gradients add up over accum_iter micro-batches);
        at the step's last micro-batch the optimizers step (clipping, finiteness checks, EMA) and the step
        counter advances. Returns the stage's outputs (one per optimizer) and, after an update, the gradient
        norm per optimizer."""
        accum = self.cfg.optim.accum_iter
        sync = contextlib.ExitStack()
        if self.dist.distributed and not last_micro_batch:  # DDP all-reduces gradients at the last one only
            for m in (self.model, *self.stage.ddp_modules()):
                if isinstance(m, nn.parallel.DistributedDataParallel):
                    sync.enter_context(m.no_sync())
        outputs: List[StepOutput] = []
        with sync:
            for which in optimizer_names:
                with autocast(self.precision, self.device):
                    out = self.stage.train_step(self, images, which)
                self._inject_nan(out)
                self._check_finite(out)
                self.scalers[which].scale(out.loss / accum).backward()
                outputs.append(out)
        self.batches_done += 1
        self.logger.count_images(images.shape[0])
        if not last_micro_batch:
            return outputs, {}

        self._updating = True
        grad_norms = {which: self._optimizer_step(which) for which in optimizer_names}
        for opt in self.optimizers.values():  # a D step must not leave gradients on the model and vice versa
            opt.zero_grad(set_to_none=True)
        self.global_step += 1
        self.logger.count_step()
        for which in optimizer_names:
            self.stage.on_optimizer_step(which)
        self._updating = False
        return outputs, grad_norms

    def _optimizer_step(self, which: str) -> float:
        opt, scaler = self.optimizers[which], self.scalers[which]
        scaler.unscale_(opt)
        clip = self.cfg.optim.grad_clip
        params = [p for p in self.clip_params[which] if p.grad is not None]
        if clip is not None and clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params]))) if params else 0.0
        # the loss can be finite while its gradient is not (an overflow inside backward): checked here, before
        # the update, so neither the weights, the EMA nor a checkpoint ever hold it. fp16's scaler skips
        # such steps itself (and lowers its scale), which is the intended fp16 behaviour.
        if not scaler.is_enabled() and self._any_rank(not math.isfinite(grad_norm)):
            raise NonFiniteUpdateError(
                f"gradient norm of '{which}' is NaN/Inf ({grad_norm}) at step {self.global_step + 1} "
                f"(epoch {self.epoch}) while the loss was finite. {self._stopped_hint()}")
        scaler.step(opt)
        scaler.update()
        # a finite gradient times a huge lr can still overflow the weights
        updated = [p.detach() for p in self.clip_params[which]]
        norms = torch.stack(torch._foreach_norm(updated)) if updated else torch.zeros(1)
        if self._any_rank(not bool(torch.isfinite(norms).all())):
            raise NonFiniteUpdateError(
                f"the update of '{which}' at step {self.global_step + 1} (epoch {self.epoch}, lr "
                f"{opt.param_groups[0]['lr']:.3g}) made weights NaN/Inf. {self._stopped_hint()}")
        if which == "model" and self.ema is not None:
            self.ema.update(self.raw_model)
        return grad_norm

    def _any_rank(self, flag: bool) -> bool:
        return all_reduce_sum(torch.tensor([float(flag)], device=self.device)).item() > 0

    def _stopped_hint(self) -> str:
        return (f"Stopped without saving; the last good checkpoint in {self.output_dir} is kept. "
                f"Try a lower learning rate (--blr or --lr), --precision fp32 or bf16, or a smaller --grad_clip.")

    def _log_images(self, images: torch.Tensor, out: StepOutput) -> None:
        if not self.dist.is_main:
            return
        from torchvision.utils import make_grid

        rows = [images[:8].detach().float()]
        rows += [recon[:8].detach().float().clamp(0, 1) for recon in self.stage.log_images(out)]
        if len(rows) > 1:
            self.logger.images(self.global_step, "reconstructions", make_grid(torch.cat(rows), nrow=min(8, images.shape[0])))
