"""Diffusion maths: schedules and respacing, samplers (pure functions) and training losses."""

from difface.diffusion.losses import training_losses
from difface.diffusion.sampling import EpsDenoiser, ddim_step, ddpm_step, generator_noise, sample_loop
from difface.diffusion.schedule import Diffusion, get_betas, space_timesteps

__all__ = [
    "Diffusion", "EpsDenoiser", "ddim_step", "ddpm_step", "generator_noise", "get_betas", "sample_loop",
    "space_timesteps", "training_losses",
]
