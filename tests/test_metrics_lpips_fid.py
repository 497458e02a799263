"""LPIPS and FID: real architectures with filler (seeded random) weights; the Frechet distance
against hand-computed and scipy values; weights lookup messages."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from difface.metrics import backbones as mw
from difface.metrics import fid
from difface.metrics.lpips import LPIPS, linear_head_file, load_backbone, load_linear_heads

ALEX_CONVS = (0, 3, 6, 8, 10)
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Deterministic filler weights (He-scaled normal), so the networks give non-trivial features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / p[0].numel()))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return module.eval()


def _images(seed: int, n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("net,convs,n_params", [("alex", ALEX_CONVS, 2_469_696), ("vgg", VGG_CONVS, 14_714_688)])
def test_lpips_backbone_has_torchvision_keys(net, convs, n_params):
    model = LPIPS(net)
    keys = {k for k in model.net.state_dict()}
    assert keys == {f"features.{i}.{s}" for i in convs for s in ("weight", "bias")}
    # torchvision AlexNet 61,100,840 / VGG-16 138,357,544 parameters minus their classifiers.
    assert sum(p.numel() for p in model.net.parameters()) == n_params


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_filler_weights_identity_symmetry_shape(net):
    model = _fill(LPIPS(net), 0)
    load_linear_heads(model)
    x, y = _images(1), _images(2)
    with torch.no_grad():
        d_xy, d_yx, d_xx = model(x, y), model(y, x), model(x, x)
    assert d_xy.shape == (2,)
    torch.testing.assert_close(d_xy, d_yx)
    assert torch.all(d_xx.abs() < 1e-6) and torch.all(d_xy > 1e-4)
    with torch.no_grad():  # each image is scored on its own: batch composition does not matter
        torch.testing.assert_close(model(x[:1], y[:1]), d_xy[:1], rtol=1e-4, atol=1e-6)


def test_shipped_linear_heads_are_the_lpips_v01_weights():
    # Sums of the tensors in lpips 0.1.4's weights/v0.1/{alex,vgg}.pth, read with torch.load.
    ref = {"alex": (2.34953, 16.14303, 39.26844, 27.19718, 20.31718),
           "vgg": (6.92599, 8.85833, 17.51501, 51.52132, 47.03485)}
    for net, sums in ref.items():
        sd = load_file(str(linear_head_file(net)))
        got = tuple(float(sd[f"lin{i}.model.1.weight"].sum()) for i in range(5))
        np.testing.assert_allclose(got, sums, atol=1e-4)
        assert all(float(v.min()) >= 0 for v in sd.values())  # v0.1 heads are non-negative


def test_load_backbone_ignores_classifier_and_checks_keys(tmp_path):
    src = _fill(LPIPS("alex"), 3)
    sd = {k.removeprefix("net."): v for k, v in src.state_dict().items() if k.startswith("net.")}
    sd["classifier.1.weight"] = torch.zeros(4096, 9216)  # a full torchvision file also has these
    torch.save(sd, tmp_path / "alexnet.pth")
    dst = LPIPS("alex")
    load_backbone(dst, tmp_path / "alexnet.pth")
    torch.testing.assert_close(dst.net.features[3].weight, src.net.features[3].weight)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="features"):
        load_backbone(dst, tmp_path / "bad.pth")


def test_missing_weights_message_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(mw.MissingWeights) as err:
        mw.locate(mw.ALEXNET)
    assert "alexnet-owt-7be5be79.pth" in str(err.value) and str(tmp_path / "home") in str(err.value)
    # A file in torch's hub cache is found (torchvision and pytorch-fid keep their downloads there).
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(b"not the real file")
    with pytest.raises(ValueError, match="SHA-256"):
        mw.locate(mw.ALEXNET)


def test_fid_inception_layout_and_forward():
    model = fid.FIDInceptionV3()
    sd = model.state_dict()
    # torchvision inception_v3: 27,161,264 parameters; minus its aux head (3,326,696), plus 8 classes of fc.
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(sd["Mixed_6b.branch7x7dbl_2.conv.weight"].shape) == (128, 128, 7, 1)
    assert "Conv2d_1a_3x3.bn.running_var" in sd and not any(k.startswith("AuxLogits") for k in sd)
    _fill(model, 5)
    x = _images(6, n=2, size=80)
    with torch.no_grad():
        f = model(x)
        f_single = model(x[1:])
    assert f.shape == (2, 2048) and torch.all(f >= 0)
    torch.testing.assert_close(f[1:], f_single, rtol=1e-4, atol=1e-5)


def test_fid_of_identical_sets_is_zero():
    model = _fill(fid.FIDInceptionV3(), 7)
    rng = np.random.default_rng(0)
    imgs = [rng.random((48, 48, 3), dtype=np.float32) for _ in range(3)]
    other = [np.clip(i * 0.5 + 0.2, 0, 1) for i in imgs]
    fa, fb = fid.extract_features(model, imgs, batch_size=3), fid.extract_features(model, other)
    assert fa.shape == (3, 2048)
    # Sets smaller than D take the exact nuclear-norm path (no 2048 x 2048 decomposition).
    assert abs(fid.frechet_distance_features(fa, fa)) < 1e-8 * max(1.0, float(np.sum(fa.var(0))))
    d_ab, d_ba = fid.frechet_distance_features(fa, fb), fid.frechet_distance_features(fb, fa)
    assert d_ab > 1e-3 and d_ab == pytest.approx(d_ba, rel=1e-9)


def test_feature_path_equals_covariance_path():
    rng = np.random.default_rng(2)
    for n1, n2, d in ((5, 9, 40), (60, 70, 16)):  # singular and full-rank covariances
        fa, fb = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 1.3 + 0.2
        ref = fid.frechet_distance(*fid.feature_statistics(fa), *fid.feature_statistics(fb))
        assert fid.frechet_distance_features(fa, fb) == pytest.approx(ref, rel=1e-6)
        assert fid.frechet_distance_to_stats(fa, *fid.feature_statistics(fb)) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_hand_computed_2d():
    # Non-commuting 2x2 covariances: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S1 S2.
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    mu1, mu2 = np.array([1.0, 2.0]), np.array([0.0, -1.0])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expected = 1.0 + 9.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-12)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, abs=1e-12)  # symmetric
    # Diagonal case: sum of (sqrt(a_i) - sqrt(b_i))^2.
    a, b = np.array([4.0, 1.0, 9.0]), np.array([1.0, 1.0, 4.0])
    assert fid.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(2.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 32)), rng.normal(size=(150, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.1
    (m1, s1), (m2, s2) = fid.feature_statistics(x), fid.feature_statistics(y)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    # Singular covariances (fewer samples than dimensions) stay finite and non-negative.
    (m3, s3), (m4, s4) = fid.feature_statistics(x[:5]), fid.feature_statistics(y[:7])
    d = fid.frechet_distance(m3, s3, m4, s4)
    assert math.isfinite(d) and d > 0


def test_statistics_round_trip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    fid.save_statistics(tmp_path / "ref.npz", mu, sigma, source="x")
    m2, s2 = fid.load_statistics(tmp_path / "ref.npz")
    np.testing.assert_array_equal(m2, mu)
    np.testing.assert_array_equal(s2, sigma)
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="mu"):
        fid.load_statistics(tmp_path / "bad.npz")
