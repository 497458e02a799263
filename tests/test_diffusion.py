import math

import numpy as np
import pytest
import torch

from difface.diffusion import Diffusion, get_betas, space_timesteps, training_losses
from difface.diffusion.losses import approx_standard_normal_cdf, normal_kl
from difface.diffusion.sampling import Prediction, ddim_step

from conftest import golden


def test_ddim250_keeps_every_fourth_step():
    assert space_timesteps(1000, "ddim250") == list(range(0, 1000, 4))
    assert space_timesteps(1000, "ddim100") == list(range(0, 1000, 10))


def test_section_count_spacing_matches_spec_examples():
    kept, ddim = space_timesteps(1000, "250"), space_timesteps(1000, "ddim250")
    assert len(kept) == 250
    assert kept[:42] == ddim[:42]  # the two sets agree up to index 41 ...
    assert (kept[42], ddim[42]) == (169, 168)  # ... and then differ (as the official `space_timesteps`)
    assert (kept[99], ddim[99]) == (397, 396)
    assert (kept[100], ddim[100]) == (401, 400)
    assert (kept[119], ddim[119]) == (477, 476)
    assert (kept[120], ddim[120]) == (481, 480)
    assert (kept[-1], ddim[-1]) == (999, 996)
    assert space_timesteps(1000, "") == list(range(1000))
    # hand-computed: strides 49/9 and 49/4 with Python (banker's) rounding, second section offset 50
    assert space_timesteps(100, "10,5") == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49, 50, 62, 74, 87, 99]


def test_linear_schedule_values():
    b = get_betas("linear", 1000)
    assert b[0] == 1e-4 and b[-1] == 0.02 and b.dtype == np.float64
    ac = np.cumprod(1 - b)
    for t, v in [(396, 0.199923), (400, 0.193572), (476, 0.098613), (480, 0.094869)]:
        assert ac[t] == pytest.approx(v, abs=1e-6)
    assert ac[999] == pytest.approx(4.0358e-5, rel=1e-4)


def test_respaced_chain_matches_golden_and_original_cumprod():
    g = golden("sampler_small")
    d = Diffusion.create(1000, "linear", "ddim250")
    np.testing.assert_array_equal(d.timestep_map, g["timestep_map"])
    np.testing.assert_array_equal(d.alphas_cumprod, g["alphas_cumprod"])
    ac = np.cumprod(1 - get_betas("linear", 1000))
    np.testing.assert_allclose(d.alphas_cumprod, ac[::4], rtol=1e-12)
    assert d.betas[0] == pytest.approx(1e-4)
    # start step 100 on ddim250 diffuses to original timestep 400
    x0, noise = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    xt = d.q_sample(x0, torch.tensor([100]), noise)
    assert xt.item() == pytest.approx(0.439968, abs=1e-6)


def test_cosine_schedule_is_bounded_and_increasing():
    b = get_betas("cosine", 1000)
    assert (b > 0).all() and (b <= 0.999).all() and (np.diff(b[:-1]) > 0).all()


def test_training_loss_matches_golden(small_models):
    g = golden("training_loss_small")
    d = Diffusion.create(1000, "linear", "")
    with torch.no_grad():
        r = training_losses(small_models[0], d, *(torch.from_numpy(g[k]) for k in ("x_start", "t", "noise")))
    for k in ("mse", "vb", "loss"):
        np.testing.assert_allclose(r[k].numpy(), g[k], atol=1e-4, rtol=0)


def test_vb_gradient_reaches_only_variance_channels(small_models):
    unet = small_models[0]
    d = Diffusion.create(1000, "linear", "")
    x0 = torch.zeros(1, 3, 64, 64)
    out = torch.randn(1, 6, 64, 64, requires_grad=True)

    class Fixed(torch.nn.Module):
        def forward(self, x, t):
            return out

    r = training_losses(Fixed(), d, x0, torch.tensor([300]), torch.randn(1, 3, 64, 64))
    r["vb"].sum().backward()
    assert out.grad[:, :3].abs().max() == 0 and out.grad[:, 3:].abs().max() > 0
    del unet


def test_kl_and_cdf_against_closed_forms():
    m1, lv1, m2, lv2 = torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(-0.2), torch.tensor(0.5)
    s1, s2 = math.exp(-0.5), math.exp(0.25)
    expected = math.log(s2 / s1) + (s1**2 + 0.5**2) / (2 * s2**2) - 0.5
    assert normal_kl(m1, lv1, m2, lv2).item() == pytest.approx(expected, rel=1e-6)
    for x in (-2.0, 0.0, 0.7):
        exact = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        assert approx_standard_normal_cdf(torch.tensor(x)).item() == pytest.approx(exact, abs=2e-3)


def test_ddim_eta0_is_deterministic_and_last_step_returns_x0():
    d = Diffusion.create(1000, "linear", "ddim250")
    x = torch.randn(2, 3, 4, 4)
    pred = Prediction(eps=torch.randn(2, 3, 4, 4), x0=torch.rand(2, 3, 4, 4) * 2 - 1, out=None)

    def step(t, eta):
        tt = torch.tensor([t, t])
        ab, abp = d.extract(d.alphas_cumprod, tt, x), d.extract(d.alphas_cumprod_prev, tt, x)
        return ddim_step(pred, ab, abp, eta, torch.randn(2, 3, 4, 4))

    assert torch.equal(step(50, 0.0), step(50, 0.0))
    torch.testing.assert_close(step(0, 1.0), pred.x0, atol=0, rtol=0)
    # the same update with Python-float coefficients (the few-step solvers) agrees to float rounding
    ab, abp = float(d.alphas_cumprod[50]), float(d.alphas_cumprod_prev[50])
    torch.testing.assert_close(ddim_step(pred, ab, abp, 0.0, None), step(50, 0.0), atol=1e-6, rtol=0)
    # eta = 1 gives the DDPM posterior standard deviation sqrt(beta~_t) (DDIM paper, eq. 16)
    t = 50
    ab, abp = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
    sigma = math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
    assert sigma**2 == pytest.approx(d.posterior_variance[t], rel=1e-10)
