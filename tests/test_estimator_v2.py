"""Bundled estimator v2: degradation mixtures, the 64 px recipes, the residual SwinIR
output and the sharpness metric."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from difface.cli import main
from difface.data.datasets import SyntheticPairs
from difface.data.degrade import (
    DEGRADATIONS,
    MILD_X2,
    SEVERE_X4,
    DegradationConfig,
    DegradationMixture,
    degrade,
    get_degradation,
    sample_params,
)
from difface.metrics.psnr_ssim import psnr
from difface.metrics.sharpness import gradient_energy, sharpness_ratio
from difface.models import CONFIGS
from difface.models.swinir import IMAGENET_MEAN, SwinIR, SwinIRConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    import cv2

    img = data.astronaut()[0:256, 128:384].astype(np.float32) / 255.0
    return cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- mixtures


def _mix() -> DegradationMixture:
    a = DegradationConfig(blur_sigma=(0.5, 0.6), downsample=(1.0, 1.0), noise=(0.0, 1.0), resolution=64,
                          reference_resolution=64, gray_prob=0.0)
    b = dataclasses.replace(a, blur_sigma=(2.0, 2.5), downsample=(4.0, 4.0), noise=(10.0, 12.0))
    return DegradationMixture((a, b), (1.0, 3.0))


def test_mixture_picks_components_by_weight():
    mix, rng = _mix(), np.random.default_rng(0)
    scales = [sample_params(mix, rng).scale for _ in range(4000)]
    assert set(scales) == {1.0, 4.0}
    assert scales.count(1.0) / 4000 == pytest.approx(0.25, abs=0.025)
    assert mix.probabilities == (0.25, 0.75)


def test_mixture_draw_is_the_pick_then_the_component_draws():
    mix = _mix()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        expected = sample_params(mix.pick(rng), rng)
        assert sample_params(mix, np.random.default_rng(seed)) == expected
        p = expected
        lo, hi = (0.5, 0.6) if p.scale == 1.0 else (2.0, 2.5)
        assert lo <= p.kernel.sigma_x <= hi and lo <= p.kernel.sigma_y <= hi


def test_mixture_scales_each_component_and_validates():
    mix32 = _mix().for_resolution(32)
    assert mix32.resolution == 32
    assert mix32.components[1].effective_blur_sigma == (1.0, 1.25)
    assert mix32.components[1].effective_downsample == (2.0, 2.0)
    a = _mix().components[0]
    with pytest.raises(ValueError, match="one weight per component"):
        DegradationMixture((a, a), (1.0,))
    with pytest.raises(ValueError, match="weights"):
        DegradationMixture((a, a), (1.0, -1.0))
    with pytest.raises(ValueError, match="resolution"):
        DegradationMixture((a, a.for_resolution(32)), (1.0, 1.0))


def test_range64_preset_spans_clean_to_beyond_severe_x4(face):
    mix = get_degradation("range64")
    assert isinstance(mix, DegradationMixture) and mix.resolution == 64
    rng = np.random.default_rng(3)
    ps = [sample_params(mix, rng) for _ in range(3000)]
    sig = np.array([max(p.kernel.sigma_x, p.kernel.sigma_y) for p in ps])
    scale = np.array([p.scale for p in ps])
    assert sig.max() > 2.8 and scale.max() > 5.0 and max(p.noise for p in ps) > 19  # beyond severe-x4
    assert min(p.quality for p in ps) < 30
    light = (sig <= 1.0) & (scale <= 2.0) & (np.array([p.noise for p in ps]) <= 5)
    assert light.mean() > 0.2  # real mass on nearly clean faces
    clean = get_degradation("range64-clean")
    assert clean.components[1:] == mix.components and clean.probabilities[0] == pytest.approx(0.15)
    mild64 = get_degradation("mild", 64)  # the near-clean component covers the `mild` preset at 64 px
    c0 = clean.components[0]
    assert c0.effective_blur_sigma[1] >= mild64.effective_blur_sigma[1]
    assert c0.effective_downsample[0] <= mild64.effective_downsample[0] <= mild64.effective_downsample[1] <= 1.25
    assert c0.noise == mild64.noise and c0.jpeg_quality == mild64.jpeg_quality
    wide = get_degradation("range64-wide")  # range64-clean plus noisy faces at moderate scale
    assert wide.components[:4] == clean.components and sum(wide.probabilities) == pytest.approx(1.0)
    ps = [sample_params(wide, np.random.default_rng([4, i])) for i in range(3000)]
    noisy_mid = np.array([p.noise >= 15 and p.scale <= 2.5 for p in ps])
    noisy_mid_before = np.array([p.noise >= 15 and p.scale <= 2.5
                                 for p in (sample_params(clean, np.random.default_rng([4, i])) for i in range(3000))])
    assert noisy_mid_before.mean() < 0.01 and noisy_mid.mean() > 0.03  # the gap it fills


def test_range64_trains_through_the_config(tmp_path, face):
    from difface.images import write_image
    from difface.train.config import apply_overrides, load_config

    cfg = load_config(ROOT / "configs" / "train" / "estimator_small64_v2.yaml")
    assert cfg.data.degradation == "range64-clean" and cfg.model.residual and cfg.model.sf == 4
    for i in range(3):
        write_image(tmp_path / f"f{i}.png", np.ascontiguousarray(np.roll(face, 7 * i, axis=1)))
    ds = SyntheticPairs(tmp_path, get_degradation(cfg.data.degradation), seed=1)  # size: the mixture's 64
    item = ds[1]
    assert item["lq"].shape == item["gt"].shape == (3, 64, 64)
    assert apply_overrides(cfg, ["data.degradation=mild"]).data.degradation == "mild"


def test_damage_recipes_at_64px(face):
    for cfg, scale, sig, noise, quality in ((MILD_X2, 2.0, (0.2, 1.0), (0, 5), (60, 89)),
                                            (SEVERE_X4, 4.0, (1.5, 2.5), (8, 15), (30, 49))):
        assert cfg.resolution == cfg.reference_resolution == 64 and cfg.effective_kernel_size == 21
        rng = np.random.default_rng(0)
        for _ in range(200):
            p = sample_params(cfg, rng)
            assert p.scale == scale and not p.gray
            assert sig[0] <= p.kernel.sigma_x <= sig[1] and sig[0] <= p.kernel.sigma_y <= sig[1]
            assert noise[0] <= p.noise <= noise[1] and quality[0] <= p.quality <= quality[1]
    mild = np.mean([psnr(degrade(face, MILD_X2, np.random.default_rng(s)), face, y_channel=True) for s in range(8)])
    severe = np.mean([psnr(degrade(face, SEVERE_X4, np.random.default_rng(s)), face, y_channel=True)
                      for s in range(8)])
    assert mild > severe + 3


def test_degrade_cli_writes_mixture_and_recipe_pairs(tmp_path, face):
    from difface.images import write_image

    for i in range(2):
        write_image(tmp_path / "hq" / f"f{i}.png", face)
    for preset in ("mild-x2", "range64"):
        out = tmp_path / preset
        assert main(["degrade", str(tmp_path / "hq"), "-o", str(out), "--degradation", preset, "--seed", "0"]) == 0
        recs = [json.loads(x) for x in (out / "degradations.jsonl").read_text().splitlines()]
        assert len(recs) == 2 and all(r["kernel_size"] == 21 for r in recs)
        if preset == "mild-x2":
            assert all(r["scale"] == 2.0 for r in recs)
    assert {"mild-x2", "severe-x4", "range64"} <= set(DEGRADATIONS)


def test_resize_modes_keep_one_mode_streams_and_draw_among_several():
    base = DegradationConfig(resolution=64)
    assert base.resize_modes == ("linear",)
    cubic = dataclasses.replace(base, resize_modes=("cubic",))
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    p1, p2 = sample_params(base, r1), sample_params(cubic, r2)
    assert (p1.resize, p2.resize) == ("linear", "cubic")
    assert dataclasses.replace(p1, resize="cubic") == p2 and r1.random() == r2.random()  # no extra draw
    three = dataclasses.replace(base, resize_modes=("linear", "cubic", "area"))
    rng = np.random.default_rng(0)
    modes = [sample_params(three, rng).resize for _ in range(600)]
    assert all(150 < modes.count(m) < 250 for m in ("linear", "cubic", "area"))
    with pytest.raises(ValueError, match="resize_modes"):
        DegradationConfig(resize_modes=("nearest",))


@pytest.mark.parametrize("mode,down,up", [("cubic", "INTER_CUBIC", "INTER_CUBIC"),
                                          ("area", "INTER_AREA", "INTER_CUBIC")])
def test_resize_mode_equals_an_independent_opencv_chain(face, mode, down, up):
    import cv2

    from difface.data.degrade import DegradationParams, apply_degradation
    from difface.data.kernels import KernelParams

    p = DegradationParams(KernelParams("iso", 1.2, 1.2, 0.0), 9, 4.0, 0.0, 70, False, mode)
    lq = apply_degradation(face, p, np.random.default_rng(0))
    x = cv2.filter2D(face, -1, p.kernel.kernel(9))
    x = cv2.resize(x, (16, 16), interpolation=getattr(cv2, down))
    u8 = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, :, ::-1].copy()
    x = cv2.imdecode(cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], 1)[:, :, ::-1] / 255.0
    x = cv2.resize(x.astype(np.float32), (64, 64), interpolation=getattr(cv2, up))
    np.testing.assert_allclose(lq, np.clip(np.rint(x * 255), 0, 255) / 255, atol=1e-7)
    linear = apply_degradation(face, dataclasses.replace(p, resize="linear"), np.random.default_rng(0))
    assert np.abs(linear - lq).max() > 0.05


# ----------------------------------------------------------------------------- residual SwinIR

_SMALL = dict(img_size=16, embed_dim=24, depths=(2,), num_heads=(4,), window_size=8, sf=4, unshuffle_scale=4)


def _pair_of_nets() -> tuple[SwinIR, SwinIR]:
    torch.manual_seed(0)
    plain = SwinIR(SwinIRConfig(**_SMALL)).eval()
    res = SwinIR(SwinIRConfig(**_SMALL, residual=True)).eval()
    res.load_state_dict(plain.state_dict())  # same parameters, same keys
    return plain, res


def test_residual_is_off_by_default_and_in_no_official_config():
    assert SwinIRConfig().residual is False
    assert not any(getattr(c, "residual", False) for c in CONFIGS.values())


def test_residual_output_is_input_plus_the_same_correction():
    plain, res = _pair_of_nets()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = res(x) - plain(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(diff, (x - mean).expand_as(diff), atol=1e-5, rtol=0)


def test_residual_with_a_zero_head_returns_the_input_exactly():
    plain, res = _pair_of_nets()
    for net in (plain, res):
        torch.nn.init.zeros_(net.conv_last.weight)
        torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(res(x), x)  # identity, bit for bit
        out = plain(x)
    torch.testing.assert_close(out, torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand_as(out))  # a flat image


def test_residual_survives_save_and_load(tmp_path):
    from difface.weights import load_network, save_network

    _, res = _pair_of_nets()
    save_network(res, tmp_path / "est.safetensors")
    back = load_network(tmp_path / "est.safetensors")
    assert back.config.residual is True
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(back(x), res(x))


def test_flip_ensemble_is_off_by_default_and_averages_the_mirrored_pass(tmp_path):
    from difface.weights import load_network, save_network

    assert SwinIRConfig().flip_ensemble is False
    assert not any(getattr(c, "flip_ensemble", False) for c in CONFIGS.values())
    _, res = _pair_of_nets()
    ens = SwinIR(SwinIRConfig(**_SMALL, residual=True, flip_ensemble=True)).eval()
    ens.load_state_dict(res.state_dict())
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one, mirrored, both = res(x), res(x.flip(-1)).flip(-1), ens(x)
        assert (one - mirrored).abs().max() > 1e-3  # an untrained net is not symmetric by itself
        torch.testing.assert_close(both, 0.5 * (one + mirrored), atol=1e-5, rtol=0)
        torch.testing.assert_close(ens(x.flip(-1)), both.flip(-1), atol=1e-5, rtol=0)  # exactly equivariant
        torch.testing.assert_close(ens(x[1:2]), both[1:2], atol=1e-5, rtol=0)  # per image, not per batch
    ens.train()  # training sees single passes (the loss trains the network, not the average)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), res.train()(x))
    save_network(ens.eval(), tmp_path / "ens.safetensors")
    back = load_network(tmp_path / "ens.safetensors")
    assert back.config.flip_ensemble is True
    with torch.no_grad():
        torch.testing.assert_close(back(x), both)


def test_eval_autostart_write_sets_the_rule_and_the_flip_ensemble(tmp_path):
    """scripts/evaluations/eval_autostart.py write: the rule lands in the metadata, --flip-ensemble in the config;
    the weights are unchanged and the input file is not touched."""
    import subprocess
    import sys

    from difface.autostart import AutoStart
    from difface.core import _metadata
    from difface.weights import load_network, save_network

    _, res = _pair_of_nets()
    src, dst = tmp_path / "est.safetensors", tmp_path / "est_auto.safetensors"
    save_network(res, src)
    before = src.read_bytes()
    script = Path(__file__).resolve().parent.parent / "scripts" / "evaluations" / "eval_autostart.py"
    run = subprocess.run([sys.executable, str(script), "write", "--estimator", str(src), "--scale", "1.5",
                          "--offset", "0.02", "--kappa", "2", "--floor", "0.1", "--flip-ensemble", "-o", str(dst)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "flip_ensemble" in run.stdout, run.stdout + run.stderr
    assert src.read_bytes() == before
    rule = AutoStart.from_json(_metadata(dst)["difface.autostart"])
    assert (rule.scale, rule.offset, rule.kappa, rule.floor) == (1.5, 0.02, 2.0, 0.1)
    back = load_network(dst)
    assert back.config.flip_ensemble is True and back.config.residual is True
    for k, v in res.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_residual_net_fits_the_identity_where_the_plain_net_cannot():
    """Clean faces in, clean faces out: after the same 10 Adam steps the residual net is far closer."""
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2)  # smooth, image-like
    cfg = dict(_SMALL, img_size=8, embed_dim=12, window_size=4)
    errs = {}
    for residual in (False, True):
        torch.manual_seed(0)
        net = SwinIR(SwinIRConfig(**cfg, residual=residual))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(10):
            loss = (net(x) - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            errs[residual] = float((net(x) - x).abs().mean())
    assert errs[True] < 0.5 * errs[False]


# ----------------------------------------------------------------------------- sharpness


def test_gradient_energy_of_flat_and_ramp_images():
    assert gradient_energy(np.full((16, 16, 3), 0.3)) == 0.0
    a = 0.01
    ramp = np.tile(np.arange(20) * a, (20, 1))  # gray (H, W) ramp along x
    # interior Sobel response 8a; reflect-101 makes the two border columns 0
    assert gradient_energy(ramp) == pytest.approx((8 * a) ** 2 * 18 / 20)
    assert gradient_energy(np.repeat(ramp[:, :, None], 3, axis=2)) == pytest.approx(gradient_energy(ramp))


def test_sharpness_ratio_orders_blur_and_noise(face):
    import cv2

    faces = [face, face[:, ::-1].copy()]
    blurred = [cv2.GaussianBlur(f, (0, 0), 1.5) for f in faces]
    rng = np.random.default_rng(0)
    noisy = [np.clip(f + rng.normal(0, 0.1, f.shape), 0, 1) for f in faces]
    assert sharpness_ratio(faces, faces) == pytest.approx(1.0)
    assert sharpness_ratio(blurred, faces) < 0.6 < 1.1 < sharpness_ratio(noisy, faces)
    with pytest.raises(ValueError):
        sharpness_ratio(faces, faces[:1])


# ----------------------------------------------------------------------------- GPU driver


def _gpu_driver():
    import importlib.util

    script = ROOT / "scripts" / "maintainer" / "train_bundled_gpu.py"
    spec = importlib.util.spec_from_file_location("train_bundled_gpu", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("profile", ["bundled", "large"])
def test_gpu_driver_configs_load_with_every_profile(profile, tmp_path):
    """The commands the GPU driver runs parse into valid configs (bf16, large batches, the v2 estimator)."""
    import argparse

    from difface.commands.train import prepare as prepare_train
    from difface.commands.train import register
    from difface.models import build_from_config

    drv = _gpu_driver()
    args = argparse.Namespace(device="cuda", profile=profile, smoke=False, work=tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    sizes = {}
    for task in ("prior", "estimator"):
        cmd = drv.train_cmd(task, args, tmp_path / task, 60, resume=False)
        assert cmd[:3] == ["difface", "train", task] and "--resume" not in cmd
        cfg, out, saved = prepare_train(parser.parse_args(cmd[1:]))
        assert out == tmp_path / task and saved is None and cfg.precision == "bf16" and cfg.max_steps == 60
        assert cfg.optim.batch_size >= 128 and cfg.data.folder == str(tmp_path / "train")
        with torch.device("meta"):
            sizes[task] = sum(p.numel() for p in build_from_config(cfg.model).parameters())
        if task == "estimator":
            assert cfg.model.residual and cfg.model.sf == 4 and cfg.data.degradation == "range64-clean"
    if profile == "bundled":  # the bundled prior's size (CPU budget), the widened v2 estimator
        assert sizes == {"prior": 2_407_622, "estimator": 1_843_171}
    else:
        assert sizes["prior"] > 3 * 2_407_622 and sizes["estimator"] > 2 * 1_843_171
    resume = drv.train_cmd("prior", args, tmp_path / "prior", 900, resume=True)
    assert resume[-2:] == ["--resume", str(tmp_path / "prior")] and "900" in resume


def test_gpu_driver_plans_from_the_logged_speed(tmp_path):
    drv = _gpu_driver()
    rows = [{"step": 20, "steps_per_s": 1.0}, {"step": 40, "steps_per_s": 9.0}, {"step": 60, "steps_per_s": 11.0},
            {"step": 80, "steps_per_s": 10.0}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert drv.measured_speed(tmp_path) == 10.0  # the first window (start-up) is left out
