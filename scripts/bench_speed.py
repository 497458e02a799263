"""The speed figures of docs/speed.md: eager fp32 (baseline) against the fast paths, one process.

  python scripts/bench_speed.py --json bench.json                 # CPU, 512 networks, filler weights
  python scripts/bench_speed.py --device cuda --batch 1,8          # GPU: adds fp16 and batching
"""

import argparse
import json
from pathlib import Path

import torch

from difface.benchmark import Setting, as_dicts, benchmark, results_table

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cpu")
ap.add_argument("--batch", default="1")
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--json", type=Path)
args = ap.parse_args()
batches = [int(b) for b in args.batch.split(",")]
low = ["bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
settings = []
for b in batches:
    settings += [Setting("fp32", b)] + [Setting(d, b) for d in low]
    settings += [Setting(d, b, channels_last=True) for d in ["fp32", *low]]
    settings += [Setting("fp32", b, compile=True)] + [Setting(d, b, channels_last=True, compile=True) for d in low]
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
res = benchmark("unet_ffhq512", "swinir_restoration512", settings, device=args.device, reps=args.reps)
print(results_table(res))
if args.json:
    args.json.write_text(json.dumps({"device": args.device, "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "results": as_dicts(res)}, indent=1))
