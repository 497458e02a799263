"""Few-step samplers for DifFace's partial reverse process (start at t_start < T, not at pure noise).

They run on the *original* 1000-step chain: the estimate is diffused to `t_start` (400 by default,
the same state the official loop starts from) and the network is evaluated at `nfe` timesteps
t_start = tau_0 > tau_1 > ... > tau_{nfe-1} >= 0; the last update goes to the clean image
(abar = 1), which, as in the official loop's final step, returns the x0 prediction. "ddim" uses the
one DDIM update of difface.diffusion.sampling; "dpmpp2m" is DPM-Solver++(2M).

Notation: alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from difface.diffusion.sampling import Callback, Denoiser, DenoiserFactory, NoiseFn, ddim_step
from difface.diffusion.schedule import Diffusion

SOLVERS = ("ddim", "dpmpp2m")


def solver_timesteps(t_start: int, nfe: int) -> list[int]:
    """nfe evaluation timesteps, evenly spaced from t_start down (t_start included, 0 excluded unless nfe
    is t_start + 1 or more), e.g. (400, 4) -> [400, 300, 200, 100]."""
    if nfe < 1:
        raise ValueError(f"nfe must be at least 1, got {nfe}")
    if nfe > t_start + 1:
        raise ValueError(f"nfe {nfe} evaluations do not fit between t={t_start} and 0 (at most {t_start + 1})")
    ts = [int(round(t_start * (1 - k / nfe))) for k in range(nfe)]
    for k in range(1, nfe):  # where rounding collides (spacing near 1), step down by one, leaving room below
        ts[k] = max(min(ts[k], ts[k - 1] - 1), nfe - 1 - k)
    return ts


def solve(
    denoiser: Denoiser,
    base: Diffusion,
    x: torch.Tensor,
    timesteps: list[int] | tuple[int, ...],
    *,
    method: str = "dpmpp2m",
    eta: float = 0.0,
    noise_fn: NoiseFn | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Integrate from x at timesteps[0] to the clean image with one network call per timestep.

    `denoiser(x, t)` takes original timesteps (use an EpsDenoiser over the un-respaced `base`).
    "ddim": DDIM between consecutive timesteps, with `eta` noise (needs noise_fn when eta > 0; noise is
    drawn only on steps whose sigma > 0). "dpmpp2m": DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2),
    deterministic; second order from the second step on.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; choose from {', '.join(SOLVERS)}")
    ac = base.alphas_cumprod
    abar = [float(ac[t]) for t in timesteps] + [1.0]
    prev_x0, prev_h = None, None
    for k, t in enumerate(timesteps):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        pred = denoiser(x, tt)
        a_now, a_next = abar[k], abar[k + 1]
        if method == "ddim":
            sigma = eta * math.sqrt((1 - a_next) / (1 - a_now)) * math.sqrt(1 - a_now / a_next)
            if sigma > 0 and noise_fn is None:
                raise ValueError("eta > 0 needs a noise source")
            x_new = ddim_step(pred, a_now, a_next, eta, noise_fn(x) if sigma > 0 else None)
        else:
            x_new, h = _dpmpp2m(x, pred.x0, prev_x0, prev_h, a_now, a_next)
            prev_x0, prev_h = pred.x0, h
        if callback is not None:
            callback({"i": k, "t": t, "x": x, "pred": pred, "sample": x_new})
        x = x_new
    return x


@dataclass(frozen=True)
class FewStepSampler:
    """`solve` as a sampler (difface.diffusion.sampling.Sampler) on the un-respaced chain `base`."""

    base: Diffusion
    timesteps: tuple[int, ...]
    method: str = "ddim"
    eta: float = 0.0

    def __call__(self, denoiser_for: DenoiserFactory, x: torch.Tensor, *, noise_fn: NoiseFn,
                 callback: Callback | None = None) -> torch.Tensor:
        return solve(denoiser_for(self.base), self.base, x, self.timesteps, method=self.method, eta=self.eta,
                     noise_fn=noise_fn, callback=callback)


def _lam(a: float) -> float:
    return 0.5 * math.log(a / (1 - a)) if a < 1 else math.inf


def _dpmpp2m(x, x0, prev_x0, prev_h, a_now: float, a_next: float):
    """One DPM-Solver++(2M) step in data prediction; returns (x_next, h)."""
    h = _lam(a_next) - _lam(a_now)
    if prev_x0 is None or not np.isfinite(prev_h):
        d = x0
    else:
        r = prev_h / h if np.isfinite(h) else 0.0
        d = x0 if r == 0.0 else (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
    if not np.isfinite(h):  # to the clean image: sigma_next = 0 and the update returns D
        return d, h
    sig_ratio = math.sqrt((1 - a_next) / (1 - a_now))
    return sig_ratio * x + math.sqrt(a_next) * (-math.expm1(-h)) * d, h
