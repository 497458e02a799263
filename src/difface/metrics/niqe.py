"""NIQE, the "completely blind" natural image quality evaluator (Mittal, Soundararajan and Bovik,
IEEE SPL 2013), compatible with the authors' MATLAB release (`computequality.m`).

Steps: Y channel of the uint8 image (BT.601, [16, 235], rounded like MATLAB's uint8 output), optional
border crop, crop to whole 96x96 blocks; at two scales (the image, then MATLAB `imresize(im, 0.5)`,
bicubic with antialiasing): MSCN coefficients (I - mu) / (sigma + 1) with a 7x7 Gaussian
(sigma 7/6, replicate borders), and per block 18 features: the GGD fit of the coefficients (2) and
the AGGD fits of the products with 4 neighbours (4 x 4). The quality is the Mahalanobis-like
distance sqrt((mu_p - mu_d)^T ((S_p + S_d) / 2)^+ (mu_p - mu_d)) between the fitted image model and
the pristine model `niqe_pris_params.npz` (from BasicSR, Apache-2.0; see assets/niqe/NOTICE).
Lower is better.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from difface.metrics.psnr_ssim import to_uint8_grid

BLOCK = 96
_GAM = np.arange(0.2, 10.001, 0.001)  # the MATLAB grid 0.2:0.001:10


@lru_cache(maxsize=1)
def _gamma_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gamma(1/a), Gamma(2/a), Gamma(3/a) on the grid and r(a) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    g1, g2, g3 = (np.array([math.gamma(k / a) for a in _GAM]) for k in (1.0, 2.0, 3.0))
    return g1, g2, g3, g2**2 / (g1 * g3)


@lru_cache(maxsize=1)
def pristine_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36), window (7, 7)) of the shipped pristine model, float64."""
    with resources.files("difface").joinpath("assets/niqe/niqe_pris_params.npz").open("rb") as f:
        z = np.load(f)
        return z["mu_pris_param"].ravel().copy(), z["cov_pris_param"].copy(), z["gaussian_window"].copy()


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    return inner + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))


def resize_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize contributions along one axis: (weights (out, P), 0-based source indices (out, P)).

    Convention: output pixel j (1-based) maps to input coordinate u = j / scale + 0.5 (1 - 1 / scale);
    when shrinking, the kernel is stretched by 1 / scale (antialiasing); borders mirror symmetrically.
    """
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    idx = left[:, None] + np.arange(int(math.ceil(width)) + 2)[None, :]
    d = u[:, None] - idx
    w = scale * _cubic(scale * d) if scale < 1 else _cubic(d)
    w /= w.sum(axis=1, keepdims=True)
    keep = np.any(w != 0, axis=0)
    w, idx = w[:, keep], idx[:, keep]
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    return w, mirror[np.mod(idx - 1, 2 * in_len).astype(np.int64)]


def imresize_matlab(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(img, scale)` (bicubic, antialias) of an (H, W) float64 array, no clipping.

    Returns (ceil(H * scale), ceil(W * scale)) float64.
    """
    h, w = img.shape
    oh, ow = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    wr, ir = resize_weights(h, oh, scale)
    out = np.einsum("op,opw->ow", wr, img[ir])
    wc, ic = resize_weights(w, ow, scale)
    return np.einsum("op,hop->ho", wc, out[:, ic])


def _aggd_index(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) samples -> (grid index of alpha, left std, right std), (N,) each (MATLAB estimateaggdparam)."""
    r_gam = _gamma_tables()[3]
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.sum(np.where(neg, x * x, 0.0), 1) / np.sum(neg, 1))
        right = np.sqrt(np.sum(np.where(pos, x * x, 0.0), 1) / np.sum(pos, 1))
        gh = left / right
        rhat = np.mean(np.abs(x), 1) ** 2 / np.mean(x * x, 1)
        rnorm = rhat * (gh**3 + 1.0) * (gh + 1.0) / (gh**2 + 1.0) ** 2
    idx = np.zeros(len(x), dtype=np.int64)  # a NaN ratio selects the first grid value, as MATLAB's min
    for s in range(0, len(x), 256):  # chunks bound the (N, 9801) table
        part = rnorm[s:s + 256]
        ok = np.isfinite(part)
        sub = np.zeros(len(part), dtype=np.int64)
        sub[ok] = np.argmin((r_gam[None, :] - part[ok, None]) ** 2, 1)
        idx[s:s + 256] = sub
    return idx, left, right


def aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row of (N, M) samples -> (alpha, beta_left, beta_right), (N,) each.

    alpha is the value on the grid 0.2:0.001:10 whose r(alpha) is closest to the normalised moment
    ratio; beta = std * sqrt(Gamma(1/alpha) / Gamma(3/alpha)). Rows with no negative (or positive)
    sample give NaN betas and alpha = 0.2.
    """
    g1, _, g3, _ = _gamma_tables()
    idx, left, right = _aggd_index(x)
    ratio = np.sqrt(g1[idx] / g3[idx])
    return _GAM[idx], left * ratio, right * ratio


def _block_features(mscn_map: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """(H, W) MSCN map tiled by (bh, bw) blocks -> (blocks, 18) features (NIQE computefeature)."""
    h, w = mscn_map.shape
    blocks = mscn_map.reshape(h // bh, bh, w // bw, bw).transpose(2, 0, 1, 3).reshape(-1, bh, bw)
    g1, g2, _, _ = _gamma_tables()
    alpha, bl, br = aggd_fit(blocks.reshape(len(blocks), -1))
    feats = [alpha, (bl + br) / 2.0]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # circular neighbours, as MATLAB circshift
        prod = blocks * np.roll(blocks, shift, axis=(1, 2))
        a, pl, pr = aggd_fit(prod.reshape(len(blocks), -1))
        idx = np.rint((a - 0.2) / 0.001).astype(np.int64)
        feats += [a, (pr - pl) * g2[idx] / g1[idx], pl, pr]
    return np.stack(feats, 1)


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of an (H, W) float64 image (replicate borders)."""
    mu = cv2.filter2D(img, cv2.CV_64F, window, borderType=cv2.BORDER_REPLICATE)
    var = cv2.filter2D(img * img, cv2.CV_64F, window, borderType=cv2.BORDER_REPLICATE) - mu * mu
    return (img - mu) / (np.sqrt(np.abs(var)) + 1.0)


def niqe_gray(img: np.ndarray, params: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
    """NIQE of an (H, W) luminance image on [0, 255] (float64) holding at least two 96x96 blocks."""
    mu_p, cov_p, window = params or pristine_params()
    h, w = (img.shape[0] // BLOCK) * BLOCK, (img.shape[1] // BLOCK) * BLOCK
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}x{BLOCK} pixels, got {img.shape}")
    x = np.asarray(img, np.float64)[:h, :w]
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(mscn(x, window), BLOCK // scale, BLOCK // scale))
        if scale == 1:
            x = imresize_matlab(x, 0.5)
    dist = np.concatenate(feats, 1)
    complete = dist[~np.isnan(dist).any(1)]
    if len(complete) < 2:
        raise ValueError(f"NIQE needs at least 2 blocks of {BLOCK}x{BLOCK} pixels with structure, got "
                         f"{len(complete)} from a {img.shape[0]}x{img.shape[1]} image")
    mu_d = np.nanmean(dist, 0)
    cov_d = np.cov(complete, rowvar=False)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2.0) @ d))


def y_uint8(rgb255: np.ndarray) -> np.ndarray:
    """BT.601 Y of integer-valued (H, W, 3) RGB on [0, 255], rounded half up like MATLAB's uint8
    `rgb2ycbcr`; computed in exact integer arithmetic so that values such as 125.5 round up."""
    q = np.rint(rgb255).astype(np.int64) @ np.array([65481, 128553, 24966], np.int64)  # 1000 * 255 * (Y - 16)
    return (16 + (q + 127500) // 255000).astype(np.float64)


def niqe(rgb: np.ndarray, *, crop_border: int = 0) -> float:
    """NIQE of an (H, W, 3) float RGB image in [0, 1] on its BT.601 Y channel (lower is better)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    y = y_uint8(to_uint8_grid(rgb))
    if crop_border > 0:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_gray(y)
