"""Where one UNet forward spends its time: per resolution level (time share against FLOP share) and per op.

  python scripts/benchmarks/profile_unet.py --net unet_ffhq512 --json docs/results/profile_unet512_cpu.json

Filler weights (speed does not depend on them), batch 1, eager fp32 unless --channels-last. The level
table times every top-level block (input_blocks.i, middle_block, output_blocks.i, out) with forward
hooks (CPU work is synchronous) and counts its FLOPs with torch.utils.flop_counter; a level whose time
share is far above its FLOP share is memory-bound (GroupNorm, SiLU, adds, concatenations over large
activations). The op table is torch.profiler's self CPU time per aten op.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from difface import models


def _blocks(net: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    out = [(f"input_blocks.{i}", b) for i, b in enumerate(net.input_blocks)]
    out.append(("middle_block", net.middle_block))
    out += [(f"output_blocks.{i}", b) for i, b in enumerate(net.output_blocks)]
    out.append(("out", net.out))
    return out


def level_table(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, reps: int) -> list[dict]:
    """Per spatial size of a block's input: seconds (minimum over reps of the summed block times) and GFLOP."""
    blocks = _blocks(net)
    size_of: dict[str, int] = {}
    spent: dict[str, float] = defaultdict(float)
    start: dict[str, float] = {}
    hooks = []
    for name, b in blocks:
        def pre(_m, args, name=name):
            size_of[name] = int(args[0].shape[-1])
            start[name] = time.perf_counter()

        def post(_m, _args, _out, name=name):
            spent[name] += time.perf_counter() - start[name]

        hooks += [b.register_forward_pre_hook(pre), b.register_forward_hook(post)]
    best: dict[str, float] = {}
    with torch.inference_mode():
        net(x, t)  # warm-up
        for _ in range(reps):
            spent.clear()
            net(x, t)
            for k, v in spent.items():
                best[k] = min(best.get(k, v), v)
    for h in hooks:
        h.remove()
    flops: dict[str, float] = {}
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x, t)
    per_module = counter.get_flop_counts()
    for name, _ in blocks:
        key = f"UNetModel.{name}"
        flops[name] = float(sum(per_module.get(key, {}).values()))
    levels: dict[int, dict] = defaultdict(lambda: {"seconds": 0.0, "gflop": 0.0, "blocks": 0})
    for name, _ in blocks:
        lv = levels[size_of[name]]
        lv["seconds"] += best[name]
        lv["gflop"] += flops[name] / 1e9
        lv["blocks"] += 1
    total_s = sum(v["seconds"] for v in levels.values())
    total_f = sum(v["gflop"] for v in levels.values())
    rows = []
    for size in sorted(levels, reverse=True):
        v = levels[size]
        rows.append({"size": size, "blocks": v["blocks"], "seconds": round(v["seconds"], 4),
                     "time_share": round(v["seconds"] / total_s, 4), "gflop": round(v["gflop"], 2),
                     "flop_share": round(v["gflop"] / total_f, 4) if total_f else 0.0,
                     "gflop_per_s": round(v["gflop"] / v["seconds"], 1) if v["seconds"] else 0.0})
    return rows


def op_table(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, top: int) -> list[dict]:
    """Self CPU seconds per aten op over one forward (after a warm-up), largest first."""
    with torch.inference_mode():
        net(x, t)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x, t)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "calls": e.count, "self_seconds": round(e.self_cpu_time_total / 1e6, 4),
             "share": round(e.self_cpu_time_total / total, 4)} for e in events[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default="unet_ffhq512", help="a UNet preset of difface.models (default unet_ffhq512)")
    ap.add_argument("--reps", type=int, default=2, help="timed forwards for the level table (minimum per block)")
    ap.add_argument("--top", type=int, default=12, help="rows of the op table")
    ap.add_argument("--channels-last", action="store_true", help="profile the channels-last fp32 layout instead")
    ap.add_argument("--json", type=Path, help="write both tables here")
    args = ap.parse_args()
    net = models.fill_deterministic(models.build(args.net)).eval()
    size = net.config.image_size
    x = torch.randn(1, net.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400])
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    load = os.getloadavg()[0]
    print(f"{args.net}, batch 1, {'channels-last ' if args.channels_last else ''}fp32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}")
    levels = level_table(net, x, t, args.reps)
    print("\n| input size | blocks | seconds | time share | GFLOP | FLOP share | GFLOP/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in levels:
        print(f"| {r['size']} | {r['blocks']} | {r['seconds']:.3f} | {100 * r['time_share']:.1f}% | {r['gflop']:.1f} | "
              f"{100 * r['flop_share']:.1f}% | {r['gflop_per_s']:.0f} |")
    ops = op_table(net, x, t, args.top)
    print("\n| aten op | calls | self seconds | share |\n|---|---:|---:|---:|")
    for r in ops:
        print(f"| {r['op']} | {r['calls']} | {r['self_seconds']:.3f} | {100 * r['share']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps({"net": args.net, "channels_last": args.channels_last, "load_average": load,
                                         "threads": torch.get_num_threads(), "levels": levels, "ops": ops},
                                        indent=1))


if __name__ == "__main__":
    main()
