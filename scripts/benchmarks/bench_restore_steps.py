"""Per-step time of a whole `DifFace.restore` call, the code path of `difface restore`, at 512.

Each setting: build the 512 networks (filler weights), apply the CLI's speed options, warm up (and
compile) with a 2-step restoration, then time restorations of 2 and 12 steps; per-step = difference / 10.

  python scripts/benchmarks/bench_restore_steps.py            # fp32 eager; bf16 --fast; bf16 --fast --compile
"""

import time

import torch

from difface.core import DifFace
from difface.models import build, fill_deterministic

SETTINGS = [("fp32", torch.float32, False, False), ("bf16 --fast", torch.bfloat16, True, False),
            ("bf16 --fast --compile", torch.bfloat16, True, True)]
y = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
for label, dtype, fast, comp in SETTINGS:
    prior, estimator = fill_deterministic(build("unet_ffhq512")), fill_deterministic(build("swinir_restoration512"))
    model = DifFace.from_modules(prior, estimator)
    if fast or comp:
        model = model.optimized(channels_last=fast, compile=comp)
    t0 = time.perf_counter()
    model.restore(y, start_step=2, seeds=[0], dtype=dtype)
    warm = time.perf_counter() - t0
    times = {}
    for n in (2, 12):
        t0 = time.perf_counter()
        model.restore(y, start_step=n, seeds=[0], dtype=dtype)
        times[n] = time.perf_counter() - t0
    step = (times[12] - times[2]) / 10
    print(f"{label:24} per step {step:.3f} s   2-step restore {times[2]:.2f} s   first call {warm:.1f} s", flush=True)
