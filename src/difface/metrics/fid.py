"""Frechet Inception Distance (Heusel et al., NeurIPS 2017) with pytorch-fid's Inception network.

FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))  between Gaussians fitted to the 2048-d pool3
features of two image sets. The network is the TF "2015-12-05" Inception v3 as ported by pytorch-fid:
torchvision's Inception v3 layout (1008 classes, no auxiliary head) with its FID-specific blocks
(average pools that ignore padding; a max pool in the last block). Module names equal the keys of
`pt_inception-2015-12-05-6726825d.pth`, which loads strictly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from difface.atomic import atomic_write_bytes
from difface.metrics import backbones as mw


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool ignores the zero padding.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """InceptionE; `max_pool` selects the pool of the last block (pytorch-fid's FIDInceptionE_2)."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """forward: (B, 3, H, W) RGB in [0, 1] -> (B, 2048) pool3 features (input resized to 299x299)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, 32)
        self.Mixed_5c = FIDInceptionA(256, 64)
        self.Mixed_5d = FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, 128)
        self.Mixed_6c = FIDInceptionC(768, 160)
        self.Mixed_6d = FIDInceptionC(768, 160)
        self.Mixed_6e = FIDInceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # unused for FID; present so the official file loads strictly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def load_fid_inception(path: str | os.PathLike | None = None, *, allow_download: bool = False,
                       device: torch.device | str = "cpu") -> FIDInceptionV3:
    """FIDInceptionV3 with pytorch-fid's weights (registry `fid-inception` or `path`), eval mode."""
    model = FIDInceptionV3()
    file = mw.locate(mw.FID_INCEPTION, path, allow_download=allow_download)
    model.load_state_dict(mw.load_state_dict(file), strict=True)
    return model.eval().requires_grad_(False).to(device)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64).

    tr((S1 S2)^(1/2)) is computed as sum sqrt(eig(R S2 R)) with R = S1^(1/2) from a symmetric
    eigendecomposition: R S2 R is symmetric positive semi-definite and similar to S1 S2, so this is
    stable for the singular covariances of small sets, where a general sqrtm needs an eps fallback.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2.0)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root @ s2 @ root
    tr_covmean = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_features(fa: np.ndarray, fb: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D).

    Equal to `frechet_distance` on their `feature_statistics`. With centred features A, B and
    S1 = A^T A / (N1 - 1), S2 = B^T B / (N2 - 1), the non-zero eigenvalues of S1 S2 are the squared
    singular values of A B^T / sqrt((N1 - 1)(N2 - 1)), so tr((S1 S2)^(1/2)) is a nuclear norm of an
    (N1, N2) matrix: exact and cheap for sets smaller than D (no D x D decomposition).
    """
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    n1, n2 = len(fa), len(fb)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1] or min(n1, n2) < 2:
        raise ValueError(f"need two (N, D) feature sets with N >= 2 and one D, got {fa.shape} and {fb.shape}")
    if min(n1, n2) > fa.shape[1]:
        return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    a, b = fa - fa.mean(0), fb - fb.mean(0)
    nuclear = float(np.linalg.svd(a @ b.T, compute_uv=False).sum()) / np.sqrt((n1 - 1) * (n2 - 1))
    diff = fa.mean(0) - fb.mean(0)
    return float(diff @ diff + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2.0 * nuclear)


def frechet_distance_to_stats(features: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Frechet distance between the Gaussian fitted to (N, D) features and N(mu, sigma).

    Equal to `frechet_distance` on `feature_statistics(features)`. With centred features A, the
    non-zero eigenvalues of (A^T A / (N - 1)) sigma are those of the (N, N) symmetric matrix
    A sigma A^T / (N - 1), so for N < D no D x D decomposition is needed.
    """
    f = np.asarray(features, np.float64)
    mu, sigma = np.asarray(mu, np.float64).ravel(), np.asarray(sigma, np.float64)
    if f.ndim != 2 or len(f) < 2 or f.shape[1] != mu.size or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"need (N >= 2, D) features and D = {mu.size} statistics, got {f.shape} and {sigma.shape}")
    n = len(f)
    if n > f.shape[1]:
        return frechet_distance(*feature_statistics(f), mu, sigma)
    a = f - f.mean(0)
    m = a @ sigma @ a.T / (n - 1)
    tr_covmean = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None))))
    diff = f.mean(0) - mu
    return float(diff @ diff + (a * a).sum() / (n - 1) + np.trace(sigma) - 2.0 * tr_covmean)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (mu (D,), sigma (D, D)) with the unbiased covariance (N - 1), as pytorch-fid."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


@torch.inference_mode()
def extract_features(model: nn.Module, images: Iterable[np.ndarray], *, batch_size: int = 16) -> np.ndarray:
    """Pool3 features of (H, W, 3) float RGB [0, 1] images -> (N, 2048) float64 (any sizes: each resized)."""
    dev = next(model.parameters()).device
    feats, batch = [], []
    for img in images:
        batch.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
        if len(batch) == batch_size:
            feats.append(_run_batch(model, batch, dev))
            batch = []
    if batch:
        feats.append(_run_batch(model, batch, dev))
    return np.concatenate(feats, 0) if feats else np.zeros((0, 2048))


def _run_batch(model: nn.Module, batch: list[torch.Tensor], dev: torch.device) -> np.ndarray:
    sizes = {tuple(t.shape) for t in batch}
    if len(sizes) == 1:
        return model(torch.stack(batch).to(dev)).double().cpu().numpy()
    return np.concatenate([model(t[None].to(dev)).double().cpu().numpy() for t in batch], 0)


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **meta: str) -> None:
    """Write (mu, sigma) to an .npz file atomically (keys `mu`, `sigma`, plus string metadata)."""
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, **{k: np.array(v) for k, v in meta.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) from an .npz written by `save_statistics` or pytorch-fid (`mu`, `sigma`)."""
    with np.load(Path(path)) as z:
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"{path}: an FID statistics file needs arrays 'mu' and 'sigma', has {z.files}")
        return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
