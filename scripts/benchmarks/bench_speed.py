"""The speed figures of docs/speed.md: eager fp32 (baseline) against the fast paths, one process.

  python scripts/benchmarks/bench_speed.py --json bench.json                 # CPU, 512 networks, filler weights
  python scripts/benchmarks/bench_speed.py --device cuda --batch 1,8          # GPU: adds fp16 and batching
  python scripts/benchmarks/bench_speed.py --backends all --rounds 3 --json docs/results/backends512_cpu.json
                                  # torch / onnxruntime / openvino x precision, interleaved, min of the rounds
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
ap.add_argument("--backends", help="'all' or a comma list of backend:dtype[:cl] (e.g. torch:bf16:cl,openvino:fp32): "
                "the interleaved backend table of docs/speed.md instead of the torch settings")
ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --backends (minimum reported)")
args = ap.parse_args()
if args.backends:
    from difface.benchmark import BACKEND_SETTINGS, backend_table, benchmark_backends

    chosen = None if args.backends == "all" else [
        (p.split(":")[0], p.split(":")[1], p.endswith(":cl")) for p in args.backends.split(",")]
    import os

    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, load average {load[0]:.1f} (1 min)")
    res = benchmark_backends("unet_ffhq512", "swinir_restoration512", chosen or list(BACKEND_SETTINGS),
                             batch=int(args.batch.split(",")[0]), rounds=args.rounds)
    print(backend_table(res))
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.1f} (1 min), {load_after[1]:.1f} (5 min)")
    if args.json:
        from dataclasses import asdict

        args.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "load_before": load, "load_after": load_after,
                                         "results": [asdict(r) for r in res]}, indent=1))
    raise SystemExit(0)
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
