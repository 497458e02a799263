"""Gaussian blur kernels for the synthetic degradations (semantics of BasicSR's
`bivariate_Gaussian` / `random_mixed_kernels`, re-implemented with an explicit rng).

Convention: a kernel is a float64 (k, k) array, k odd, summing to 1. Row i holds the offset
y = i - k//2 (downwards) and column j the offset x = j - k//2 (rightwards); for k = 41 the grid is
-20..20. The kernel is the normalized bivariate Gaussian exp(-1/2 p^T Sigma^-1 p), p = (x, y), with
Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T and R(theta) = [[cos, -sin], [sin, cos]].
So with theta = 0, sigma_x spreads along image columns (horizontal) and sigma_y along rows; a
positive theta turns the sigma_x axis from +x towards +y, i.e. clockwise on screen.

Public API: gaussian_kernel, isotropic_gaussian_kernel, anisotropic_gaussian_kernel,
KernelParams, sample_kernel_params, random_mixed_kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KERNEL_TYPES = ("iso", "aniso")


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """Normalized bivariate Gaussian kernel on the grid -size//2..size//2 (module convention).

    Args: size odd; sigma_x, sigma_y > 0 (pixels) along the rotated axes; theta in radians.
    Returns: (size, size) float64 array, sum 1.
    """
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    ax = np.arange(size, dtype=np.float64) - size // 2
    x, y = np.meshgrid(ax, ax)  # x varies along columns, y along rows
    quad = inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y
    k = np.exp(-0.5 * quad)
    return k / k.sum()


def isotropic_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic kernel: gaussian_kernel(size, sigma, sigma). Returns (size, size) float64, sum 1."""
    return gaussian_kernel(size, sigma, sigma, 0.0)


def anisotropic_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Anisotropic kernel with axes sigma_x, sigma_y rotated by theta (module convention)."""
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


@dataclass(frozen=True)
class KernelParams:
    """Parameters of one blur kernel: kind "iso" or "aniso", sigmas in pixels, theta in radians."""

    kind: str
    sigma_x: float
    sigma_y: float
    theta: float

    def kernel(self, size: int) -> np.ndarray:
        """The (size, size) float64 kernel these parameters describe."""
        return gaussian_kernel(size, self.sigma_x, self.sigma_y, self.theta)


def sample_kernel_params(
    rng: np.random.Generator,
    sigma_range: tuple[float, float] = (0.1, 15.0),
    rotation_range: tuple[float, float] = (-math.pi, math.pi),
    probs: tuple[float, float] = (0.5, 0.5),
) -> KernelParams:
    """Draw a kernel as BasicSR's random_mixed_kernels(['iso', 'aniso'], probs) does.

    Draw order (fixed, part of the reproducibility contract): one uniform for the type; then
    iso: sigma ~ U(sigma_range), theta = 0; aniso: sigma_x, sigma_y ~ U(sigma_range)
    independently, then theta ~ U(rotation_range).
    """
    p_iso, p_aniso = probs
    if p_iso < 0 or p_aniso < 0 or p_iso + p_aniso <= 0:
        raise ValueError(f"kernel type probabilities must be >= 0 with a positive sum, got {probs}")
    if rng.random() * (p_iso + p_aniso) < p_iso:
        sigma = float(rng.uniform(*sigma_range))
        return KernelParams("iso", sigma, sigma, 0.0)
    sx = float(rng.uniform(*sigma_range))
    sy = float(rng.uniform(*sigma_range))
    theta = float(rng.uniform(*rotation_range))
    return KernelParams("aniso", sx, sy, theta)


def random_mixed_kernel(
    rng: np.random.Generator,
    size: int = 41,
    sigma_range: tuple[float, float] = (0.1, 15.0),
    rotation_range: tuple[float, float] = (-math.pi, math.pi),
    probs: tuple[float, float] = (0.5, 0.5),
) -> tuple[np.ndarray, KernelParams]:
    """Random iso/aniso Gaussian kernel (see sample_kernel_params for the draws).

    Returns: ((size, size) float64 kernel summing to 1, the KernelParams used).
    """
    params = sample_kernel_params(rng, sigma_range, rotation_range, probs)
    return params.kernel(size), params
