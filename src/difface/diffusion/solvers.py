"""Few-step samplers for DifFace's partial reverse process (start at t_start < T, not at pure noise), and
the sampler registry: `SOLVERS` (name -> solver step) and `SAMPLERS` (every --sampler name); which sampler a run
uses, from which timesteps, is settled by difface.plan.SamplingPlan.

They run on the *original* 1000-step chain: the estimate is diffused to `t_start` (400 by default,
the same state the official loop starts from) and the network is evaluated at `nfe` timesteps
t_start = tau_0 > tau_1 > ... > tau_{nfe-1} >= 0; the last update goes to the clean image
(abar = 1), which, as in the official loop's final step, returns the x0 prediction. "ddim" uses the
one DDIM update of difface.diffusion.sampling; "dpmpp2m" is DPM-Solver++(2M); "dpmpp2m_sde" is its stochastic
form (the SDE solver of DPM-Solver++, 2M), whose `eta` in [0, 1] means DDIM's (0: "dpmpp2m", 1: the full SDE);
"ddim_extrap" takes DDIM steps and ends on the last two x0 predictions extrapolated linearly in log-SNR to t = 0.

Adding a few-step sampler is one function and one entry: a step function with the `Solver` signature
below, and its name in `SOLVERS`; the CLI's --sampler choices, the app's menu and the options' checks
read the names from here (through difface.config).

Notation: alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from difface.diffusion.sampling import (
    Callback,
    Denoiser,
    DenoiserFactory,
    NoiseFn,
    Prediction,
    ddim_step,
)
from difface.diffusion.schedule import Diffusion
from difface.names import DEFAULT_NFE, OFFICIAL  # noqa: F401 (the sampler table's names: re-exported)

# One update of a few-step solver: x at abar a_now, the network's prediction there -> x at abar a_next
# (a_next = 1: the clean image). `state` is the solver's own memory between the steps of one run (a multistep
# method keeps its previous prediction there); noise_fn draws noise shaped like x (None: no noise source).
Solver = Callable[..., torch.Tensor]


def ddim(x: torch.Tensor, pred: Prediction, a_now: float, a_next: float, *, eta: float, noise_fn: NoiseFn | None,
         state: dict) -> torch.Tensor:
    """DDIM between consecutive timesteps, with `eta` noise (noise_fn: given whenever eta > 0, `solve` checks it;
    noise is drawn only on steps whose sigma > 0)."""
    sigma = eta * math.sqrt((1 - a_next) / (1 - a_now)) * math.sqrt(1 - a_now / a_next)
    return ddim_step(pred, a_now, a_next, eta, noise_fn(x) if sigma > 0 else None)


def dpmpp2m(x: torch.Tensor, pred: Prediction, a_now: float, a_next: float, *, eta: float, noise_fn: NoiseFn | None,
            state: dict) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in data prediction, deterministic (eta is not used);
    second order from the second step on."""
    x_new, h = _dpmpp2m(x, pred.x0, state.get("x0"), state.get("h"), a_now, a_next)
    state["x0"], state["h"] = pred.x0, h
    return x_new


def dpmpp2m_sde(x: torch.Tensor, pred: Prediction, a_now: float, a_next: float, *, eta: float,
                noise_fn: NoiseFn | None, state: dict) -> torch.Tensor:
    """DPM-Solver++(2M) SDE in data prediction (Lu et al. 2022): with h = lambda_next - lambda_now, D the 2M
    combination of this and the previous x0 prediction and s the share of the reverse SDE's noise,
        x_next = (sigma_next / sigma_now) e^(-s h) x + alpha_next (1 - e^(-(1 + s) h)) D
                 + sigma_next sqrt(1 - e^(-2 s h)) z.
    `eta` is DDIM's (DifFace's): over many small steps DDIM with eta adds eta^2 of the posterior's noise variance
    per step, the SDE with s adds about s of it, so s = eta^2 keeps the meaning of eta on a few large steps.
    eta 0 is dpmpp2m; eta 1 the full SDE (first order: the DDPM posterior, DDIM with eta 1). z comes from
    noise_fn (drawn only when eta > 0 and the step does not end at the clean image)."""
    eta = eta * eta  # s above
    d, h = _dpmpp2m_d(pred.x0, state.get("x0"), state.get("h"), a_now, a_next)
    state["x0"], state["h"] = pred.x0, h
    if not np.isfinite(h):
        return d
    sig_ratio = math.sqrt((1 - a_next) / (1 - a_now))
    out = sig_ratio * math.exp(-eta * h) * x + math.sqrt(a_next) * (-math.expm1(-(1 + eta) * h)) * d
    if eta > 0:
        out = out + math.sqrt(1 - a_next) * math.sqrt(-math.expm1(-2 * eta * h)) * noise_fn(x)
    return out


def ddim_extrap(x: torch.Tensor, pred: Prediction, a_now: float, a_next: float, *, eta: float,
                noise_fn: NoiseFn | None, state: dict) -> torch.Tensor:
    """DDIM (with `eta`) between the evaluations; the last update returns, instead of the last x0 prediction, the
    line through the last two predictions in log-SNR (lambda) continued to lambda_end, t = 0 of the chain:
        x0_end = x0_k + (lambda_end - lambda_k) / (lambda_k - lambda_{k-1}) (x0_k - x0_{k-1}),  clipped to [-1, 1].
    The few-step x0 predictions are smoother than the official loop's result (each averages over the noise left at
    its timestep); continuing their trend to the end of the chain restores the detail the last step would have
    added. With two evaluations at t and at the log-SNR midpoint between t and 0 the factor is 1: 2 x0_2 - x0_1.
    One evaluation (no previous prediction): the x0 prediction, as DDIM."""
    prev, lam_prev, lam_now = state.get("x0"), state.get("lam"), _lam(a_now)
    state["x0"], state["lam"] = pred.x0, lam_now
    if a_next < 1.0:
        return ddim(x, pred, a_now, a_next, eta=eta, noise_fn=noise_fn, state=state)
    if prev is None:
        return pred.x0
    factor = (_lam(state["abar_end"]) - lam_now) / (lam_now - lam_prev)
    return (pred.x0 + factor * (pred.x0 - prev)).clamp(-1.0, 1.0)


# The few-step samplers: name -> its step (the one table; SAMPLERS below is derived from it).
SOLVERS: dict[str, Solver] = {
    "ddim": ddim,
    "dpmpp2m": dpmpp2m,
    "dpmpp2m_sde": dpmpp2m_sde,
    "ddim_extrap": ddim_extrap,
}
SAMPLERS = (OFFICIAL, *SOLVERS)  # every sampler name (--sampler, the app's menu, SamplingOptions.sampler)


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
    """Integrate from x at timesteps[0] to the clean image with one network call per timestep, each update made by
    the solver `method` of SOLVERS.

    `denoiser(x, t)` takes original timesteps (use an EpsDenoiser over the un-respaced `base`). `callback` receives
    {"i", "t", "x", "pred", "sample"} after each step.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; choose from {', '.join(SOLVERS)}")
    if eta > 0 and noise_fn is None and method != "dpmpp2m":  # dpmpp2m is deterministic: it ignores eta
        raise ValueError("eta > 0 needs a noise source (noise_fn)")
    ac = base.alphas_cumprod
    step, state = SOLVERS[method], {"abar_end": float(ac[0])}  # abar at t = 0, where the chain ends
    abar = [float(ac[t]) for t in timesteps] + [1.0]
    for k, t in enumerate(timesteps):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        pred = denoiser(x, tt)
        x_new = step(x, pred, abar[k], abar[k + 1], eta=eta, noise_fn=noise_fn, state=state)
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


def _dpmpp2m_d(x0, prev_x0, prev_h, a_now: float, a_next: float):
    """The 2M combination D of this and the previous x0 prediction, and the step h in lambda."""
    h = _lam(a_next) - _lam(a_now)
    if prev_x0 is None or not np.isfinite(prev_h):
        return x0, h
    r = prev_h / h if np.isfinite(h) else 0.0
    return (x0 if r == 0.0 else (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0), h


def _dpmpp2m(x, x0, prev_x0, prev_h, a_now: float, a_next: float):
    """One DPM-Solver++(2M) step in data prediction; returns (x_next, h)."""
    d, h = _dpmpp2m_d(x0, prev_x0, prev_h, a_now, a_next)
    if not np.isfinite(h):  # to the clean image: sigma_next = 0 and the update returns D
        return d, h
    sig_ratio = math.sqrt((1 - a_next) / (1 - a_now))
    return sig_ratio * x + math.sqrt(a_next) * (-math.expm1(-h)) * d, h
