"""Improved-DDPM training objective for eps prediction with learned-range variance (hybrid loss).

loss = mse(eps, eps_hat) + L_vb, where L_vb (bits/dim) uses a stop-gradient on eps_hat so that only
the variance channels receive its gradient (Nichol & Dhariwal 2021, section 3.1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from difface.diffusion.schedule import Diffusion


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Tanh approximation of the standard normal CDF."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of x in [-1, 1] (256 bins of width 2/255) under a discretised Gaussian (nats)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def vb_terms_bpd(
    diffusion: Diffusion, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Per-sample variational-bound term in bits/dim: decoder NLL at t = 0, KL to the posterior otherwise."""
    c = x0.shape[1]
    eps, v = out[:, :c], out[:, c:]
    true_mean, _, true_logvar = diffusion.q_posterior(x0, x_t, t)
    pred_x0 = diffusion.predict_xstart(x_t, t, eps)
    model_mean, _, _ = diffusion.q_posterior(pred_x0, x_t, t)
    model_logvar = diffusion.learned_log_variance(v, t)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
    nll = mean_flat(nll) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def training_losses(
    model: nn.Module, diffusion: Diffusion, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Hybrid loss per sample. x0: (B, C, H, W) in [-1, 1]; t: (B,) indices; noise like x0.

    Returns {"mse", "vb", "loss"}, each (B,); vb is scaled by T/1000 (RESCALED_MSE, = 1 for T = 1000).
    """
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, diffusion.model_timesteps(t)).float()
    c = x0.shape[1]
    frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
    vb = vb_terms_bpd(diffusion, frozen, x0, x_t, t) * (diffusion.num_timesteps / 1000.0)
    mse = mean_flat((noise - out[:, :c]) ** 2)
    return {"mse": mse, "vb": vb, "loss": mse + vb}
