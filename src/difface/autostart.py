"""`--start-step auto`: a start step per image, from how much the estimator had to change it.

DifFace diffuses the estimate f(y) to step N so that the noise added there covers the estimator's
error (the paper's error contraction: at N the prior can no longer tell the estimate's error from
its own noise, and the reverse process replaces it with what faces look like). Too small an N
leaves the error in place; too large an N replaces the person. So N should grow with the error:

    e(y)   = rms(f(y) - y) * 2          how far the estimate moved from the input, in [-1, 1] units
    ê(y)   = scale * e(y) + offset      the predicted error of the estimate (a linear fit, see below)
    N(y)   = the first respaced step whose noise-to-signal ratio sqrt((1 - abar) / abar) >=
             kappa * max(ê - floor, 0), at most the step of t_cap (and of the prior's trained range)

Mild damage barely moves the estimate, so it gets little diffusion; severe damage gets more.
`floor` is the error the prior cannot take away because its own sampling adds as much: a predicted
error at or below it gives N = 0 (the estimate is returned), as diffusing a nearly clean face only
adds the prior's error. The fit (scale, offset), kappa and floor are calibrated per model on
degraded faces of mixed severity (scripts/evaluations/eval_autostart.py) and stored in the estimator's metadata
(`difface.autostart`); models without a calibration use scale 1, offset 0, kappa 1, floor 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AutoStart:
    """The rule's constants (module docstring): ê = scale * e + offset; N: ratio >= kappa * (ê - floor);
    t <= t_cap."""

    scale: float = 1.0
    offset: float = 0.0
    kappa: float = 1.0
    t_cap: int = 400
    floor: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> AutoStart:
        if not text:
            return cls()
        d = json.loads(text)
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in d.items() if k in cls.__dataclass_fields__})


def estimate_change(y: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """e(y): RMS of (estimate - input) per image in [-1, 1] units; y, est (B, 3, S, S) in [0, 1] -> (B,)."""
    return 2.0 * (est.float() - y.float()).square().mean(dim=(1, 2, 3)).sqrt()


def steps_for_error(diffusion, err: torch.Tensor | np.ndarray, rule: AutoStart, t_max: int | None = None
                    ) -> list[int]:
    """Respaced start steps for predicted errors `err` (B,) on `diffusion` (see the module docstring)."""
    ac = diffusion.alphas_cumprod
    ratio = np.sqrt((1.0 - ac) / ac)  # increasing in the step
    top_t = rule.t_cap if t_max is None else min(rule.t_cap, t_max)
    allowed = np.flatnonzero(diffusion.timestep_map <= top_t)
    top = int(allowed[-1]) if len(allowed) else 0
    out = []
    for e in np.asarray(err, np.float64).reshape(-1):
        need = rule.kappa * max(float(e) - rule.floor, 0.0)
        k = int(np.searchsorted(ratio, need, side="left")) if math.isfinite(need) else top
        out.append(min(k, top))
    return out
