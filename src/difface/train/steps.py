"""The training steps: the only code that differs between prior, estimator and inpainter training.

A step function is `step(model, batch, step) -> StepOutput` for one micro-batch: `batch` is the
collated dict of difface.train.data.KeyedItems (tensors on the CPU), `step` the 1-based global
step. It returns the *sum* of the per-sample losses; the loop divides by the batch size, so
micro-batching and the number of processes do not change the gradient.

Per-sample randomness (timestep, noise) comes from generators keyed by (seed, step, slot), slot
being the sample's position in the global batch: a sample gets the same draws whatever the
number of processes or the micro-batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from difface.diffusion.losses import training_losses
from difface.diffusion.schedule import Diffusion
from difface.train.config import TimestepConfig


@dataclass
class StepOutput:
    """loss: scalar sum over the micro-batch of per-sample losses (with grad); metrics: detached sums."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


StepFn = Callable[[nn.Module, dict, int], StepOutput]


def sample_rng(seed: int, step: int, slot: int) -> np.random.Generator:
    """The generator of sample `slot` at global step `step`: default_rng([seed, step, slot])."""
    return np.random.default_rng([int(seed), int(step), int(slot)])


class TimestepSampler:
    """Draws training timesteps from the TimestepConfig mixture (uniform by default).

    p(t) = (1 - f) / (t_max + 1) + f / (m + 1) [t <= m], m = min(focus_t, t_max), f = focus_prob.
    """

    def __init__(self, cfg: TimestepConfig) -> None:
        t_max = cfg.steps - 1 if cfg.t_max is None else cfg.t_max
        m = min(cfg.focus_t, t_max)
        p = np.zeros(cfg.steps, dtype=np.float64)
        p[: t_max + 1] += (1.0 - cfg.focus_prob) / (t_max + 1)
        p[: m + 1] += cfg.focus_prob / (m + 1)
        self.probs = p / p.sum()
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator) -> int:
        return int(min(np.searchsorted(self._cdf, rng.random(), side="right"), len(self._cdf) - 1))


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def draw_timesteps_and_noise(
    sampler: TimestepSampler, seed: int, step: int, slots: torch.Tensor, shape: tuple[int, ...],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """t (B,) int64 and noise (B, *shape) float32 on `device`, sample b from its own keyed generator.

    The noise generator lives on `device` (CPU, CUDA), seeded from the sample's numpy generator.
    """
    ts, noises = [], []
    for slot in slots.tolist():
        rng = sample_rng(seed, step, slot)
        ts.append(sampler.draw(rng))
        g = torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**63 - 1)))
        noises.append(torch.randn(shape, generator=g, device=device, dtype=torch.float32))
    return torch.tensor(ts, dtype=torch.long, device=device), torch.stack(noises)


def make_diffusion_step(diffusion: Diffusion, sampler: TimestepSampler, seed: int) -> StepFn:
    """Hybrid loss (eps MSE + rescaled VLB, as the official prior) on batch["image"] (B, 3, H, W) in [-1, 1]."""

    def diffusion_step(model: nn.Module, batch: dict, step: int) -> StepOutput:
        dev = _model_device(model)
        x0 = batch["image"].to(dev, non_blocking=True)
        t, noise = draw_timesteps_and_noise(sampler, seed, step, batch["slot"], tuple(x0.shape[1:]), dev)
        losses = training_losses(model, diffusion, x0, t, noise)
        metrics = {k: v.detach().sum() for k, v in losses.items()}
        metrics["t"] = t.float().sum()
        return StepOutput(losses["loss"].sum(), metrics)

    return diffusion_step


def make_estimator_step(loss: str = "l1") -> StepFn:
    """Pixel loss of the estimator: per-sample mean |f(lq) - gt| (l1, official) or squared (l2).

    batch["lq"], batch["gt"]: (B, 3, H, W) in [0, 1].
    """
    if loss not in ("l1", "l2"):
        raise ValueError(f"unknown estimator loss {loss!r}; use l1 or l2")

    def estimator_step(model: nn.Module, batch: dict, step: int) -> StepOutput:
        dev = _model_device(model)
        lq = batch["lq"].to(dev, non_blocking=True)
        gt = batch["gt"].to(dev, non_blocking=True)
        diff = model(lq).float() - gt
        per_sample = (diff.abs() if loss == "l1" else diff.square()).flatten(1).mean(1)
        return StepOutput(per_sample.sum(), {"loss": per_sample.detach().sum()})

    return estimator_step


def weighted_pixel_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, hole_weight: float = 10.0,
                        loss: str = "l1") -> torch.Tensor:
    """Per-sample weighted pixel loss of the inpainter (the official LaMa trainer's) -> (B,).

    pred, gt: (B, 3, H, W); mask: (B, 1, H, W), 1 = missing. e = |pred - gt| (l1, official) or
    (pred - gt)^2 (l2); w = hole_weight * mask + (1 - mask); loss_b = sum_{c,h,w}(w e) / sum_{h,w} w.
    The numerator sums the 3 channels, the denominator the 1-channel weights (the official value is
    3x a weighted per-element mean). Official: one ratio over the whole micro-batch; here one per
    sample, so that the batch loss is a mean over samples like the other steps (equal when all
    masks in a batch have the same area).
    """
    d = pred.float() - gt.float()
    e = d.abs() if loss == "l1" else d.square()
    m = mask.float()
    w = hole_weight * m + (1.0 - m)
    return (w * e).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))


def make_inpainter_step(hole_weight: float = 10.0, loss: str = "l1") -> StepFn:
    """Weighted L1 (or L2) of the LaMa inpainter on batch["lq"] (B, 3, H, W) in [0, 1] with holes 0,
    batch["mask"] (B, 1, H, W) (1 = missing) and batch["gt"]; the network sees cat(lq, mask).

    Metrics (per-sample sums): loss, l1_hole (mean |error| over the missing pixels) and l1_known."""
    if loss not in ("l1", "l2"):
        raise ValueError(f"unknown inpainter loss {loss!r}; use l1 or l2")

    def inpainter_step(model: nn.Module, batch: dict, step: int) -> StepOutput:
        dev = _model_device(model)
        lq = batch["lq"].to(dev, non_blocking=True)
        gt = batch["gt"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        pred = model(torch.cat([lq, mask.to(lq.dtype)], dim=1)).float()
        per_sample = weighted_pixel_loss(pred, gt, mask, hole_weight, loss)
        with torch.no_grad():
            err = (pred - gt).abs().mean(dim=1, keepdim=True)
            hole = (err * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1)
            known = (err * (1 - mask)).sum(dim=(1, 2, 3)) / (1 - mask).sum(dim=(1, 2, 3)).clamp_min(1)
        return StepOutput(per_sample.sum(), {"loss": per_sample.detach().sum(), "l1_hole": hole.sum(),
                                             "l1_known": known.sum()})

    return inpainter_step
