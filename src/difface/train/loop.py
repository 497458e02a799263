"""The training loop shared by the prior and the estimator (the step function is injected).

One optimizer step k (k = 1, 2, ...):
1. lr_k = lr_at(k) is set *before* the step (warm-up: step 1 already uses lr / warmup_steps).
2. This process's share of the global batch (B / K samples) runs in micro-batches; each returns
   the sum of its per-sample losses, backpropagated as sum / (B / K) (i.e. the micro-batch mean
   times micro / (B / K)). DDP skips the gradient all-reduce (`no_sync`) on all but the last
   micro-batch and averages over the K processes, so the gradient is the mean over the global
   batch, whatever K and the micro-batch size.
3. Gradients are unscaled (GradScaler, created once, enabled only for fp16), their global norm is
   computed and clipped (optim.grad_clip), AdamW steps (skipped when the norm is not finite),
   BatchNorm running statistics (networks that have BatchNorm, i.e. LaMa) fold in the global
   batch's statistics (difface.train.batchnorm), and the EMA (rank 0) folds in the new weights.
Rank 0 logs, draws samples, writes checkpoints and exports; see `train`. For networks with
BatchNorm and an EMA, the EMA's BatchNorm statistics are recomputed for the averaged weights on
fixed training samples before each validation and export (`calibrate_ema_batchnorm`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from difface.atomic import atomic_write_bytes
from difface.device import DTYPES
from difface.device import autocast as autocast_ctx
from difface.distributed import DistInfo, all_reduce_sum
from difface.train import checkpoint as ckpt
from difface.train.batchnorm import GlobalBatchNormStats, recompute_statistics
from difface.train.config import OptimConfig, TrainConfig, check_resumable, dump_config
from difface.train.data import KeyedItems, StreamSampler, make_loader
from difface.train.ema import EMA
from difface.train.logs import MetricsLogger, tensorboard_writer
from difface.train.steps import StepFn
from difface.weights import save_network

log = logging.getLogger("difface.train")

# sample_fn(eval_model, step, run_dir) -> metrics to log in val.jsonl; called on rank 0 only.
SampleFn = Callable[[nn.Module, int, Path], dict]


@dataclass
class TrainState:
    """The trained network (`model`, unwrapped), its DDP wrapper `net`, optimizer, scaler, EMA, step and
    the BatchNorm statistics keeper (None for networks without BatchNorm)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    step: int = 0
    bn_stats: GlobalBatchNormStats | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights to sample with and to export: the EMA when there is one, else the model."""
        return self.ema.shadow if self.ema is not None else self.model


def lr_at(step: int, o: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based): schedule base times linear warm-up k / W."""
    if o.schedule == "cosine":
        total = max(1, o.cosine_steps or max_steps)
        k = min(max(step - 1, 0), total)
        base = o.eta_min + (o.lr - o.eta_min) * 0.5 * (1.0 + math.cos(math.pi * k / total))
    else:
        base = o.lr
    warm = min(1.0, step / o.warmup_steps) if o.warmup_steps > 0 else 1.0
    return base * warm


def build_state(model: nn.Module, cfg: TrainConfig, info: DistInfo) -> TrainState:
    """Move `model` to the device, wrap it in DDP under torchrun, create AdamW, GradScaler, EMA and the
    BatchNorm statistics keeper."""
    model.to(info.device).train()
    ema = EMA(model, cfg.optim.ema_rate) if cfg.optim.ema_rate is not None and info.is_main else None
    bn_stats = GlobalBatchNormStats(model) or None  # after the EMA copy, so the shadow has no hooks
    net: nn.Module = model
    if info.world_size > 1:
        ids = [info.device.index] if info.device.type == "cuda" else None
        net = DDP(model, device_ids=ids, broadcast_buffers=False)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=lr_at(1, o, cfg.max_steps), betas=o.betas, eps=o.eps,
                            weight_decay=o.weight_decay)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.precision == "fp16")
    return TrainState(model, net, opt, scaler, ema, bn_stats=bn_stats)


def checkpoint_state(state: TrainState, cfg: TrainConfig, info: DistInfo, num_items: int) -> dict:
    """What a checkpoint holds (see difface.train.checkpoint)."""
    pos = state.step * cfg.optim.batch_size
    return {
        "step": state.step, "world_size": info.world_size,
        "model": state.model.state_dict(), "ema": state.ema.state_dict() if state.ema else None,
        "optimizer": state.optimizer.state_dict(), "scaler": state.scaler.state_dict(),
        "rng": ckpt.rng_state(),
        "data": {"position": pos, "epoch": pos // num_items, "offset": pos % num_items,
                 "num_items": num_items, "seed": cfg.seed},
        "config": cfg.to_dict(),
    }


def restore_state(state: TrainState, saved: dict, cfg: TrainConfig, num_items: int) -> None:
    """Load a checkpoint dict into `state` (model, EMA, optimizer, scaler, RNG, step)."""
    changed = check_resumable(saved["config"], cfg)
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(changed))
    if saved["data"]["num_items"] != num_items:
        log.warning("the training set had %d images when the checkpoint was written and has %d now: "
                    "the sample order differs from an uninterrupted run", saved["data"]["num_items"], num_items)
    state.model.load_state_dict(saved["model"], strict=True)
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"] if saved["ema"] is not None else saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"]:
        state.scaler.load_state_dict(saved["scaler"])
    ckpt.set_rng_state(saved["rng"])
    state.step = int(saved["step"])


def _seed_global_rng(seed: int, step: int, rank: int) -> None:
    # Nothing here draws from the global torch RNG on purpose; modules that do (dropout) get a
    # stream keyed by (seed, step, rank), so a resumed run repeats them exactly.
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank, 7]).generate_state(1, np.uint64)[0]))


def accumulate_gradients(net: nn.Module, step_fn: StepFn, batch: dict, step: int, *, micro_batch: int | None,
                         amp: Callable = contextlib.nullcontext, scaler: torch.amp.GradScaler | None = None,
                         ) -> dict[str, torch.Tensor]:
    """Backpropagate this process's batch in micro-batches; the gradient is the batch mean.

    Returns the summed metrics of the step function (per-sample sums, detached).
    """
    n = len(batch["slot"])
    micro = micro_batch or n
    starts = list(range(0, n, micro))
    sums: dict[str, torch.Tensor] = {}
    for i, s in enumerate(starts):
        mb = {k: v[s:s + micro] for k, v in batch.items()}
        sync = i == len(starts) - 1 or not isinstance(net, DDP)
        with contextlib.nullcontext() if sync else net.no_sync():
            with amp():
                out = step_fn(net, mb, step)
            loss = out.loss / n
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for k, v in out.metrics.items():
            sums[k] = sums[k] + v if k in sums else v
    return sums


def optimizer_step(state: TrainState, step_fn: StepFn, batch: dict, step: int, cfg: TrainConfig,
                   info: DistInfo) -> tuple[dict[str, torch.Tensor], float]:
    """One full optimizer step (module docstring); returns (metric sums, gradient norm)."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(step, cfg.optim, cfg.max_steps)
    _seed_global_rng(cfg.seed, step, info.rank)
    state.optimizer.zero_grad(set_to_none=True)
    dtype = DTYPES[cfg.precision]
    sums = accumulate_gradients(state.net, step_fn, batch, step, micro_batch=cfg.optim.micro_batch,
                                amp=lambda: autocast_ctx(info.device, dtype), scaler=state.scaler)
    state.scaler.unscale_(state.optimizer)
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else math.inf
    norm = float(torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip))
    if math.isfinite(norm) or state.scaler.is_enabled():
        state.scaler.step(state.optimizer)  # the scaler itself skips steps with inf/NaN gradients
    state.scaler.update()
    if state.bn_stats is not None:
        state.bn_stats.step()
    if state.ema is not None and math.isfinite(norm):
        state.ema.update(state.model)
    sums["skipped_images"] = batch["skipped"].sum().to(info.device, torch.float32)
    return sums, norm


class _Window:
    """Metric sums between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.norms: list[float] = []
        self.t0, self.steps = time.perf_counter(), 0

    def add(self, sums: dict[str, torch.Tensor], norm: float) -> None:
        for k, v in sums.items():
            self.sums[k] = self.sums[k] + v.detach().float() if k in self.sums else v.detach().float()
        self.norms.append(norm)
        self.steps += 1

    def flush(self, batch_size: int) -> dict[str, float]:
        keys = sorted(self.sums)
        packed = all_reduce_sum(torch.stack([self.sums[k] for k in keys])).cpu().tolist() if keys else []
        dt = time.perf_counter() - self.t0
        n = max(1, self.steps * batch_size)
        row = {k: v / n for k, v in zip(keys, packed) if k != "skipped_images"}
        finite = [x for x in self.norms if math.isfinite(x)]
        row.update(skipped_images=int(round(dict(zip(keys, packed)).get("skipped_images", 0))),
                   grad_norm=float(np.mean(finite)) if finite else float("nan"),
                   nonfinite_steps=len(self.norms) - len(finite), steps_per_s=self.steps / max(dt, 1e-9),
                   samples_per_s=self.steps * batch_size / max(dt, 1e-9))
        self.reset()
        return row


CALIBRATION_SAMPLES = 256


def calibrate_ema_batchnorm(state: TrainState, step_fn: StepFn, dataset, cfg: TrainConfig,
                            samples: int = CALIBRATION_SAMPLES) -> bool:
    """Give the EMA weights BatchNorm statistics of their own (rank 0; networks with BatchNorm and an EMA).

    The EMA copies the live network's running statistics after every step (as the official trainer), but those
    belong to the live weights: early in a run, or with a high lr, the averaged weights normalised
    by them give wrong outputs (measured on the 64 px inpainter at step 2000: 11.0 dB hole PSNR
    instead of 16.6 dB). Here the statistics are recomputed by running the step function (no grad,
    train mode) on the first `samples` positions of the seed's epoch-0 order, in chunks of
    optim.micro_batch (else batch_size): the same samples at every call, so runs stay exactly
    resumable. The next EMA update copies the live statistics again, so training is unaffected.
    Returns True when something was recomputed.
    """
    if state.ema is None or state.bn_stats is None:
        return False
    from torch.utils.data import default_collate

    chunk = min(cfg.optim.micro_batch or cfg.optim.batch_size, samples)
    steps = max(1, samples // chunk)
    keys = StreamSampler(len(dataset), chunk, 0, 1, cfg.seed, 0, steps)
    items = KeyedItems(dataset)

    def run(model: nn.Module) -> None:
        for batch_keys in keys:
            step_fn(model, default_collate([items[k] for k in batch_keys]), 0)

    with torch.random.fork_rng(devices=[]):
        return recompute_statistics(state.ema.shadow, run) > 0


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _write_checkpoint(state: TrainState, cfg: TrainConfig, info: DistInfo, run_dir: Path, n: int) -> None:
    if info.is_main:
        ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, state.step), checkpoint_state(state, cfg, info, n))
        ckpt.prune_checkpoints(run_dir, cfg.keep_checkpoints)
        export_weights(state, cfg, run_dir)


def export_weights(state: TrainState, cfg: TrainConfig, run_dir: Path) -> Path | None:
    """Write run_dir/<task>.safetensors (EMA weights when there is an EMA) for `difface restore`.

    Only networks of difface.models (they carry a `config`) are exported; returns the path or None.
    """
    if not hasattr(state.eval_model, "config"):
        return None
    path = Path(run_dir) / f"{cfg.task}.safetensors"
    save_network(state.eval_model, path, extra=export_metadata(cfg, state.step, ema=state.ema is not None))
    return path


def export_metadata(cfg: TrainConfig, step: int, *, ema: bool) -> dict:
    """Metadata of exported weights: step, 'ema' or 'model', task, and for priors `t_max`."""
    extra = {"step": int(step), "weights": "ema" if ema else "model", "task": cfg.task}
    if cfg.task == "prior":
        d = cfg.diffusion
        # The timesteps the prior was trained on: restoring from a start step beyond them is refused.
        extra["t_max"] = d.steps - 1 if d.t_max is None else d.t_max
    return extra


def _run_sampling(state: TrainState, sample_fn: SampleFn, run_dir: Path, val_log: MetricsLogger) -> dict:
    model = state.eval_model
    was_training = model.training
    model.eval()
    try:
        metrics = sample_fn(model, state.step, run_dir) or {}
    finally:
        model.train(was_training)
    if metrics:
        val_log.write({"step": state.step, **metrics})
    return metrics


def train(model: nn.Module, step_fn: StepFn, dataset, cfg: TrainConfig, run_dir: str | Path, info: DistInfo,
          *, resume: dict | None = None, sample_fn: SampleFn | None = None) -> TrainState:
    """Train `model` on `dataset` (items with `item(index, epoch)`) until cfg.max_steps.

    `resume`: a loaded checkpoint (difface.train.checkpoint.load_checkpoint) to continue from.
    Rank 0 writes run_dir/{config.yaml, train.jsonl, train.csv, val.*, checkpoints/, samples/,
    <task>.safetensors}. Returns the final TrainState.
    """
    run_dir = Path(run_dir)
    state = build_state(model, cfg, info)
    if resume is not None:
        restore_state(state, resume, cfg, len(dataset))
    tb = tensorboard_writer(run_dir, info.is_main)
    first = None if resume is None else state.step
    train_log = MetricsLogger(run_dir, "train", enabled=info.is_main, resume_step=first, tensorboard=tb)
    val_log = MetricsLogger(run_dir, "val", enabled=info.is_main, resume_step=first, tensorboard=tb)
    if info.is_main:
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    sampler = StreamSampler(len(dataset), cfg.optim.batch_size, info.rank, info.world_size, cfg.seed,
                            state.step, cfg.max_steps)
    loader = make_loader(dataset, sampler, cfg.data.num_workers, pin_memory=info.device.type == "cuda")
    window, last = _Window(), cfg.max_steps
    calibrated = -1

    def calibrate() -> None:
        nonlocal calibrated
        if info.is_main and calibrated != state.step:
            calibrate_ema_batchnorm(state, step_fn, dataset, cfg)
            calibrated = state.step

    bar = tqdm(total=last, initial=state.step, desc=f"train {cfg.task}", unit="step", disable=not info.is_main,
               dynamic_ncols=True)
    for batch in loader:
        sums, norm = optimizer_step(state, step_fn, batch, state.step + 1, cfg, info)
        state.step += 1
        window.add(sums, norm)
        bar.update(1)
        if _due(state.step, cfg.log_every, last):
            lr = state.optimizer.param_groups[0]["lr"]
            row = {"step": state.step, "lr": lr, **window.flush(cfg.optim.batch_size)}
            train_log.write(row)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}")
        if sample_fn is not None and info.is_main and _due(state.step, cfg.sample_every, last):
            calibrate()
            _run_sampling(state, sample_fn, run_dir, val_log)
        if _due(state.step, cfg.checkpoint_every, last):
            calibrate()
            _write_checkpoint(state, cfg, info, run_dir, len(dataset))
    bar.close()
    if state.bn_stats is not None:
        state.bn_stats.remove()
    if info.is_main and not ckpt.list_checkpoints(run_dir):
        calibrate()
        _write_checkpoint(state, cfg, info, run_dir, len(dataset))  # e.g. resumed at max_steps
    if tb is not None:
        tb.close()
    return state
