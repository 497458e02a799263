"""NIQE: MATLAB imresize kernel, AGGD fits on samples of known law, the shipped model, and scores
against an independent run of the NIQE pipeline in GNU Octave (see docs/evaluation.md)."""

import math

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2ycbcr

from difface.metrics.niqe import aggd_fit, imresize_matlab, niqe, niqe_gray, pristine_params, resize_weights

# NIQE of 8-bit luminance images computed with GNU Octave 7.3 (image package 2.14): imfilter
# 'replicate', circshift, gamma, pinv and the NIQE release's feature definitions, with the halving
# done by MATLAB's 8-tap bicubic antialiasing kernel on symmetric padding. Inputs: skimage's
# astronaut (public domain) as BT.601 Y rounded half up, and skimage's camera.
OCTAVE_ASTRONAUT_Y = 3.0994229277
OCTAVE_ASTRONAUT_Y_CROP = 2.8850177430  # rows 7:500, columns 11:470 (0-based, end exclusive)
OCTAVE_CAMERA = 3.0961175630


def _astronaut_y() -> np.ndarray:
    return np.floor(rgb2ycbcr(data.astronaut())[..., 0] + 0.5)


def test_half_scale_kernel_is_matlab_bicubic_antialias():
    w, idx = resize_weights(16, 8, 0.5)
    # MATLAB imresize(., 0.5, 'bicubic') taps: 0.5 * cubic(0.5 * d) for d = 3.5, 2.5, ..., -3.5.
    ref = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256.0
    np.testing.assert_allclose(w[3], ref, atol=1e-15)
    np.testing.assert_array_equal(idx[3], np.arange(3, 11))  # output 3 (0-based) covers inputs 3..10
    np.testing.assert_array_equal(idx[0], [2, 1, 0, 0, 1, 2, 3, 4])  # symmetric mirror at the border


def test_imresize_reproduces_linear_ramps_inside():
    ramp = np.tile(np.arange(40, dtype=np.float64), (12, 1))  # f(row, col) = col
    out = imresize_matlab(ramp, 0.5)
    assert out.shape == (6, 20)
    # Cubic convolution is exact on linear functions: output j samples the input at 2j + 0.5.
    np.testing.assert_allclose(out[:, 2:-2], np.tile(2 * np.arange(2, 18) + 0.5, (6, 1)), atol=1e-12)
    np.testing.assert_allclose(imresize_matlab(np.full((9, 7), 3.25), 0.5), 3.25, atol=1e-12)


def test_shipped_window_is_fspecial_7_7_over_6():
    _, _, window = pristine_params()
    x = np.arange(-3, 4)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(window, g / g.sum(), atol=1e-12)


def test_shipped_model_shapes():
    mu, cov, _ = pristine_params()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T, atol=1e-9)


def test_aggd_fit_recovers_known_laws():
    rng = np.random.default_rng(0)
    n = 200_000
    gauss = rng.normal(0.0, 1.5, n)  # GGD alpha 2, beta = sigma sqrt(2)
    laplace = rng.laplace(0.0, 0.7, n)  # GGD alpha 1, beta = scale
    # AGGD with alpha 2, beta_l = sqrt(2), beta_r = 2 sqrt(2): side masses 1/3 and 2/3 (beta_l : beta_r).
    asym = np.concatenate([-np.abs(rng.normal(0, 1.0, n // 3)), np.abs(rng.normal(0, 2.0, n - n // 3))])
    alpha, bl, br = aggd_fit(np.stack([gauss, laplace, asym]))
    assert alpha[0] == pytest.approx(2.0, abs=0.05) and bl[0] == pytest.approx(1.5 * math.sqrt(2), rel=0.02)
    assert alpha[1] == pytest.approx(1.0, abs=0.03) and br[1] == pytest.approx(0.7, rel=0.02)
    assert alpha[2] == pytest.approx(2.0, abs=0.05)
    assert bl[2] == pytest.approx(math.sqrt(2), rel=0.02) and br[2] == pytest.approx(2 * math.sqrt(2), rel=0.02)


def test_niqe_matches_octave_reference():
    y = _astronaut_y()
    assert niqe_gray(y) == pytest.approx(OCTAVE_ASTRONAUT_Y, abs=1e-9)
    assert niqe_gray(y[7:500, 11:470]) == pytest.approx(OCTAVE_ASTRONAUT_Y_CROP, abs=1e-9)
    # The camera's flat sky makes the MSCN signs there rounding noise: agreement to ~1e-4.
    assert niqe_gray(data.camera().astype(np.float64)) == pytest.approx(OCTAVE_CAMERA, abs=2e-4)


def test_niqe_rgb_uses_rounded_y_and_crop():
    rgb = data.astronaut().astype(np.float32) / 255.0
    assert niqe(rgb) == pytest.approx(OCTAVE_ASTRONAUT_Y, abs=1e-9)
    assert niqe(rgb, crop_border=4) == pytest.approx(niqe_gray(_astronaut_y()[4:-4, 4:-4]), abs=1e-12)


def test_niqe_rises_with_blur_and_noise():
    rgb = data.astronaut().astype(np.float32) / 255.0
    rng = np.random.default_rng(1)
    base = niqe(rgb)
    blurred = cv2.GaussianBlur(rgb, (0, 0), 2.0)
    noisy = np.clip(rgb + rng.normal(0, 0.08, rgb.shape).astype(np.float32), 0, 1)
    assert niqe(blurred) > base + 2 and niqe(noisy) > base + 2


def test_niqe_rejects_small_images():
    with pytest.raises(ValueError, match="96x96"):
        niqe(np.zeros((95, 200, 3), np.float32))
    with pytest.raises(ValueError, match="2 blocks"):
        niqe(data.astronaut()[:100, :190].astype(np.float32) / 255.0)
