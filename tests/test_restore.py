import numpy as np
import pytest
import torch

from difface.core import DifFace
from difface.diffusion.sampling import replay_noise

from conftest import golden


@pytest.mark.parametrize("name", ["sampler_small", "sampler_small_resize"])
def test_sampler_replay_matches_official_run(small_models, name):
    g = golden(name)
    model = DifFace.from_modules(*small_models)
    noises = [torch.from_numpy(g["q_noise"])] + [torch.from_numpy(n) for n in g["step_noises"]]
    steps = []
    out = model.restore(torch.from_numpy(g["y0"]), start_step=20, eta=0.5, noise_fn=replay_noise(noises),
                        callback=steps.append)
    assert [s["i"] for s in steps] == list(g["step_t_respaced"])
    for k, s in enumerate(steps):
        np.testing.assert_allclose(s["x"].numpy(), g["step_x"][k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(s["pred"].out.numpy(), g["step_model_out"][k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(s["pred"].x0.numpy(), g["step_pred_xstart"][k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(s["sample"].numpy(), g["step_sample"][k], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.result.numpy(), g["final"], atol=1e-4, rtol=0)
    assert out.result.shape == g["y0"].shape


def test_result_depends_only_on_image_and_seed(small_models):
    model = DifFace.from_modules(*small_models)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    alone = model.restore(b, start_step=5, seeds=[7]).result
    batch = model.restore(torch.cat([a, b, a]), start_step=5, seeds=[1, 7, 3]).result
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)  # batched kernels: float rounding
    again = model.restore(b, start_step=5, seeds=[7]).result
    assert torch.equal(again, alone)
    other = model.restore(b, start_step=5, seeds=[8]).result
    assert (other - alone).abs().max() > 1e-3


def test_start_step_zero_returns_the_estimate(small_models):
    model = DifFace.from_modules(*small_models)
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = model.restore(y, start_step=0, seeds=[0])
    with torch.no_grad():
        expected = small_models[1](y).clamp(0, 1)
    assert torch.equal(out.result, expected) and torch.equal(out.estimate, expected)


def test_bad_arguments_are_rejected(small_models):
    model = DifFace.from_modules(*small_models)
    with pytest.raises(ValueError, match="start_step"):
        model.restore(torch.rand(1, 3, 64, 64), start_step=250, seeds=[0])
    with pytest.raises(ValueError, match="seed"):
        model.restore(torch.rand(2, 3, 64, 64), start_step=3, seeds=[0])
    with pytest.raises(ValueError, match="shape"):
        model.restore(torch.rand(3, 64, 64), seeds=[0])


@pytest.mark.slow  # bf16 is emulated (about 10x slower) on CPUs without bf16 instructions, like CI's
def test_bf16_autocast_stays_close_to_fp32(small_models):
    model = DifFace.from_modules(*small_models)
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ref = model.restore(y, start_step=1, seeds=[0]).result  # one step: bf16 is ~20x slower than fp32 on CPUs without it
    low = model.restore(y, start_step=1, seeds=[0], dtype=torch.bfloat16).result
    assert low.dtype == torch.float32
    assert (low - ref).abs().mean() < 0.05


def test_image_seed_depends_on_content_and_seed_only():
    from difface.core import image_seed

    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[0, 0, 0] += 1e-3
    assert image_seed(5, a) == image_seed(5, a.clone())
    assert len({image_seed(5, a), image_seed(5, b), image_seed(6, a)}) == 3
    assert 0 <= image_seed(2**40, a) < 2**63


def test_inpainting_replay_matches_official_run(small_models):
    """sampler_inpaint_small: the official inpainting loop (start 20, eta 1, masking regularizer,
    mask detected from exact zeros, mask_back), replayed with its recorded noise."""
    from difface.models import build, fill_deterministic

    g = golden("sampler_inpaint_small")
    lama = fill_deterministic(build("lama_small"))
    model = DifFace.from_modules(small_models[0], lama, task="inpainting")
    assert (model.default_start_step, model.default_eta) == (120, 1.0)  # official t = 480, eta 1
    noises = [torch.from_numpy(g["q_noise"])] + [torch.from_numpy(n) for n in g["step_noises"]]
    steps = []
    y0 = torch.from_numpy(g["y0"])
    out = model.inpaint(y0, start_step=20, eta=1.0, noise_fn=replay_noise(noises), callback=steps.append)
    np.testing.assert_allclose(out.estimate.numpy(), g["im_hq"], atol=1e-5, rtol=0)
    assert [s["i"] for s in steps] == list(g["step_t_respaced"])
    for k, s in enumerate(steps):
        np.testing.assert_allclose(s["x"].numpy(), g["step_x"][k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(s["pred"].x0.numpy(), g["step_pred_xstart"][k], atol=1e-4, rtol=0)
        np.testing.assert_allclose(s["sample"].numpy(), g["step_sample"][k], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.result.numpy(), g["final"], atol=1e-4, rtol=0)
    known = g["mask"][0, 0] == 0
    assert np.array_equal(out.result.numpy()[0][:, known], g["y0"][0][:, known])  # known pixels kept exactly


def test_inpainting_with_an_explicit_mask_keeps_known_pixels(small_models):
    from difface.models import build, fill_deterministic

    model = DifFace.from_modules(small_models[0], fill_deterministic(build("lama_small")), task="inpainting")
    y = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(2, 1, 96, 80)
    mask[:, :, 30:60, 20:50] = 1
    out = model.inpaint(y, mask, start_step=4, seeds=[0, 1], feather=False)
    keep = mask[:, 0] == 0
    assert torch.equal(out.result.permute(1, 0, 2, 3)[:, keep], y.permute(1, 0, 2, 3)[:, keep])
    hole = out.result.permute(1, 0, 2, 3)[:, ~keep]
    assert (hole - y.permute(1, 0, 2, 3)[:, ~keep]).abs().mean() > 0.05  # the hole was filled, not copied
    # larger than the model: by default the fill is blended over a soft edge; beyond it known pixels are exact
    soft = model.inpaint(y, mask, start_step=4, seeds=[0, 1])
    assert model.image_size < 96 and torch.equal(soft.result.permute(1, 0, 2, 3)[:, ~keep], hole)
    far = torch.ones_like(keep)
    far[:, 30 - 4:60 + 4, 20 - 4:50 + 4] = False  # the edge is 2 model pixels = 3 px wide here
    assert torch.equal(soft.result.permute(1, 0, 2, 3)[:, far], y.permute(1, 0, 2, 3)[:, far])
    with pytest.raises(ValueError, match="inpaint"):
        model.restore(y, start_step=2, seeds=[0, 1])


def test_auto_start_grows_with_the_estimators_change(small_models):
    from difface.autostart import AutoStart, estimate_change, steps_for_error

    model = DifFace.from_modules(*small_models)
    d = model.diffusion
    # the rule by hand: the first step whose noise-to-signal ratio reaches kappa * error
    ratio = np.sqrt((1 - d.alphas_cumprod) / d.alphas_cumprod)
    assert steps_for_error(d, [0.0, 0.1, 0.3], AutoStart()) == [0, int(np.argmax(ratio >= 0.1)),
                                                                 int(np.argmax(ratio >= 0.3))]
    assert steps_for_error(d, [0.1], AutoStart(kappa=2.0)) == [int(np.argmax(ratio >= 0.2))]
    assert steps_for_error(d, [50.0], AutoStart(t_cap=200)) == [50]  # capped at t = 200
    assert steps_for_error(d, [50.0], AutoStart(), t_max=99) == [24]  # and at the prior's trained range
    # an error floor: at or below it N = 0 (the estimate), above it only the excess is covered
    floor = AutoStart(kappa=2.0, floor=0.05)
    assert steps_for_error(d, [0.03, 0.05, 0.15], floor) == [0, 0, int(np.argmax(ratio >= 0.2))]
    assert AutoStart.from_json(floor.to_json()) == floor
    assert AutoStart.from_json('{"scale": 2, "offset": 0.1, "kappa": 1, "t_cap": 400}').floor == 0.0  # older files
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    est = y.clone()
    est[1] = (est[1] + 0.2).clamp(0, 1)
    e = estimate_change(y, est)
    assert e[0] == 0 and e[1] > 0.2
    # through restore(): the steps chosen are those of the rule, and a result equals a fixed-step run.
    # Random inputs move the filled estimator far, so the rule is capped at t = 40 (10 steps) to stay quick
    model.autostart = AutoStart(t_cap=40)
    out = model.restore(y, start_step="auto", seeds=[3, 4])
    err = estimate_change(y, out.estimate)  # same size: the estimate is at the model size
    assert out.start_steps == steps_for_error(d, err.numpy(), model.autostart)
    assert 0 < max(out.start_steps) <= 10
    fixed = model.restore(y[1:], start_step=out.start_steps[1], seeds=[4])
    torch.testing.assert_close(out.result[1:], fixed.result, atol=1e-5, rtol=0)  # batch vs alone: float rounding
    with pytest.raises(ValueError, match="start_step"):
        model.restore(y, start_step="soon", seeds=[0, 1])


def test_masking_step_replaces_the_known_pixels(small_models):
    """The official regularizer's single gradient step (gamma 0.5) equals 'known pixels replaced' to 1e-6."""
    from difface.models import build, fill_deterministic

    model = DifFace.from_modules(small_models[0], fill_deterministic(build("lama_small")), task="inpainting")
    g = torch.Generator().manual_seed(5)
    y = torch.rand(1, 3, 64, 64, generator=g)
    mask = (torch.rand(1, 1, 64, 64, generator=g) > 0.6).float()
    seen = []
    model.inpaint(y, mask, start_step=3, seeds=[0], callback=seen.append)
    yn = (y * (1 - mask) - 0.5) / 0.5
    for s in seen:
        x0 = s["pred"].x0
        torch.testing.assert_close(x0 * (1 - mask), yn * (1 - mask), atol=1e-6, rtol=0)
        assert (x0 * mask - yn * mask).abs().max() > 0.01  # the hole is the network's prediction
