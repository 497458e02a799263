"""PSNR / SSIM against scikit-image (independent implementation) and hand-computed values."""

import math

import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from difface.metrics.psnr_ssim import gaussian_window, psnr, rgb_to_y, ssim


def _pair(seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 crop of the astronaut and a noisy, blurred-ish uint8 copy."""
    rng = np.random.default_rng(seed)
    gt = data.astronaut()[100:100 + size, 150:150 + size + 8]
    noisy = np.clip(gt.astype(np.float64) + rng.normal(0, 12, gt.shape), 0, 255).round().astype(np.uint8)
    return noisy, gt


def _f(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 255.0


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis=None) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=channel_axis)


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_rgb_matches_skimage(seed):
    pred, gt = _pair(seed)
    ref = peak_signal_noise_ratio(gt, pred, data_range=255)
    assert psnr(_f(pred), _f(gt)) == pytest.approx(ref, abs=1e-9)


def test_psnr_y_matches_skimage_on_bt601_luma():
    pred, gt = _pair(2)
    # skimage's rgb2ycbcr: Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1].
    yp, yg = rgb2ycbcr(pred)[..., 0], rgb2ycbcr(gt)[..., 0]
    ref = peak_signal_noise_ratio(yg, yp, data_range=255)
    assert psnr(_f(pred), _f(gt), y_channel=True) == pytest.approx(ref, abs=1e-9)


def test_psnr_hand_computed_and_crop():
    a = np.full((20, 20, 3), 100 / 255, np.float32)
    b = np.full((20, 20, 3), 110 / 255, np.float32)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100.0), abs=1e-9)  # 28.1308 dB
    c = a.copy()
    c[:3] = 0.0  # differs only in a 3-pixel border
    assert math.isinf(psnr(a, c, crop_border=3)) and math.isfinite(psnr(a, c))


def test_y_channel_range_and_values():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.float64)
    np.testing.assert_allclose(rgb_to_y(rgb)[0], [16.0, 235.0, 16 + 65.481], atol=1e-9)


@pytest.mark.parametrize("seed", [0, 3])
def test_ssim_rgb_matches_skimage(seed):
    pred, gt = _pair(seed)
    ref = _sk_ssim(pred.astype(np.float64), gt.astype(np.float64), channel_axis=2)
    assert ssim(_f(pred), _f(gt)) == pytest.approx(ref, abs=1e-7)


def test_ssim_y_matches_skimage_with_crop():
    pred, gt = _pair(4, size=80)
    yp, yg = rgb2ycbcr(pred)[4:-4, 4:-4, 0], rgb2ycbcr(gt)[4:-4, 4:-4, 0]
    assert ssim(_f(pred), _f(gt), y_channel=True, crop_border=4) == pytest.approx(_sk_ssim(yp, yg), abs=1e-7)


def test_ssim_hand_computed_constant_images():
    a = np.full((16, 16, 3), 100 / 255, np.float32)
    b = np.full((16, 16, 3), 110 / 255, np.float32)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_gaussian_window_is_matlab_fspecial():
    w = gaussian_window(11, 1.5)
    x = np.arange(-5, 6)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(w, g / g.sum(), atol=1e-15)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="larger"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
