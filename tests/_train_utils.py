"""Helpers shared by the tests/test_train_*.py files: tiny configs and random image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from difface.images import write_image
from difface.train.config import TrainConfig, from_dict

TINY_UNET = {"image_size": 32, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
             "attention_resolutions": [16], "num_head_channels": 32}
TINY_SWINIR = {"img_size": 4, "embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4}


def write_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """n random smooth-ish RGB PNGs of size x size in `folder` (returned)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], -1) * 0.3 + 0.5
        img = np.clip(base + 0.1 * rng.standard_normal((size, size, 3)), 0, 1).astype(np.float32)
        write_image(folder / f"img_{i:03d}.png", img)
    return folder


def tiny_config(task: str, folder: Path, **over) -> TrainConfig:
    """A small, fast config on `folder` (no sampling, no workers); `over` is a nested override dict."""
    d = {
        "model": {"unet": TINY_UNET} if task == "prior" else {"swinir": TINY_SWINIR},
        "data": {"folder": str(folder), "size": 32, "num_workers": 0, "flip": False},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 8, "micro_batch": None,
                  "ema_rate": 0.9 if task == "prior" else None},
        "sample": {"num_samples": 0},
        "max_steps": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 0, "seed": 123,
    }
    for key, value in over.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    return from_dict(d, task)


def single_thread():
    """Generator for an autouse fixture: torch on one thread during a test module, then restored.

    The test machine's two cores are shared; with two OpenMP threads competing against other
    processes a tiny UNet step takes seconds instead of a fraction of a second.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
