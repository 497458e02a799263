"""Reverse-process samplers as pure functions of (denoiser, diffusion, x, indices).

Notation: x = x_t (B, C, H, W) in diffusion space; t = respaced index (B,) int64; eps = the raw network
noise prediction; x0 = the clipped prediction of the clean image; abar = alphas_cumprod[t],
abar_prev = alphas_cumprod_prev[t].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from difface.diffusion.schedule import Diffusion

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Prediction:
    """What one network evaluation says about x_t: raw eps, clipped x0, and the raw output."""

    eps: torch.Tensor
    x0: torch.Tensor
    out: torch.Tensor


class EpsDenoiser:
    """Wraps an eps + learned-variance network: maps respaced t to original steps, splits channels.

    `autocast` is a context factory (e.g. `difface.device.autocast(dev, torch.bfloat16)`); the
    network output is cast back to float32 so the sampler arithmetic stays float32.
    """

    def __init__(self, model: nn.Module, diffusion: Diffusion, clip: bool = True, autocast=None):
        self.model, self.diffusion, self.clip, self.autocast = model, diffusion, clip, autocast

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        mt = self.diffusion.model_timesteps(t)
        if self.autocast is not None:
            with self.autocast():
                out = self.model(x.to(x.dtype), mt)
        else:
            out = self.model(x, mt)
        out = out.float()
        c = x.shape[1]
        eps = out[:, :c]
        x0 = self.diffusion.predict_xstart(x, t, eps)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        return Prediction(eps=eps, x0=x0, out=out)


def ddim_step(
    diffusion: Diffusion, x: torch.Tensor, t: torch.Tensor, pred: Prediction, eta: float, noise: torch.Tensor
) -> torch.Tensor:
    """DDIM update (Song et al. eq. 12) with DifFace's choice of the *raw* eps (SPEC 1.8).

    sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)
    x_prev = x0 * sqrt(abar_prev) + sqrt(1 - abar_prev - sigma^2) * eps + [t > 0] * sigma * noise
    """
    ab = diffusion.extract(diffusion.alphas_cumprod, t, x)
    abp = diffusion.extract(diffusion.alphas_cumprod_prev, t, x)
    sigma = eta * torch.sqrt((1 - abp) / (1 - ab)) * torch.sqrt(1 - ab / abp)
    mean = pred.x0 * torch.sqrt(abp) + torch.sqrt(1 - abp - sigma**2) * pred.eps
    nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
    return mean + nonzero * sigma * noise


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
    denoiser: Callable[[torch.Tensor, torch.Tensor], Prediction],
    diffusion: Diffusion,
    x: torch.Tensor,
    start: int,
    *,
    eta: float = 0.0,
    method: str = "ddim",
    noise_fn: NoiseFn,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Run respaced indices start-1, ..., 0 from x (SPEC 1.9: the first call uses index start-1).

    One noise draw per step, after the network call (also on the last step, where it is unused),
    as the official loop does. `callback` receives {"i", "x", "pred", "sample"} after each step.
    """
    for i in reversed(range(start)):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        pred = denoiser(x, t)
        noise = noise_fn(x)
        if method == "ddim":
            x_new = ddim_step(diffusion, x, t, pred, eta, noise)
        elif method == "ddpm":
            x_new = ddpm_step(diffusion, x, t, pred, noise)
        else:
            raise ValueError(f"unknown sampling method {method!r}")
        if callback is not None:
            callback({"i": i, "x": x, "pred": pred, "sample": x_new})
        x = x_new
    return x


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
