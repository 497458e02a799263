"""Few-step settings against the official loop on the 100 validation faces of the bundled model.

Each setting starts from the official start state (respaced step 100 of ddim250, t = 400, eta 0, seed 0 per
face) and is compared with the official 100-step result (PSNR in RGB, [0, 1]) and with the truth (PSNR-Y,
SSIM-Y, NIQE of the 4x bicubic upscale; ids_dlib when the [metrics] extra is installed), as
scripts/evaluations/eval_bundled.py samplers does. The fast preset's gates: PSNR to the official result >= 35 dB, PSNR-Y
and SSIM-Y no lower than the official loop's, NIQE at most 0.6 above it.

Settings: METHOD:NFE:even (evenly spaced, --sampler METHOD --nfe NFE) or METHOD:NFE:fitted (the schedule
stored with the model, difface.schedules) or METHOD:NFE:T0/T1/... (explicit timesteps).

example:
  PYTHONPATH=src python scripts/evaluations/eval_fast_preset.py --lq celeba64/val_celebatest/lq \
      --hq celeba64/val_celebatest/hq --settings ddim:5:even,ddim:5:fitted,ddim:10:even \
      --json docs/results/fast_preset_eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from eval_bundled import dlib_embedder, metrics  # scripts/ is on sys.path when run as a script
from fastsched_common import load_faces, reference, run, split_names

from difface.core import DifFace
from difface.diffusion.solvers import FewStepSampler, solver_timesteps
from difface.metrics.psnr_ssim import psnr
from difface.schedules import fitted_timesteps


def timesteps_of(model: DifFace, spec: str) -> tuple[str, tuple[int, ...]]:
    method, nfe, kind = spec.split(":")
    t_start = int(model.diffusion.timestep_map[100])
    if kind == "even":
        return method, tuple(solver_timesteps(t_start, int(nfe)))
    if kind == "fitted":
        ts = fitted_timesteps(model.sources["prior"], method=method, nfe=int(nfe), t_start=t_start)
        if ts is None:
            raise SystemExit(f"no fitted {method} {nfe} schedule stored for {model.sources['prior']}")
        return method, ts
    return method, tuple(int(t) for t in kind.split("/"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--settings", default="ddim:5:even,ddim:5:fitted,ddim:10:even")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/speed_ref"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = DifFace.from_pretrained(device="cpu")
    names = split_names(args.lq, "val")
    lq, hq = load_faces(args.lq, args.hq, names)
    emb = dlib_embedder()
    import cv2

    gt_emb = [emb.embed(cv2.resize(g, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).clip(0, 1))
              for g in hq] if emb else None
    t0 = time.perf_counter()
    ref = reference(model, lq, names, args.cache, args.batch)
    rows = [{"setting": "official DDIM, eta 0", "method": "official", "nfe": 100, "timesteps": None,
             "psnr_vs_official": None, **metrics(ref, hq, emb, gt_emb), "s_reference": time.perf_counter() - t0}]
    print(rows[-1], flush=True)
    base = model.diffusion.base()
    for spec in args.settings.split(","):
        method, ts = timesteps_of(model, spec)
        t0 = time.perf_counter()
        out = run(model, lq, args.batch, sampler=FewStepSampler(base, ts, method, 0.0))
        sec = time.perf_counter() - t0
        rows.append({"setting": spec, "method": method, "nfe": len(ts), "timesteps": list(ts),
                     "psnr_vs_official": float(np.mean([psnr(o, r) for o, r in zip(out, ref)])),
                     **metrics(out, hq, emb, gt_emb), "seconds": sec})
        print(rows[-1], flush=True)
    off = rows[0]
    for r in rows[1:]:
        r["gates"] = {"psnr_vs_official>=35": r["psnr_vs_official"] >= 35.0,
                      "psnr_y>=official": r["psnr_y"] >= off["psnr_y"],
                      "ssim_y>=official": r["ssim_y"] >= off["ssim_y"],
                      "niqe<=official+0.6": r["niqe_x4"] <= off["niqe_x4"] + 0.6}
        r["meets_gates"] = all(r["gates"].values())
    print("| setting | timesteps | PSNR vs official (dB) | PSNR-Y | SSIM-Y | NIQE (x4) | gates |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        ts = "" if r["timesteps"] is None else "/".join(map(str, r["timesteps"]))
        vs = "reference" if r["psnr_vs_official"] is None else f"{r['psnr_vs_official']:.2f}"
        gate = "" if "gates" not in r else ("all met" if r["meets_gates"] else
                                            "misses " + ", ".join(k for k, v in r["gates"].items() if not v))
        print(f"| {r['setting']} | {ts} | {vs} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['niqe_x4']:.2f} | "
              f"{gate} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"count": len(names), "faces": "first 100 sorted of " + str(args.lq),
                                         "prior_sha256": __import__("difface.schedules", fromlist=["x"])
                                         .prior_sha256(model.sources["prior"]), "threads": args.threads,
                                         "results": rows}, indent=1))


if __name__ == "__main__":
    main()
