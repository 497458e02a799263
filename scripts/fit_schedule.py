"""Fit the timesteps of a 5-NFE DDIM to the official 100-step loop ("Align Your Steps"-style, training-free).

  python scripts/fit_schedule.py --calib 32 --count 100 --json docs/results/fit_schedule5.json

Faces: the splits/celeba64_val.txt photos of ../shared/data/celeba-aligned-89x109, aligned to 64
(`difface data align`), degraded with `difface degrade --preset celeba-test --seed 0`; sorted by name,
the first --count are the measured validation faces, the next --calib the calibration faces (never
measured). On the calibration faces, coordinate descent over the four free timesteps t1 > t2 > t3 > t4
of DDIM (eta 0) from the official start state (respaced step 100, t = 400, the same diffused estimate and
seed as the official loop) minimises the MSE to the official 100-step result. The fitted schedule and the
evenly spaced one ([400, 320, 240, 160, 80]) are then measured on the validation faces against the
official loop with the gates of docs/speed.md (PSNR to it >= 35 dB; PSNR-Y / SSIM-Y vs truth no lower;
NIQE within 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from difface.diffusion.solvers import FewStepSampler
from difface.metrics.psnr_ssim import psnr
from difface.restore import DifFace

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT.parent / "shared" / "data" / "celeba-aligned-89x109"
sys.path.insert(0, str(ROOT / "scripts"))
from eval_bundled import load_pairs, metrics, run  # noqa: E402


def _difface(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "difface", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode not in (0, 1):  # align: 1 when some photo has no detectable face
        sys.exit(f"difface {' '.join(args)} exited with {r.returncode}")


def _prepare(work: Path, n: int) -> tuple[Path, Path]:
    raw = work / "raw"
    raw.mkdir()
    for s in (ROOT / "splits" / "celeba64_val.txt").read_text().split()[:n]:
        shutil.copy(RAW / (Path(s).stem + ".jpg"), raw)
    _difface("data", "align", str(raw), "-o", str(work / "al"), "--size", "64")
    _difface("degrade", str(work / "al"), "-o", str(work / "deg"), "--preset", "celeba-test", "--seed", "0")
    return work / "deg" / "lq", work / "deg" / "hq"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100, help="validation faces measured")
    ap.add_argument("--calib", type=int, default=32, help="calibration faces (after the validation ones)")
    ap.add_argument("--sweeps", default="20,8,2", help="coordinate-descent step sizes, one sweep each")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not RAW.is_dir():
        sys.exit(f"skipped: {RAW} is absent (the research-only CelebA crops of ../shared/data)")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="difface-fit-"))
    try:
        lq_dir, hq_dir = _prepare(work, int((args.count + args.calib) * 1.1) + 2)
        names, lq, hq = load_pairs(lq_dir, hq_dir, args.count + args.calib)
        assert len(names) >= args.count + args.calib, f"only {len(names)} faces aligned"
        v_lq, v_hq = lq[: args.count], hq[: args.count]
        c_lq = lq[args.count: args.count + args.calib]
        model = DifFace.load()
        base = model.diffusion.base()
        t0 = time.perf_counter()
        c_ref = run(model, c_lq, 64, 0, start_step=100, eta=0.0)
        print(f"official 100-step loop on {len(c_lq)} calibration faces: {time.perf_counter() - t0:.1f} s", flush=True)

        def few(ts, x):
            return run(model, x, 64, 0, start_step=100, eta=0.0, sampler=FewStepSampler(base, tuple(ts), "ddim", 0.0))

        def loss(ts) -> float:
            return float(np.mean((few(ts, c_lq) - c_ref) ** 2))

        ts = [400, 320, 240, 160, 80]
        best = loss(ts)
        print(f"even {ts}: calibration MSE {best:.3e}", flush=True)
        for step in (int(s) for s in args.sweeps.split(",")):
            for i in range(1, 5):
                hi, lo = ts[i - 1], ts[i + 1] if i < 4 else 0
                for cand in (ts[i] - step, ts[i] + step, ts[i] - 2 * step, ts[i] + 2 * step):
                    if not lo < cand < hi:
                        continue
                    trial = ts[:i] + [cand] + ts[i + 1:]
                    val = loss(trial)
                    if val < best:
                        best, ts = val, trial
                print(f"step {step}, t{i}: {ts} MSE {best:.3e}", flush=True)
        t0 = time.perf_counter()
        ref = run(model, v_lq, 50, 0, start_step=100, eta=0.0)
        ref_s = time.perf_counter() - t0
        rows = [{"setting": "official DDIM, eta 0", "nfe": 100, **metrics(ref, v_hq), "seconds": round(ref_s, 1)}]
        for label, sched in (("ddim 5, even", [400, 320, 240, 160, 80]), ("ddim 5, fitted", ts)):
            t0 = time.perf_counter()
            out = few(sched, v_lq)
            rows.append({"setting": label, "nfe": 5, "timesteps": sched, **metrics(out, v_hq),
                         "psnr_vs_official": float(np.mean([psnr(o, r) for o, r in zip(out, ref)])),
                         "seconds": round(time.perf_counter() - t0, 1)})
        print(f"\n{args.count} validation faces (calibration: the next {args.calib}), load average "
              f"{os.getloadavg()[0]:.1f}")
        print("| setting | timesteps | PSNR vs official (dB) | PSNR-Y | SSIM-Y | NIQE (x4) |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            vs = r.get("psnr_vs_official", float("inf"))
            print(f"| {r['setting']} | {r.get('timesteps', 'respaced 100..1')} | {vs:.2f} "
                  f"| {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['niqe_x4']:.2f} |")
        if args.json:
            args.json.write_text(json.dumps({"model": model.name, "count": args.count, "calib": args.calib,
                                             "fitted": ts, "calib_mse": best, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
