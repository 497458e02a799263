"""Gaussian diffusion schedules (float64), timestep respacing and the forward process.

Conventions (as the official diffusion code): every schedule array is float64 numpy; a lookup indexes it with an integer
timestep tensor and *then* casts to float32 (`extract`), and all tensor arithmetic is float32. This
is what makes the official sampler reproducible bit for bit. Images live in [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch


def get_betas(schedule: str, steps: int = 1000) -> np.ndarray:
    """Beta schedule, float64 (steps,). "linear": iDDPM's scaled linear 1e-4..0.02; "cosine": iDDPM eq. 17."""
    if schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if schedule == "cosine":

        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)], dtype=np.float64
        )
    raise ValueError(f"unknown beta schedule {schedule!r} (use 'linear' or 'cosine')")


def space_timesteps(num_steps: int, spec: str | int) -> list[int]:
    """Original timesteps kept by a respacing spec (as the official `space_timesteps`), sorted ascending.

    "ddimN": range(0, num_steps, s) with the smallest stride s giving exactly N steps.
    "a,b,c" (or an int): that many steps per equal section, each spread with Python rounding.
    "" keeps all steps.
    """
    spec = str(spec).strip()
    if spec == "":
        return list(range(num_steps))
    if spec.startswith("ddim"):
        n = int(spec[len("ddim"):])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == n:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot create exactly {n} steps with an integer stride from {num_steps}")
    counts = [int(c) for c in spec.split(",")]
    size, extra = divmod(num_steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if section < count:
            raise ValueError(f"cannot divide a section of {section} steps into {count}")
        stride = 1 if count <= 1 else (section - 1) / (count - 1)
        kept += [start + round(stride * k) for k in range(count)]
        start += section
    return sorted(set(kept))


class Diffusion:
    """A (possibly respaced) discrete Gaussian diffusion with learned-range variance support.

    Args:
        betas: float64 (T,) betas of the chain actually walked (respaced when `timestep_map` is set).
        timestep_map: int64 (T,) original timestep of each index; what the network is called with.
    """

    def __init__(self, betas: np.ndarray, timestep_map: np.ndarray | None = None):
        b = np.asarray(betas, dtype=np.float64)
        self.betas = b
        self.num_timesteps = len(b)
        self.timestep_map = (
            np.arange(len(b), dtype=np.int64) if timestep_map is None else np.asarray(timestep_map, np.int64)
        )
        ac = np.cumprod(1.0 - b)
        self.alphas_cumprod = ac
        self.alphas_cumprod_prev = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        pv = b * (1.0 - self.alphas_cumprod_prev) / (1.0 - ac)
        self.posterior_variance = pv
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:])) if len(b) > 1 else np.log(pv)
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - b) / (1.0 - ac)

    @classmethod
    def create(cls, steps: int = 1000, schedule: str = "linear", respacing: str | int = "") -> Diffusion:
        """Build the chain DifFace uses: `create(1000, "linear", "ddim250")` for inference."""
        base = get_betas(schedule, steps)
        kept = space_timesteps(steps, respacing)
        if len(kept) == steps:
            d = cls(base)
        else:
            ac = np.cumprod(1.0 - base)
            last, new_betas = 1.0, []
            for s in kept:
                new_betas.append(1.0 - ac[s] / last)
                last = ac[s]
            d = cls(np.array(new_betas), np.array(kept, dtype=np.int64))
        d.source = (steps, schedule)
        return d

    def base(self) -> Diffusion:
        """The un-respaced chain this one was made from (itself when it is not respaced)."""
        source = getattr(self, "source", None)
        if np.array_equal(self.timestep_map, np.arange(self.num_timesteps)):
            return self
        if source is None:
            raise ValueError("this respaced chain was not made by Diffusion.create, so its base chain is unknown")
        return Diffusion.create(*source)

    # -- lookups ---------------------------------------------------------------------------------
    @staticmethod
    def extract(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] as float32, shaped (B, 1, 1, 1) to broadcast over `like` (index float64, then cast)."""
        v = torch.from_numpy(arr)[t.long().cpu()].float().to(like.device)
        return v.view(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced indices (B,) -> original timesteps (B,) int64 given to the network."""
        return torch.from_numpy(self.timestep_map)[t.long().cpu()].to(t.device)

    # -- forward process and parameterisation ---------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (x0, noise: (B, C, H, W); t: (B,))."""
        return self.extract(self.sqrt_alphas_cumprod, t, x0) * x0 + self.extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def predict_xstart(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps."""
        return self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = self.extract(self.posterior_mean_coef1, t, x_t) * x0 + self.extract(
            self.posterior_mean_coef2, t, x_t
        ) * x_t
        return (
            mean,
            self.extract(self.posterior_variance, t, x_t),
            self.extract(self.posterior_log_variance_clipped, t, x_t),
        )

    def learned_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """iDDPM eq. 15: log var = frac * log(beta_t) + (1 - frac) * log(beta~_t), frac = (v + 1) / 2."""
        min_log = self.extract(self.posterior_log_variance_clipped, t, v)
        max_log = self.extract(np.log(self.betas), t, v)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log
