"""What a run shows while it trains: sample grids (PNG under run_dir/samples/) and validation.

Prior: unconditional DDIM samples from pure noise (eta 0, fixed per-image seeds, so the grids of
successive steps are comparable) and, given an estimator and validation LQ faces, DifFace
restorations (rows: LQ | estimate | restoration [| HQ]). Estimator: PSNR / SSIM on the Y channel
over a paired validation folder and a grid (LQ | output | HQ). Inpainter: PSNR inside the holes and
over the whole composited image, on fixed validation faces with fixed seeded masks, and a grid
(masked input | output | composite | HQ).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from difface.core import DifFace
from difface.diffusion.sampling import EpsDenoiser, generator_noise, sample_loop
from difface.diffusion.schedule import Diffusion
from difface.images import write_image
from difface.metrics.psnr_ssim import psnr, ssim
from difface.train.config import TrainConfig
from difface.train.loop import SampleFn
from difface.train.steps import weighted_pixel_loss

log = logging.getLogger("difface.train")


def image_grid(columns: Sequence[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Columns of equal-shape batches (B, 3, H, W) in [0, 1] -> one (H', W', 3) float image, row b =
    image b of every column; `pad` white pixels between tiles."""
    b, _, h, w = columns[0].shape
    out = np.ones((b * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), dtype=np.float32)
    for j, col in enumerate(columns):
        imgs = col.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        for i in range(b):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = imgs[i]
    return out


def square_grid(images: torch.Tensor, pad: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> a near-square tiling as one (H', W', 3) image."""
    n = images.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    filler = images.new_ones((rows * cols - n, *images.shape[1:]))
    tiles = torch.cat([images, filler]).view(rows, cols, *images.shape[1:])
    return image_grid([tiles[:, j] for j in range(cols)], pad)


@torch.inference_mode()
def unconditional_samples(model: nn.Module, size: int, seeds: Sequence[int], respacing: str = "ddim25",
                          batch_size: int = 8) -> torch.Tensor:
    """DDIM (eta 0) samples from pure noise: (N, 3, size, size) in [0, 1]; image n uses seed n."""
    dev = next(model.parameters()).device
    diffusion = Diffusion.create(1000, "linear", respacing)
    denoiser = EpsDenoiser(model, diffusion, clip=True)
    out = []
    for s in range(0, len(seeds), batch_size):
        gens = [torch.Generator().manual_seed(int(x)) for x in seeds[s:s + batch_size]]
        noise_fn = generator_noise(gens)
        x = noise_fn(torch.zeros(len(gens), 3, size, size, device=dev))
        x = sample_loop(denoiser, diffusion, x, diffusion.num_timesteps, eta=0.0, noise_fn=noise_fn)
        out.append((x * 0.5 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)


def quality(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM (Y channel) of two (B, 3, H, W) batches in [0, 1]."""
    a = pred.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    b = gt.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return {"psnr_y": float(np.mean([psnr(x, y, y_channel=True) for x, y in zip(a, b)])),
            "ssim_y": float(np.mean([ssim(x, y, y_channel=True) for x, y in zip(a, b)]))}


def _samples_path(run_dir: Path, step: int, what: str) -> Path:
    return Path(run_dir) / "samples" / f"step_{step:08d}_{what}.png"


VAL_TIMESTEPS = (20, 80, 160, 240, 320, 400, 480, 600, 800, 999)


@torch.inference_mode()
def denoising_loss(model: nn.Module, images: torch.Tensor, timesteps: Sequence[int], seed: int = 0,
                   batch_size: int = 16) -> float:
    """Held-out denoising error of a prior: mean eps-MSE over every (image, t) pair.

    images (N, 3, H, W) in [0, 1]; t in `timesteps` (original steps of the 1000-step linear chain);
    the noise of image n at t comes from seed (seed, n, t), so the value is comparable across steps
    and runs. Lower is better; this is how the best EMA of a run is chosen.
    """
    dev = next(model.parameters()).device
    diffusion = Diffusion.create(1000, "linear", "")
    total, count = 0.0, 0
    for t in timesteps:
        for s in range(0, len(images), batch_size):
            x0 = images[s:s + batch_size].to(dev).float() * 2 - 1
            noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(
                int(seed) * 1_000_003 + (s + k) * 1009 + int(t))) for k in range(len(x0))]).to(dev)
            tt = torch.full((len(x0),), int(t), dtype=torch.long, device=dev)
            out = model(diffusion.q_sample(x0, tt, noise), tt).float()
            total += float((out[:, :3] - noise).square().mean(dim=(1, 2, 3)).sum())
            count += len(x0)
    return total / max(count, 1)


def make_prior_sample_fn(cfg: TrainConfig, estimator: nn.Module | None, val_lq: torch.Tensor | None,
                         val_hq: torch.Tensor | None) -> SampleFn:
    """Sample hook of the prior (module docstring). val_lq / val_hq: (N, 3, H, W) in [0, 1] or None.

    With val_hq, also `val_eps_mse`: `denoising_loss` at the VAL_TIMESTEPS within the trained range."""
    sc, size = cfg.sample, cfg.image_size
    t_top = cfg.diffusion.steps - 1 if cfg.diffusion.t_max is None else cfg.diffusion.t_max
    val_ts = [t for t in VAL_TIMESTEPS if t <= t_top]
    seeds = [cfg.seed + i for i in range(sc.num_samples)]
    t_max = cfg.diffusion.t_max
    can_sample = sc.num_samples > 0 and (t_max is None or t_max == cfg.diffusion.steps - 1)
    if sc.num_samples > 0 and not can_sample:
        log.info("diffusion.t_max = %s: the prior never sees pure noise, so no unconditional samples", t_max)

    def prior_samples(model: nn.Module, step: int, run_dir: Path) -> dict:
        metrics: dict[str, float] = {}
        if val_hq is not None and val_ts:
            metrics["val_eps_mse"] = denoising_loss(model, val_hq, val_ts, seed=cfg.seed)
        if can_sample:
            x = unconditional_samples(model, size, seeds, sc.respacing)
            write_image(_samples_path(run_dir, step, "samples"), square_grid(x))
        if estimator is not None and val_lq is not None:
            dev = next(model.parameters()).device
            pipe = DifFace.from_modules(model, estimator.to(dev), respacing=sc.restore_respacing)
            res = pipe.restore(val_lq, start_step=sc.start_step, eta=sc.eta,
                               seeds=[cfg.seed + i for i in range(len(val_lq))])
            cols = [val_lq, res.estimate.cpu(), res.result.cpu()] + ([val_hq] if val_hq is not None else [])
            write_image(_samples_path(run_dir, step, "restore"), image_grid(cols))
            if val_hq is not None:
                metrics.update({f"restore_{k}": v for k, v in quality(res.result, val_hq).items()})
        return metrics

    return prior_samples


def make_estimator_sample_fn(val_lq: torch.Tensor | None, val_hq: torch.Tensor | None, batch_size: int = 8,
                             grid_rows: int = 8) -> SampleFn:
    """Validation hook of the estimator: PSNR/SSIM (Y), L1 and a grid. Tensors (N, 3, H, W) in [0, 1]."""

    @torch.inference_mode()
    def estimator_validation(model: nn.Module, step: int, run_dir: Path) -> dict:
        if val_lq is None or val_hq is None:
            return {}
        dev = next(model.parameters()).device
        pred = torch.cat([model(val_lq[s:s + batch_size].to(dev)).float().clamp(0, 1).cpu()
                          for s in range(0, len(val_lq), batch_size)])
        k = min(grid_rows, len(pred))
        write_image(_samples_path(run_dir, step, "val"), image_grid([val_lq[:k], pred[:k], val_hq[:k]]))
        return {**quality(pred, val_hq), "l1": float((pred - val_hq).abs().mean())}

    return estimator_validation


def masked_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR (dB, RGB) over the pixels where mask is 1 (all pixels when mask is None) -> (B,).

    pred, gt: (B, 3, H, W) in [0, 1], both rounded to the 8-bit grid first (as saved PNGs);
    mask: (B, 1, H, W) in {0, 1}. An image without masked pixels gives NaN, a perfect one inf.
    """
    a = (pred.detach().float().clamp(0, 1) * 255).round()
    b = (gt.detach().float().clamp(0, 1) * 255).round()
    se = (a - b).square().sum(dim=1, keepdim=True)  # (B, 1, H, W), summed over channels
    m = torch.ones_like(se) if mask is None else mask.float()
    count = 3 * m.sum(dim=(1, 2, 3))
    mse = (se * m).sum(dim=(1, 2, 3)) / count
    return torch.where(count > 0, 10 * torch.log10(255.0**2 / mse), torch.full_like(mse, float("nan")))


def make_inpainter_sample_fn(val_gt: torch.Tensor | None, val_mask: torch.Tensor | None, hole_weight: float = 10.0,
                             batch_size: int = 8, grid_rows: int = 8) -> SampleFn:
    """Validation hook of the inpainter. val_gt (N, 3, H, W) in [0, 1]; val_mask (N, 1, H, W), 1 = missing.

    The network sees cat(gt * (1 - mask), mask). Metrics (means over the N images): psnr_hole (PSNR
    over the missing pixels), psnr (whole image after pasting the known pixels back, the way the
    result is used), psnr_raw (whole raw output), l1_hole, and loss (the training loss,
    `weighted_pixel_loss`). Grid rows: masked input | raw output | composite | HQ.
    """
    @torch.inference_mode()
    def inpainter_validation(model: nn.Module, step: int, run_dir: Path) -> dict:
        if val_gt is None or val_mask is None:
            return {}
        dev = next(model.parameters()).device
        lq = val_gt * (1 - val_mask)
        pred = torch.cat([model(torch.cat([lq[s:s + batch_size], val_mask[s:s + batch_size]], 1).to(dev))
                          .float().clamp(0, 1).cpu() for s in range(0, len(lq), batch_size)])
        comp = pred * val_mask + val_gt * (1 - val_mask)
        k = min(grid_rows, len(pred))
        write_image(_samples_path(run_dir, step, "val"), image_grid([lq[:k], pred[:k], comp[:k], val_gt[:k]]))
        err = (pred - val_gt).abs().mean(dim=1, keepdim=True)
        l1_hole = (err * val_mask).sum(dim=(1, 2, 3)) / val_mask.sum(dim=(1, 2, 3)).clamp_min(1)
        return {
            "psnr_hole": float(masked_psnr(pred, val_gt, val_mask).nanmean()),
            "psnr": float(masked_psnr(comp, val_gt).mean()),
            "psnr_raw": float(masked_psnr(pred, val_gt).mean()),
            "l1_hole": float(l1_hole.mean()),
            "loss": float(weighted_pixel_loss(pred, val_gt, val_mask, hole_weight).mean()),
        }

    return inpainter_validation
