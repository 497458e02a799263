"""Few steps at any start and eta: the generic schedule (difface.schedules), DPM-Solver++(2M) SDE
(difface.diffusion.solvers), the fast preset's plan (difface.fastplan) and the line the command prints."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from difface.core import BUNDLED_DIR, DifFace
from difface.diffusion.sampling import Prediction, ddim_step
from difface.diffusion.schedule import Diffusion
from difface.diffusion.solvers import SOLVERS, FewStepSampler, solve
from difface.fastplan import FITTED, MEASURED, describe, plan_for, priors_validated
from difface.schedules import (
    ASSETS_FILE,
    fitted_timesteps,
    generic_schedule,
    log_snr,
    store_schedule,
    timesteps_from_fractions,
)
from difface.weights import save_network

BASE = Diffusion.create(1000, "linear")


def test_generic_schedule_gives_the_bundled_fit_back_at_its_start():
    fit = fitted_timesteps(BUNDLED_DIR / "prior.safetensors", method="dpmpp2m", nfe=6, t_start=400)
    g = generic_schedule()
    assert fit is not None and g is not None and (g["num_timesteps"], g["beta_schedule"]) == (1000, "linear")
    assert timesteps_from_fractions(BASE.alphas_cumprod, 400, g["fractions"]) == fit
    assert timesteps_from_fractions(BASE.alphas_cumprod, 400, g["fractions"], 6) == fit


@pytest.mark.parametrize("nfe", [3, 6, 8, 10])
def test_generic_schedule_at_any_start(nfe):
    fr = generic_schedule()["fractions"]
    lam = 0.5 * np.log(BASE.alphas_cumprod / (1 - BASE.alphas_cumprod))
    for t in (1, 4, 12, 40, 100, 200, 300, 480, 999):
        ts = timesteps_from_fractions(BASE.alphas_cumprod, t, fr, nfe)
        assert ts[0] == t and ts[-1] >= 0 and all(a > b for a, b in zip(ts, ts[1:])), (t, ts)
        assert len(ts) == min(nfe, t + 1) or len(ts) < nfe  # merged only where timesteps collide
        if t >= 100:  # room for every evaluation: the positions are the same fractions of each interval
            assert len(ts) == nfe
            got = (lam[list(ts)] - lam[t]) / (lam[0] - lam[t])
            want = np.interp(np.arange(nfe) / nfe, np.arange(len(fr) + 1) / len(fr), fr + [1.0])
            assert np.abs(got - want).max() < 0.05


def test_storing_a_schedule_keeps_the_generic_one(tmp_path):
    store = tmp_path / "fitted.json"
    store.write_text(ASSETS_FILE.read_text())
    prior = tmp_path / "p.safetensors"
    prior.write_bytes(b"a prior")
    store_schedule(prior, method="ddim", nfe=3, t_start=400, eta=0.0, timesteps=[400, 200, 50], fitted_on="test",
                   path=store)
    assert generic_schedule((store,)) == generic_schedule()


def _toy_denoiser(clean: torch.Tensor):
    """A denoiser whose eps is consistent with its x0 (no clipping): x0 is `clean` moved a little toward x."""
    ac = BASE.alphas_cumprod

    def den(x, t):
        a = float(ac[int(t[0])])
        x0 = 0.8 * clean + 0.1 * x
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        return Prediction(eps=eps, x0=x0, out=torch.cat([eps, eps], 1))

    return den


def test_sde_solver_at_eta_0_is_dpmpp2m_and_its_first_step_at_eta_1_is_ddim_eta_1():
    g = torch.Generator().manual_seed(0)
    clean, x = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randn(2, 3, 8, 8, generator=g)
    den, ts = _toy_denoiser(clean), [400, 250, 120, 30]
    a = solve(den, BASE, x, ts, method="dpmpp2m")
    b = solve(den, BASE, x, ts, method="dpmpp2m_sde", eta=0.0)
    assert torch.equal(a, b)
    # one step with eta 1 is the DDPM posterior, which is DDIM with eta 1 (same noise draw)
    ac = BASE.alphas_cumprod
    noise = torch.randn(2, 3, 8, 8, generator=g)
    got = SOLVERS["dpmpp2m_sde"](x, den(x, torch.tensor([400, 400])), float(ac[400]), float(ac[250]), eta=1.0,
                                 noise_fn=lambda _: noise, state={})
    want = ddim_step(den(x, torch.tensor([400, 400])), float(ac[400]), float(ac[250]), 1.0, noise)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="noise source"):
        solve(den, BASE, x, ts, method="dpmpp2m_sde", eta=0.5)


@pytest.mark.parametrize("method", ["ddim", "dpmpp2m_sde"])
def test_stochastic_few_steps_do_not_depend_on_the_batch(small_models, method):
    model = DifFace.from_modules(*small_models)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    few = FewStepSampler(model.diffusion.base(), (400, 275, 100, 20), method, 0.5)
    together = model.restore(x, start_step=100, eta=0.5, seeds=[5, 6, 7], sampler=few).result
    alone = model.restore(x[1:2], start_step=100, eta=0.5, seeds=[6], sampler=few).result
    assert (together[1:2] - alone).abs().max() < 1e-4  # up to the float rounding of batched convolutions
    quiet = FewStepSampler(model.diffusion.base(), (400, 275, 100, 20), method, 0.0)
    assert (model.restore(x, start_step=100, eta=0.0, seeds=[5, 6, 7], sampler=quiet).result - together).abs().max() \
        > 1e-3  # the noise of eta 0.5 is there


def test_inpainting_reimposes_the_known_pixels_at_each_few_step(tmp_path):
    model = DifFace.from_pretrained(task="inpainting", device="cpu")
    truth = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:48] = 1
    seen = []
    r = model.inpaint(truth, mask, start_step=120, eta=1.0, seeds=[3], sampler="ddim", nfe=4,
                      callback=lambda d: seen.append(d["pred"].x0))
    assert len(seen) == 4
    known = (mask == 0).expand(1, 3, 64, 64)
    target = (truth * 2 - 1).clamp(-1, 1)
    for x0 in seen:  # the refinement (gamma 0.5, one step) puts the input's pixels there exactly
        assert torch.allclose(x0[known], target[known], atol=1e-6)
    assert torch.equal(r.result[known], truth[known])


def test_plan_for_the_bundled_prior_and_a_prior_without_a_fit(tmp_path, small_models):
    bundled = DifFace.from_pretrained(device="cpu")
    p = plan_for(bundled, 100, 0.0)  # t = 400, eta 0: the schedule stored with the bundled prior
    assert p.source == "fitted for this prior" and (p.sampler, p.nfe) == FITTED
    assert p.timesteps == fitted_timesteps(bundled.sources["prior"], method=p.sampler, nfe=p.nfe, t_start=400)
    assert plan_for(bundled, 100, 0.0, auto=True).timesteps != p.timesteps  # automatic starts: their own setting
    key = ("restoration", "fixed", 0.0)
    n_valid = priors_validated(generic_schedule(), key, MEASURED[key])
    assert n_valid == 3  # the bundled prior and two earlier ones (docs/speed.md)
    # another prior file on the same noise schedule, no fit of its own
    save_network(small_models[0], tmp_path / "prior.safetensors")
    other = replace(bundled, sources={**bundled.sources, "prior": tmp_path / "prior.safetensors"})
    p = plan_for(other, 100, 0.0)
    assert (p.sampler, p.nfe) == MEASURED[("restoration", "fixed", 0.0)][:2]
    assert p.source == f"generic, validated on {n_valid} prior{'s' if n_valid != 1 else ''}"
    assert p.timesteps == timesteps_from_fractions(BASE.alphas_cumprod, 400, generic_schedule()["fractions"], p.nfe)
    assert plan_for(other, 50, 0.0).timesteps[0] == 200  # any start
    # the official 512 model's default, t = 400 and eta 0.5: two evaluations, the second at the log-SNR midpoint
    p = plan_for(other, 100, 0.5)
    assert (p.sampler, p.timesteps) == ("ddim_extrap", (400, 40))
    assert plan_for(other, 120, 0.5).timesteps == (480, 50)  # its own fractions, mapped to any start
    p = plan_for(other, 100, 0.3)  # an eta that was not measured
    assert p.timesteps is None and p.source.startswith("official loop: no few-step setting was measured")
    assert plan_for(other, 3, 0.0).timesteps is None  # the official loop makes no more evaluations from there
    auto = MEASURED[("restoration", "auto", 0.0)]  # automatic starts follow their own measurement
    p = plan_for(other, 100, 0.0, auto=True)
    assert (p.timesteps is None and "automatic starts" in p.source) if auto is None else p.nfe == auto[1]
    cosine = replace(other, diffusion=Diffusion.create(1000, "cosine", "ddim250"))
    p = plan_for(cosine, 100, 0.0)
    assert p.timesteps is None and "noise schedule" in p.source


def test_fast_plan_is_what_restore_runs(tmp_path, small_models):
    bundled = DifFace.from_pretrained(device="cpu")
    save_network(small_models[0], tmp_path / "prior.safetensors")
    other = replace(bundled, sources={**bundled.sources, "prior": tmp_path / "prior.safetensors"})
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for eta in (0.0, 0.5):
        p = plan_for(other, 60, eta)
        seen = []
        got = other.restore(x, start_step=60, eta=eta, seeds=[9], sampler="dpmpp2m", nfe=6, schedule="fast",
                            callback=lambda d, seen=seen: seen.append(d["t"])).result
        assert tuple(seen) == p.timesteps
        want = bundled.restore(x, start_step=60, eta=eta, seeds=[9],
                               sampler=FewStepSampler(bundled.diffusion.base(), p.timesteps, p.sampler, eta)).result
        assert torch.equal(got, want)
    assert "official loop with 60 evaluations" in describe(other, 60, 0.3)


def _face(tmp_path):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    face = cv2.imread(str(BUNDLED_DIR.parents[3] / "examples" / "astronaut_lq.png"))
    cv2.imwrite(str(src / "face.png"), cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA))
    return src


def _preset_lines(capfd, argv):
    from difface.cli import main

    assert main(argv) == 0
    return [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("preset fast:")]


def test_command_says_what_the_fast_preset_runs(tmp_path, capfd, small_models):
    src = _face(tmp_path)
    run = ["restore", str(src), "--aligned", "--preset", "fast", "--backend", "torch", "--seed", "1"]
    lines = _preset_lines(capfd, [*run, "-o", str(tmp_path / "a"), "--start-step", "100", "--eta", "0"])
    assert len(lines) == 2 and "the sampler measured for the model" in lines[0]
    method, nfe = FITTED  # the bundled prior has this schedule stored for t = 400, eta 0
    assert lines[1] == f"preset fast: sampler {method} with {nfe} evaluations from t = 400, eta 0 (fitted for " \
        "this prior)"
    lines = _preset_lines(capfd, [*run, "-o", str(tmp_path / "auto")])  # the bundled default: automatic starts
    auto = MEASURED[("restoration", "auto", 0.0)]
    if auto is None:
        assert lines[1] == "preset fast: official loop from each face's automatic start, eta 0 (official loop: no " \
            "few-step setting met the quality gates for restoration at automatic starts, eta 0)"
    else:
        assert lines[1].startswith(f"preset fast: sampler {auto[0]} with at most {auto[1]} evaluations from each "
                                   "face's automatic start, eta 0 (generic")
    lines = _preset_lines(capfd, [*run, "-o", str(tmp_path / "b"), "--start-step", "50", "--eta", "0.3"])
    assert lines[1] == "preset fast: official loop with 50 evaluations from t = 200, eta 0.3 (official loop: no " \
        "few-step setting was measured for restoration at fixed starts, eta 0.3 (measured: eta 0, 0.5))"
    # a prior file without a fit (filler weights): the generic schedule, or the official loop where none passed
    save_network(small_models[0], tmp_path / "prior.safetensors")
    est = str(BUNDLED_DIR / "estimator.safetensors")
    lines = _preset_lines(capfd, [*run, "-o", str(tmp_path / "c"), "--start-step", "100", "--eta", "0.5",
                                  "--prior", str(tmp_path / "prior.safetensors"), "--estimator", est])
    setting = MEASURED[("restoration", "fixed", 0.5)]
    n = priors_validated(generic_schedule(), ("restoration", "fixed", 0.5), setting) if setting else 0
    if setting is None:
        assert "official loop with 100 evaluations" in lines[1]
    else:
        assert lines[1] == f"preset fast: sampler {setting[0]} with {setting[1]} evaluations from t = 400, eta 0.5 " \
            f"(generic, validated on {n} prior{'s' if n != 1 else ''})"


def test_inpainting_default_runs_five_evaluations_evenly_spaced_in_log_snr():
    model = DifFace.from_pretrained(task="inpainting", device="cpu")
    p = plan_for(model, model.step_for_t(480), 1.0)  # the inpainting default: t = 480, eta 1
    assert p.sampler == "ddim_extrap" and len(p.timesteps) == 5 and p.timesteps[0] == 480
    lam = log_snr(BASE.alphas_cumprod)
    fifths = [(lam[t] - lam[480]) / (lam[0] - lam[480]) for t in p.timesteps]
    assert fifths == pytest.approx([0, 0.2, 0.4, 0.6, 0.8], abs=0.02)  # so the extrapolation factor is 1
