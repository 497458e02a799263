"""Few-step solvers against closed forms: with the exact denoiser of Gaussian data, the probability-flow
ODE from t to 0 is known, so each solver's error can be measured, not just its output shape."""

import math

import pytest
import torch

from difface.diffusion import Diffusion, EpsDenoiser, solvers
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


def test_sampler_names_come_from_the_one_table():
    """Every list of sampler names (options, CLI choices) is the registry's: SAMPLERS = official + SOLVERS."""
    from difface import config
    from difface.cli import _command_parser, build_parser

    assert solvers.SAMPLERS == ("official", "ddim", "dpmpp2m", "dpmpp2m_sde") == ("official", *solvers.SOLVERS)
    assert config.SAMPLERS is solvers.SAMPLERS
    restore = _command_parser(build_parser(["restore"]), ["restore"])
    sampler_arg = next(a for a in restore._actions if "--sampler" in a.option_strings)
    assert list(sampler_arg.choices) == list(solvers.SAMPLERS)


def test_a_new_sampler_is_one_function_and_one_entry(setup, monkeypatch, small_models):
    """A step function entered in SOLVERS is a sampler: solve and DifFace's sampling plans run it."""
    from difface.core import DifFace

    base, den, x = setup
    calls = []

    def halfway_ddim(x, pred, a_now, a_next, *, eta, noise_fn, state):
        calls.append(a_next)
        return solvers.ddim(x, pred, a_now, a_next, eta=eta, noise_fn=noise_fn, state=state)

    monkeypatch.setitem(solvers.SOLVERS, "mine", halfway_ddim)
    ts = solver_timesteps(400, 5)
    ref = solve(den, base, x, ts, method="ddim")
    assert torch.equal(solve(den, base, x, ts, method="mine"), ref) and len(calls) == 5
    model = DifFace.from_modules(*small_models)
    n = model.step_for_t(400)
    sampler = model.plan(start_step=n, eta=0.0, sampler="mine", nfe=5).sampler_at(model, n)
    assert sampler.timesteps == tuple(ts) and sampler.method == "mine"
    assert torch.equal(sampler(lambda d: den, x, noise_fn=None), ref) and len(calls) == 10
    with pytest.raises(ValueError, match="sampler must be one of official, ddim, dpmpp2m, dpmpp2m_sde, mine"):
        model.plan(start_step=n, sampler="theirs")
