"""PSNR and SSIM with the conventions of face-restoration papers (BasicSR / MATLAB).

Inputs are the project's images: (H, W, 3) float RGB in [0, 1]. They are first rounded to the
uint8 grid (as when the images are read from 8-bit files) and compared on [0, 255]:

* RGB: all three channels; SSIM is the mean of the per-channel SSIMs.
* Y: BT.601 luma on [16, 235], Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B the
  uint8 values; Y is not rounded again (BasicSR `to_y_channel`).
* `crop_border` pixels are removed on every side before measuring.
* SSIM (Wang et al. 2004, as in BasicSR `_ssim` and the MATLAB reference `ssim_index`): 11x11
  Gaussian window with sigma 1.5, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, statistics kept only
  where the window fits inside the image ("valid" region), then averaged.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0  # applied to R, G, B on [0, 255]


def to_uint8_grid(rgb: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> float64 on [0, 255] holding integers (round half to even)."""
    return np.rint(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255.0)


def rgb_to_y(rgb255: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) RGB array on [0, 255] -> (H, W) float64 on [16, 235]."""
    return rgb255 @ _Y_WEIGHTS + 16.0


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    """[0, 1] RGB -> float64 (H', W', C) on [0, 255], optionally Y only and border-cropped."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    x = to_uint8_grid(img)
    if y_channel:
        x = rgb_to_y(x)[:, :, None]
    if crop_border > 0:
        x = x[crop_border:-crop_border, crop_border:-crop_border]
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {img.shape[:2]} image")
    return x


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"images differ in shape: {np.shape(pred)} vs {np.shape(gt)}")


def psnr(pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB, peak 255; +inf for identical images.

    Args: pred, gt: (H, W, 3) float RGB in [0, 1]. Returns: 10 log10(255^2 / MSE).
    """
    _check_pair(pred, gt)
    a, b = _prepare(pred, crop_border, y_channel), _prepare(gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 2-D Gaussian window (size, size), float64, sum 1 (MATLAB fspecial('gaussian'))."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim_channel(a: np.ndarray, b: np.ndarray, window: np.ndarray | None = None) -> float:
    """Mean SSIM of two (H, W) float64 images on [0, 255] over the valid region of the window."""
    window = gaussian_window() if window is None else window
    r = window.shape[0] // 2
    if a.shape[0] <= 2 * r or a.shape[1] <= 2 * r:
        raise ValueError(f"SSIM needs images larger than {window.shape[0]} pixels, got {a.shape}")
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        # Correlation with a symmetric kernel; only the valid part is kept, so the border mode is moot.
        return cv2.filter2D(x, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(pred: np.ndarray, gt: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (mean over channels), BasicSR/MATLAB conventions (module docstring).

    Args: pred, gt: (H, W, 3) float RGB in [0, 1]. Returns: SSIM in [-1, 1], 1 for identical images.
    """
    _check_pair(pred, gt)
    a, b = _prepare(pred, crop_border, y_channel), _prepare(gt, crop_border, y_channel)
    window = gaussian_window()
    return float(np.mean([ssim_channel(a[:, :, c], b[:, :, c], window) for c in range(a.shape[2])]))
