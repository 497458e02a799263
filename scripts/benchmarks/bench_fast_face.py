"""One warm aligned 512 face under `--preset fast`, counted in eager fp32 UNet forwards of the same run.

The speed goal was a 512 face (official networks) in at most 2.5 eager fp32 UNet forwards. This script
measures, in one process and interleaved over --rounds rounds (each figure the minimum of its rounds):

  - one eager fp32 UNet forward (ffhq512, batch 1) and one eager fp32 SwinIR forward: the units;
  - a whole `DifFace.restore` of one 512 face from the official start (t = 400, eta 0) for each setting:
    the official loop is projected from the two units (1 estimator + 100 UNet forwards: too long to run
    here), the others are run: eager fp32 with the fast sampler, and the fast preset's networks with it.

The networks carry the deterministic filler (speed does not depend on the weights). The official 512
prior has no fitted schedule yet (difface.schedules: none can be fitted without its weights), so the fast
sampler runs on the timesteps fitted for the bundled prior: the cost of a setting depends only on its
number of evaluations, not on where they fall. Its quality at 512 is unverified until real weights are
at hand.

  PYTHONPATH=src DIFFACE_HOME=filler512 python scripts/benchmarks/bench_fast_face.py \\
      --json docs/results/fast_face512.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from difface.backends import available_backends
from difface.core import BUNDLED_DIR, DifFace
from difface.diffusion.solvers import FewStepSampler
from difface.models import build, fill_deterministic
from difface.presets import FAST_NFE, FAST_SAMPLER, Machine, resolve
from difface.schedules import fitted_timesteps


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--backends", default=None, help="comma list of the backends to run the fast sampler "
                    "through (default: the preset's choice on this machine, and every other one installed)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = Machine.detect("cpu")
    preset = resolve("fast", {}, machine)
    opts = preset.options
    ts = fitted_timesteps(BUNDLED_DIR / "prior.safetensors", method=FAST_SAMPLER, nfe=FAST_NFE, t_start=400)
    if ts is None:
        raise SystemExit("no fitted schedule of the bundled prior for the fast sampler")
    print(f"{preset.line}\nload average {load_avg()}; torch threads {torch.get_num_threads()}", flush=True)

    prior, estimator = fill_deterministic(build("unet_ffhq512")), fill_deterministic(build("swinir_restoration512"))
    eager = DifFace.from_modules(prior, estimator)
    sampler = FewStepSampler(eager.diffusion.base(), tuple(ts), FAST_SAMPLER, 0.0)
    chosen = opts["backend"]
    names = args.backends.split(",") if args.backends else \
        [chosen] + [b for b in available_backends() if b not in ("torch", chosen)]
    settings = {f"eager fp32, {FAST_SAMPLER} {FAST_NFE} NFE": eager}
    if "torch" in names or opts["fast"]:
        settings[f"torch fp32 channels-last, {FAST_SAMPLER} {FAST_NFE} NFE"] = eager.optimized(channels_last=True)
    setup = {}
    for b in names:
        if b == "torch":
            continue
        label = f"{b} fp32, {FAST_SAMPLER} {FAST_NFE} NFE" + (" (the preset's choice)" if b == chosen else "")
        t0 = time.perf_counter()
        settings[label] = eager.with_backend(b, dtype="fp32")
        setup[label] = time.perf_counter() - t0
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), 399, dtype=torch.long)

    def face(model: DifFace) -> None:
        model.restore(x, start_step=100, eta=0.0, seeds=[0], sampler=sampler)

    with torch.inference_mode():
        prior(x * 2 - 1, t)
        estimator(x)  # warm the units
        for label, model in settings.items():
            t0 = time.perf_counter()
            face(model)  # warm: first forwards, sessions, compilation
            setup[label] = setup.get(label, 0.0) + time.perf_counter() - t0
            print(f"warm {label}: {setup[label]:.1f} s", flush=True)
        runs: dict[str, list[float]] = {"unet": [], "swinir": [], **{k: [] for k in settings}}
        for r in range(args.rounds):
            runs["unet"].append(seconds(lambda: prior(x * 2 - 1, t)))
            runs["swinir"].append(seconds(lambda: estimator(x)))
            for label, model in settings.items():
                runs[label].append(seconds(lambda model=model: face(model)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()), flush=True)
    unet, swinir = min(runs["unet"]), min(runs["swinir"])
    rows = [{"setting": "official loop, eager fp32 (projected: 1 SwinIR + 100 UNet forwards)",
             "seconds": swinir + 100 * unet, "unet_forwards": (swinir + 100 * unet) / unet, "projected": True}]
    rows += [{"setting": k, "seconds": min(runs[k]), "unet_forwards": min(runs[k]) / unet, "projected": False}
             for k in settings]
    print(f"\none eager fp32 UNet forward {unet:.3f} s, SwinIR forward {swinir:.3f} s ({swinir / unet:.2f} UNet)")
    print("| setting | seconds per face | eager fp32 UNet forwards | vs the official loop |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['seconds']:.2f} | {row['unet_forwards']:.2f} | "
              f"{rows[0]['seconds'] / row['seconds']:.1f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "preset_line": preset.line, "timesteps": list(ts), "rounds": args.rounds,
            "threads": torch.get_num_threads(), "load_average_end": load_avg(), "unet_forward_s": unet,
            "swinir_forward_s": swinir, "setup_s": setup, "runs": runs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
