"""Blur kernels, the synthetic degradation pipeline, the CelebA-Test recipe and `difface degrade`."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from skimage import data

from difface.cli import main
from difface.data.degrade import (
    DEGRADATIONS,
    TEST_RECIPE,
    DegradationConfig,
    apply_degradation,
    degrade,
    degrade_fixed,
    degrade_with_params,
    get_degradation,
    recipe_params,
    sample_params,
)
from difface.data.kernels import (
    anisotropic_gaussian_kernel,
    gaussian_kernel,
    isotropic_gaussian_kernel,
    random_mixed_kernel,
)
from difface.images import read_image


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The public-domain astronaut's face, 64x64 float32 RGB in [0, 1]."""
    crop = data.astronaut()[0:220, 140:360]
    return cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("size,sigma", [(41, 0.1), (41, 3.0), (41, 15.0), (7, 1.2)])
def test_isotropic_kernel_is_outer_product_of_1d_gaussians(size, sigma):
    k = isotropic_gaussian_kernel(size, sigma)
    g = _gauss1d(size, sigma)
    assert k.shape == (size, size)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, np.outer(g, g), rtol=1e-9, atol=1e-15)


def test_anisotropic_theta0_is_separable_with_sx_along_columns():
    k = anisotropic_gaussian_kernel(41, 6.0, 2.0, 0.0)
    np.testing.assert_allclose(k, np.outer(_gauss1d(41, 2.0), _gauss1d(41, 6.0)), rtol=1e-9, atol=1e-15)
    # wider along the row (x, columns) than along the column (y, rows)
    assert k[20, 25] > k[25, 20]
    # theta = pi/2 swaps the axes
    np.testing.assert_allclose(anisotropic_gaussian_kernel(41, 6.0, 2.0, math.pi / 2), k.T, atol=1e-12)


def test_anisotropic_rotation_matches_hand_computed_ratio():
    # sx=2, sy=1, theta=pi/4: Sigma = [[2.5, 1.5], [1.5, 2.5]], Sigma^-1 = [[.625, -.375], [-.375, .625]].
    # p=(x=1, y=1): p^T S^-1 p = 0.5; p=(1, -1): 2.0  ->  ratio exp(-0.25)/exp(-1) = exp(0.75).
    k = gaussian_kernel(9, 2.0, 1.0, math.pi / 4)
    c = 4
    assert k[c + 1, c + 1] / k[c - 1, c + 1] == pytest.approx(math.exp(0.75), rel=1e-12)
    assert k[c, c + 1] / k[c, c] == pytest.approx(math.exp(-0.5 * 0.625), rel=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # point symmetric


@pytest.mark.parametrize("sx,sy,theta", [(3.0, 1.5, 0.4), (10.0, 4.0, -2.0), (0.7, 5.0, 3.0)])
def test_kernel_matches_scipy_multivariate_normal(sx, sy, theta):
    c, s = math.cos(theta), math.sin(theta)
    cov = [[sx**2 * c**2 + sy**2 * s**2, (sx**2 - sy**2) * c * s],
           [(sx**2 - sy**2) * c * s, sx**2 * s**2 + sy**2 * c**2]]
    ax = np.arange(-20, 21)
    x, y = np.meshgrid(ax, ax)
    ref = multivariate_normal(mean=[0, 0], cov=cov).pdf(np.stack([x, y], -1))
    np.testing.assert_allclose(gaussian_kernel(41, sx, sy, theta), ref / ref.sum(), rtol=1e-8, atol=1e-15)


def test_random_mixed_kernel_types_and_ranges():
    rng = np.random.default_rng(0)
    kinds = []
    for _ in range(200):
        k, p = random_mixed_kernel(rng, 21, (0.5, 4.0))
        kinds.append(p.kind)
        assert k.shape == (21, 21) and k.sum() == pytest.approx(1.0)
        assert 0.5 <= p.sigma_x <= 4.0 and 0.5 <= p.sigma_y <= 4.0
        if p.kind == "iso":
            assert p.sigma_x == p.sigma_y and p.theta == 0.0
        else:
            assert -math.pi <= p.theta <= math.pi
    assert 70 < kinds.count("iso") < 130
    only_aniso = {random_mixed_kernel(rng, probs=(0.0, 1.0))[1].kind for _ in range(20)}
    assert only_aniso == {"aniso"}


def test_kernel_rejects_even_size():
    with pytest.raises(ValueError):
        gaussian_kernel(40, 1.0, 1.0)


# ----------------------------------------------------------------------------- pipeline


def test_degrade_deterministic_per_seed(face):
    cfg = DEGRADATIONS["gfpgan"].for_resolution(64)
    a = degrade(face, cfg, np.random.default_rng(7))
    b = degrade(face, cfg, np.random.default_rng(7))
    c = degrade(face, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("preset", sorted(DEGRADATIONS))
def test_degrade_shape_range_and_quantization(face, preset):
    rng = np.random.default_rng(1)
    for img in (face, np.ascontiguousarray(face[:48, :40])):
        lq = degrade(img, get_degradation(preset, 64), rng)
        assert lq.shape == img.shape and lq.dtype == np.float32
        assert lq.min() >= 0.0 and lq.max() <= 1.0
        np.testing.assert_array_equal(lq * 255, np.rint(lq * 255))  # on the 1/255 grid


def test_degrade_fixed_equals_independent_opencv_chain(face):
    sx, sy, sf, q = 1.5, 0.8, 4, 60
    lq = degrade_fixed(face, sx, sy, 0.0, sf, 0.0, q, rng=np.random.default_rng(0), kernel_size=9)
    k = np.outer(_gauss1d(9, sy), _gauss1d(9, sx))
    x = cv2.filter2D(face, -1, k)  # default border = reflect-101
    x = cv2.resize(x, (64 // sf, 64 // sf), interpolation=cv2.INTER_LINEAR)
    u8 = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, :, ::-1].copy()
    x = cv2.imdecode(cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)[:, :, ::-1] / 255.0
    x = cv2.resize(x.astype(np.float32), (64, 64), interpolation=cv2.INTER_LINEAR)
    ref = np.clip(np.rint(x * 255), 0, 255) / 255
    np.testing.assert_allclose(lq, ref, atol=1e-7)


def test_noise_level_is_on_0_255_scale_and_per_channel():
    # JPEG (even at quality 100) subsamples chroma, so measure the luma, which it keeps: with
    # independent per-channel noise of std 20 (0-255 scale) the luma noise std is
    # 20 * sqrt(0.299^2 + 0.587^2 + 0.114^2) = 13.37; identical noise in all channels would give 20.
    flat = np.full((128, 128, 3), 0.5, np.float32)
    lq = degrade_fixed(flat, 0.01, 0.01, 0.0, 1.0, 20.0, 100, rng=np.random.default_rng(3), kernel_size=3)
    luma = ((lq - 0.5) * 255) @ np.array([0.299, 0.587, 0.114])
    assert luma.std() == pytest.approx(20 * math.sqrt(0.299**2 + 0.587**2 + 0.114**2), rel=0.05)


def test_gray_probability(face):
    gray = degrade(face, DegradationConfig(gray_prob=1.0, resolution=64), np.random.default_rng(0))
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 1], gray[..., 2])
    color = degrade(face, get_degradation("mild", 64), np.random.default_rng(0))
    assert np.abs(color[..., 0] - color[..., 2]).max() > 0.1


def test_sample_params_respect_ranges():
    cfg = DegradationConfig(gray_prob=0.3)
    rng = np.random.default_rng(5)
    ps = [sample_params(cfg, rng) for _ in range(300)]
    assert all(0.1 <= p.kernel.sigma_x <= 15 and 0.8 <= p.scale <= 32 and 0 <= p.noise <= 20 for p in ps)
    assert all(30 <= p.quality <= 99 and isinstance(p.quality, int) and p.kernel_size == 41 for p in ps)
    assert 60 < sum(p.gray for p in ps) < 120


def test_resolution_scaling_rule():
    base = DEGRADATIONS["gfpgan"]
    c64 = base.for_resolution(64)
    assert (c64.effective_kernel_size, c64.effective_blur_sigma, c64.effective_downsample) == (
        7, (0.0125, 1.875), (0.8, 4.0))
    c1k = base.for_resolution(1024)
    assert (c1k.effective_kernel_size, c1k.effective_blur_sigma, c1k.effective_downsample) == (
        81, (0.2, 30.0), (1.6, 64.0))
    assert base.effective_kernel_size == 41 and base.effective_downsample == (0.8, 32.0)
    assert c64.for_resolution(512) == base  # no compounding
    assert sample_params(c64, np.random.default_rng(0)).kernel_size == 7


def test_config_validation():
    with pytest.raises(ValueError):
        DegradationConfig(kernel_size=40)
    with pytest.raises(ValueError):
        DegradationConfig(jpeg_quality=(30, 120))
    with pytest.raises(ValueError):
        DegradationConfig(recipe="nope")
    with pytest.raises(KeyError, match="gfpgan"):
        get_degradation("unknown")


def test_presets_ordered_by_severity(face):
    errs = {}
    for name in ("mild", "moderate", "severe"):
        cfg = get_degradation(name, 64)
        errs[name] = np.mean([np.abs(degrade(face, cfg, np.random.default_rng(s)) - face).mean()
                              for s in range(6)])
    assert errs["mild"] < errs["moderate"] < errs["severe"]


def test_degrade_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        degrade(np.zeros((8, 8), np.float32), DEGRADATIONS["mild"], np.random.default_rng(0))


# ----------------------------------------------------------------------------- test recipe


def test_test_recipe_count_and_order():
    combos = list(TEST_RECIPE.combos(np.random.default_rng(10000)))
    assert len(TEST_RECIPE) == 4000 and len(combos) == 4000
    key = [(c.qf, c.sf, c.nf, c.sigma_x, c.theta) for c in combos]
    assert key[0] == (30, 4, 1, 4, 0.0)
    assert key[1] == (30, 4, 1, 4, math.pi / 4)
    assert key[4] == (30, 4, 1, 8, 0.0)
    assert key[16] == (30, 4, 5, 4, 0.0)
    assert key[80] == (30, 8, 1, 4, 0.0)
    assert key[800] == (40, 4, 1, 4, 0.0)
    assert key[-1] == (70, 40, 20, 16, 3 * math.pi / 4)
    assert len(set(key)) == 4000
    sy = [c.sigma_y for c in combos]
    assert set(sy) == {4, 8, 12, 16} and all(800 < sy.count(v) < 1200 for v in (4, 8, 12, 16))
    again = [c.sigma_y for c in TEST_RECIPE.combos(np.random.default_rng(10000))]
    assert sy == again


def test_recipe_params_scaling():
    c = next(TEST_RECIPE.combos(np.random.default_rng(0)))
    p512 = recipe_params(c)
    assert (p512.scale, p512.kernel.sigma_x, p512.kernel_size, p512.quality, p512.noise) == (4, 4, 41, 30, 1)
    p64 = recipe_params(c, DEGRADATIONS["celeba-test"].for_resolution(64))
    assert (p64.scale, p64.kernel.sigma_x, p64.kernel.sigma_y, p64.kernel_size) == (
        1.0, 0.5, c.sigma_y / 8, 7)
    last = list(TEST_RECIPE.combos(np.random.default_rng(0)))[-1]
    assert recipe_params(last, DEGRADATIONS["celeba-test"].for_resolution(64)).scale == 5.0


def test_celeba_test_preset_draws_grid_values(face):
    cfg = get_degradation("celeba-test", 512)
    for s in range(20):
        p = sample_params(cfg, np.random.default_rng(s))
        assert p.quality in TEST_RECIPE.qualities and p.scale in TEST_RECIPE.scales
        assert p.noise in TEST_RECIPE.noises and p.kernel.sigma_y in TEST_RECIPE.sigmas
    # degrade_with_params = sample_params, then apply_degradation on the same stream
    cfg64 = get_degradation("celeba-test", 64)
    lq, p = degrade_with_params(face, cfg64, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    assert sample_params(cfg64, rng) == p
    np.testing.assert_array_equal(lq, apply_degradation(face, p, rng))


# ----------------------------------------------------------------------------- CLI


def _make_inputs(folder, n=4):
    folder.mkdir()
    a = data.astronaut()
    for i in range(n):
        crop = a[i * 8 : 220 + i * 8, 140:360, ::-1]
        cv2.imwrite(str(folder / f"face{i}.png"), cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA))
    (folder / "broken.png").write_bytes(b"not an image")


def test_cli_end_to_end(tmp_path, capsys):
    src, out = tmp_path / "hq", tmp_path / "out"
    _make_inputs(src)
    rc = main(["degrade", str(src), "-o", str(out), "--degradation", "celeba-test", "--seed", "3", "--size", "32"])
    assert rc == 1  # broken.png failed
    assert "broken.png" in capsys.readouterr().err
    names = sorted(p.stem for p in (out / "lq").iterdir())
    assert names == [f"face{i}" for i in range(4)] == sorted(p.stem for p in (out / "hq").iterdir())
    for name in names:
        lq, hq = read_image(out / "lq" / f"{name}.png"), read_image(out / "hq" / f"{name}.png")
        assert lq.rgb.shape == hq.rgb.shape == (32, 32, 3)
    recs = [json.loads(line) for line in (out / "degradations.jsonl").read_text().splitlines()]
    assert [r["name"] for r in recs] == names
    # broken.png sorts first: it consumed combo 0, so face0 got combo 1 (theta pi/4), face1 combo 2 ...
    assert [r["theta"] for r in recs] == pytest.approx([math.pi / 4, math.pi / 2, 3 * math.pi / 4, 0.0])
    assert all(r["quality"] == 30 and r["noise"] == 1 and r["kernel_size"] == 3 for r in recs)
    assert recs[3]["sigma_x"] == pytest.approx(8 * 32 / 512)


def test_cli_deterministic_and_limit_independent(tmp_path):
    src = tmp_path / "hq"
    _make_inputs(src, 3)
    (src / "broken.png").unlink()
    runs = [(tmp_path / "a", []), (tmp_path / "b", []), (tmp_path / "c", ["--limit", "2"])]
    for out, extra in runs:
        assert main(["degrade", str(src), "-o", str(out), "--degradation", "gfpgan", "--seed", "5", *extra]) == 0
    for name in ("face0", "face1"):
        a, b, c = ((out / "lq" / f"{name}.png").read_bytes() for out, _ in runs)
        assert a == b == c
    assert len(list((tmp_path / "c" / "lq").iterdir())) == 2
    other = tmp_path / "d"
    main(["degrade", str(src), "-o", str(other), "--degradation", "gfpgan", "--seed", "6"])
    assert (other / "lq" / "face0.png").read_bytes() != (tmp_path / "a" / "lq" / "face0.png").read_bytes()


def test_cli_missing_input(tmp_path):
    assert main(["degrade", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
