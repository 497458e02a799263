"""Few-step solvers against closed forms: with the exact denoiser of Gaussian data, the probability-flow
ODE from t to 0 is known, so each solver's error can be measured, not just its output shape."""

import math

import pytest
import torch

from difface.diffusion import Diffusion, EpsDenoiser
from difface.diffusion.solvers import solve, solver_timesteps

M, S = 0.2, 0.3  # data distribution N(M, S^2) per pixel


class GaussianOracle(torch.nn.Module):
    """eps prediction of the exact posterior mean for N(M, S^2) data (called with original timesteps)."""

    def __init__(self, base: Diffusion):
        super().__init__()
        self.ac = torch.from_numpy(base.alphas_cumprod)

    def forward(self, x, t):
        a = self.ac[t].float().view(-1, 1, 1, 1)
        al, sg = a.sqrt(), (1 - a).sqrt()
        x0 = M + al * S**2 / (a * S**2 + 1 - a) * (x - al * M)
        eps = (x - al * x0) / sg
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


def exact_flow(x, a):
    """The probability-flow ODE map from abar = a to the clean image for N(M, S^2) data."""
    return M + S * (x - math.sqrt(a) * M) / math.sqrt(a * S**2 + 1 - a)


@pytest.fixture(scope="module")
def setup():
    base = Diffusion.create(1000, "linear", "")
    den = EpsDenoiser(GaussianOracle(base), base, clip=False)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    return base, den, x


def test_timesteps():
    assert solver_timesteps(400, 4) == [400, 300, 200, 100]
    assert solver_timesteps(400, 1) == [400]
    with pytest.raises(ValueError):
        solver_timesteps(3, 10)


@pytest.mark.parametrize("method", ["ddim", "dpmpp2m"])
def test_solvers_converge_to_the_exact_flow(setup, method):
    base, den, x = setup
    target = exact_flow(x, float(base.alphas_cumprod[400]))
    errs = [(solve(den, base, x, solver_timesteps(400, n), method=method) - target).abs().max().item()
            for n in (5, 20, 100)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < {"ddim": 0.02, "dpmpp2m": 0.002}[method]  # first vs second order at 100 evaluations


def test_second_order_beats_ddim_at_few_steps(setup):
    base, den, x = setup
    target = exact_flow(x, float(base.alphas_cumprod[400]))
    ts = solver_timesteps(400, 20)
    e_ddim = (solve(den, base, x, ts, method="ddim") - target).abs().max().item()
    e_dpm = (solve(den, base, x, ts, method="dpmpp2m") - target).abs().max().item()
    assert e_dpm < 0.5 * e_ddim


def test_ddim_with_noise_needs_a_noise_source(setup):
    base, den, x = setup
    with pytest.raises(ValueError, match="noise"):
        solve(den, base, x, [400, 200], method="ddim", eta=1.0)
    with pytest.raises(ValueError, match="unknown solver"):
        solve(den, base, x, [400], method="euler")
