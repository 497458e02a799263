"""Deviation of a whole bf16 restoration from the fp32 one (same seeds), bundled model, official N=100.

  python scripts/evaluations/bf16_deviation.py --lq celeba64/val_celebatest/lq --count 8
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from difface.core import DifFace
from difface.images import image_to_tensor, read_image

ap = argparse.ArgumentParser()
ap.add_argument("--lq", type=Path, required=True)
ap.add_argument("--count", type=int, default=8)
ap.add_argument("--start-step", type=int, default=100)
args = ap.parse_args()
model = DifFace.from_pretrained(device="cpu")
names = sorted(p.name for p in args.lq.glob("*.png"))[: args.count]
x = torch.cat([image_to_tensor(read_image(args.lq / n).rgb) for n in names])
seeds = list(range(len(x)))
ref = model.restore(x, start_step=args.start_step, eta=0.5, seeds=seeds).result
for dtype, fast in ((torch.bfloat16, False), (torch.bfloat16, True)):
    if fast:
        model = model.optimized(channels_last=True)
    out = model.restore(x, start_step=args.start_step, eta=0.5, seeds=seeds, dtype=dtype).result
    d = (out - ref).abs()
    mse = ((out - ref) ** 2).mean(dim=(1, 2, 3))
    psnr = float(np.mean([10 * np.log10(1 / m) for m in mse.tolist()]))
    label = "bf16 + channels-last" if fast else "bf16"
    print(f"{label:22} N={args.start_step}: max |d| {d.max():.4f}  mean |d| {d.mean():.5f}  PSNR vs fp32 {psnr:.2f} dB "
          f"({len(x)} faces, values in [0, 1])")
