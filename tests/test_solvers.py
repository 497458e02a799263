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

    assert solvers.SAMPLERS == ("official", "ddim", "dpmpp2m", "dpmpp2m_sde", "ddim_extrap") == \
        ("official", *solvers.SOLVERS)
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
    with pytest.raises(ValueError, match="sampler must be one of official, ddim, dpmpp2m, dpmpp2m_sde, ddim_extrap, "
                                         "mine"):
        model.plan(start_step=n, sampler="theirs")


class LinearInLogSNR(torch.nn.Module):
    """A network whose clipped x0 prediction at timestep t is A + B * lambda_t (lambda = log(alpha / sigma)):
    the x0 predictions lie on a line in log-SNR, so extrapolating the last two to t = 0 gives A + B * lambda_0."""

    A, B = 0.1, 0.05

    def __init__(self, base: Diffusion):
        super().__init__()
        self.ac = torch.from_numpy(base.alphas_cumprod)

    def forward(self, x, t):
        a = self.ac[t].float().view(-1, 1, 1, 1)
        x0 = self.A + self.B * 0.5 * torch.log(a / (1 - a))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)


def test_ddim_extrap_continues_the_x0_predictions_to_t0(setup):
    base = setup[0]
    den = EpsDenoiser(LinearInLogSNR(base), base, clip=True)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    ac = base.alphas_cumprod
    lam = [0.5 * math.log(float(ac[t]) / (1 - float(ac[t]))) for t in (0, 100, 400)]
    end = LinearInLogSNR.A + LinearInLogSNR.B * lam[0]  # 0.33: the line at t = 0, beyond both predictions
    out = solve(den, base, x, [400, 100], method="ddim_extrap")
    assert torch.allclose(out, torch.full_like(out, end), atol=1e-5)
    plain = solve(den, base, x, [400, 100], method="ddim")  # DDIM ends on the last prediction, at t = 100
    assert torch.allclose(plain, torch.full_like(out, LinearInLogSNR.A + LinearInLogSNR.B * lam[1]), atol=1e-5)
    # at the log-SNR midpoint of t = 400 and t = 0 (t = 40 on this chain) the factor is 1: 2 x0_2 - x0_1
    mid = (lam[2] + lam[0]) / 2
    t_mid = min(range(400), key=lambda t: abs(0.5 * math.log(float(ac[t]) / (1 - float(ac[t]))) - mid))
    assert t_mid == 40
    one = solve(den, base, x, [400], method="ddim_extrap")  # one evaluation: nothing to extrapolate from
    assert torch.allclose(one, torch.full_like(one, LinearInLogSNR.A + LinearInLogSNR.B * lam[2]), atol=1e-5)


def test_ddim_extrap_stays_in_range_and_draws_noise_only_between_evaluations(setup):
    base = setup[0]
    den = EpsDenoiser(GaussianOracle(base), base, clip=True)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 3
    draws = []

    def noise(v):
        draws.append(v.shape)
        return torch.randn(v.shape, generator=torch.Generator().manual_seed(len(draws)))

    preds = []
    out = solve(den, base, x, [400, 40], method="ddim_extrap", eta=0.5, noise_fn=noise,
                callback=lambda d: preds.append(d["pred"].x0))
    assert len(draws) == 1  # 400 -> 40 draws noise; the end (the extrapolation) does not
    ac = base.alphas_cumprod
    lam = [0.5 * math.log(float(ac[t]) / (1 - float(ac[t]))) for t in (0, 40, 400)]
    raw = preds[1] + (lam[0] - lam[1]) / (lam[1] - lam[2]) * (preds[1] - preds[0])
    assert raw.abs().max() > 1.0  # the line leaves [-1, 1] here; the result is clipped like every x0 prediction
    assert torch.allclose(out, raw.clamp(-1, 1), atol=1e-6)
