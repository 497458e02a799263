"""Reverse-process samplers: one DDIM update, the official respaced loop and the few-step solvers.

Notation: x = x_t (B, C, H, W) in diffusion space [-1, 1]; eps = the raw network noise prediction;
x0 = the clipped (and, for inpainting, refined) prediction of the clean image; abar = alphas_cumprod.

A *sampler* is a callable `sampler(denoiser_for, x, noise_fn=..., callback=...) -> x_0`: it receives
the start state and a factory `denoiser_for(diffusion) -> Denoiser` (the network wrapped for the
chain the sampler indexes), and returns the clean sample. This module holds the official loop
(`RespacedSampler`); the few-step solvers and the registry of sampler names (`SAMPLERS`) are in
difface.diffusion.solvers; difface.plan.SamplingPlan builds the one sampler a run uses, and `difface.core.DifFace`
takes any sampler, so the restoration code has no sampler branches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from difface.diffusion.schedule import Diffusion

NoiseFn = Callable[[torch.Tensor], torch.Tensor]
X0Fn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


@dataclass
class Prediction:
    """What one network evaluation says about x_t: raw eps, clipped x0, and the raw output."""

    eps: torch.Tensor
    x0: torch.Tensor
    out: torch.Tensor


class EpsDenoiser:
    """Wraps an eps + learned-variance network for one chain: maps its indices to original steps and
    splits the output channels.

    `autocast` is a context factory (e.g. `difface.device.autocast(dev, torch.bfloat16)`); the network
    output is cast back to float32 so the sampler arithmetic stays float32. `x0_fn` refines the
    clipped x0 prediction (inpainting re-imposes the known pixels, as `_refine_xstart`); its result is clipped again.
    """

    def __init__(self, model: nn.Module, diffusion: Diffusion, clip: bool = True, autocast=None,
                 x0_fn: X0Fn | None = None):
        self.model, self.diffusion, self.clip, self.autocast, self.x0_fn = model, diffusion, clip, autocast, x0_fn

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        mt = self.diffusion.model_timesteps(t)
        if self.autocast is not None:
            with self.autocast():
                out = self.model(x, mt)
        else:
            out = self.model(x, mt)
        out = out.float()
        c = x.shape[1]
        eps = out[:, :c]
        x0 = self.diffusion.predict_xstart(x, t, eps)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        if self.x0_fn is not None:
            x0 = self.x0_fn(x0)
            if self.clip:
                x0 = x0.clamp(-1, 1)
        return Prediction(eps=eps, x0=x0, out=out)


Denoiser = Callable[[torch.Tensor, torch.Tensor], Prediction]
DenoiserFactory = Callable[[Diffusion], Denoiser]


def ddim_step(pred: Prediction, abar, abar_prev, eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """The DDIM update (Song et al. eq. 12) with DifFace's *raw* eps (the official `ddim_sample`); the only one here.

    sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)
    x_prev = x0 sqrt(abar_prev) + sqrt(1 - abar_prev - sigma^2) eps + sigma noise
    abar / abar_prev: float32 tensors broadcastable to x (the official loop: float32 arithmetic, as the
    reference) or Python floats (the few-step solvers: float64 coefficients). noise None: no noise term.
    At abar_prev = 1 (the last step) sigma = 0 and the result is exactly x0.
    """
    if isinstance(abar, torch.Tensor):
        sqrt, relu = torch.sqrt, (lambda v: v.clamp(min=0))
    else:
        sqrt, relu = math.sqrt, (lambda v: max(v, 0.0))
    sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)
    out = pred.x0 * sqrt(abar_prev) + sqrt(relu(1 - abar_prev - sigma**2)) * pred.eps
    return out if noise is None else out + sigma * noise


def ddpm_step(
    diffusion: Diffusion, x: torch.Tensor, t: torch.Tensor, pred: Prediction, noise: torch.Tensor
) -> torch.Tensor:
    """Ancestral step: posterior mean of (x0, x_t) plus exp(log_var / 2) noise, learned-range variance."""
    mean, _, _ = diffusion.q_posterior(pred.x0, x, t)
    c = x.shape[1]
    log_var = diffusion.learned_log_variance(pred.out[:, c:], t)
    nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
    return mean + nonzero * torch.exp(0.5 * log_var) * noise


def sample_loop(
    denoiser: Denoiser,
    diffusion: Diffusion,
    x: torch.Tensor,
    start: int,
    *,
    eta: float = 0.0,
    method: str = "ddim",
    noise_fn: NoiseFn,
    callback: Callback | None = None,
) -> torch.Tensor:
    """The official loop: respaced indices start-1, ..., 0 from x (as officially: the first call uses index start-1).

    One noise draw per step, after the network call (also on the last step, where it is unused),
    as the official loop does. `callback` receives {"i", "x", "pred", "sample"} after each step.
    """
    if method not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampling method {method!r}; use ddim or ddpm")
    for i in reversed(range(start)):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        pred = denoiser(x, t)
        noise = noise_fn(x)
        if method == "ddim":
            ab = diffusion.extract(diffusion.alphas_cumprod, t, x)
            abp = diffusion.extract(diffusion.alphas_cumprod_prev, t, x)
            x_new = ddim_step(pred, ab, abp, eta, noise)
        else:
            x_new = ddpm_step(diffusion, x, t, pred, noise)
        if callback is not None:
            callback({"i": i, "x": x, "pred": pred, "sample": x_new})
        x = x_new
    return x


class Sampler(Protocol):
    """Runs the reverse process from a start state x (B, C, H, W) to the clean sample."""

    def __call__(self, denoiser_for: DenoiserFactory, x: torch.Tensor, *, noise_fn: NoiseFn,
                 callback: Callback | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class RespacedSampler:
    """The official DifFace loop on a respaced chain: `start` network evaluations (DDIM or ancestral)."""

    diffusion: Diffusion
    start: int
    eta: float = 0.0
    method: str = "ddim"

    def __call__(self, denoiser_for: DenoiserFactory, x: torch.Tensor, *, noise_fn: NoiseFn,
                 callback: Callback | None = None) -> torch.Tensor:
        return sample_loop(denoiser_for(self.diffusion), self.diffusion, x, self.start, eta=self.eta,
                           method=self.method, noise_fn=noise_fn, callback=callback)


def generator_noise(generators: Sequence[torch.Generator]) -> NoiseFn:
    """Noise source drawing sample b of every batch from its own CPU generator `generators[b]`.

    This makes a result depend only on its own seed, not on batch size or position.
    """

    def draw(x: torch.Tensor) -> torch.Tensor:
        if len(generators) != x.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
        n = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generators])
        return n.to(device=x.device, dtype=x.dtype)

    return draw


def replay_noise(tensors: Sequence[torch.Tensor]) -> NoiseFn:
    """Noise source returning pre-recorded tensors in order (for golden-vector replays)."""
    it = iter(tensors)

    def draw(x: torch.Tensor) -> torch.Tensor:
        return next(it).to(device=x.device, dtype=x.dtype)

    return draw
