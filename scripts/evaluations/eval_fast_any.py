"""Few-step settings against the official loop at any start, eta and task, on the 100 validation faces.

The faces and degradations are those of scripts/evaluations/eval_fast_preset.py (the first 100 sorted faces of
val_celebatest). Each face draws its noise from its own generator (seed 0), so the official loop and a
few-step setting start from the same state. Restoration: --start is a respaced step of ddim250 (100: t = 400)
or `auto` (the bundled model's per-image rule). Inpainting (--task inpaint): face k of the truth gets the mask
`difface.data.masks.seeded_mask(KIND, 64, 0, k)` with KIND cycling through irregular, box, outpainting, and
starts at --start (120: t = 480). Metrics of each setting: PSNR in RGB to the official loop's result, PSNR-Y and
SSIM-Y to the truth, NIQE of the 4x bicubic upscale, and with --alexnet LPIPS (AlexNet, v0.1) to the truth.
The gates: PSNR-Y and SSIM-Y no lower than the official loop's within --tol-psnr dB / --tol-ssim, NIQE within
--tol-niqe of it; at eta 0 also PSNR to the official result >= 35 dB (LPIPS is reported, not gated).

Settings: METHOD:NFE:SCHEDULE with SCHEDULE one of generic (the log-SNR positions of difface.schedules mapped
to each start), even (evenly spaced in t), fitted (stored for this prior) or f=F0/F1/... (the setting's own
log-SNR fractions, mapped to a fixed start: ddim_extrap:2:f=0/0.5); or `fast`: what `--preset fast` runs
for this model, start and eta (difface.fastplan, the same call as the preset's). Results are written to --json
after every setting.

example:
  PYTHONPATH=src python scripts/evaluations/eval_fast_any.py --lq DATA/val_celebatest/lq --hq DATA/val_celebatest/hq \\
      --start 100 --eta 0.5 --settings ddim:6:generic,dpmpp2m_sde:6:generic --json docs/results/fast_any_s100_eta05.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from eval_bundled import metrics  # scripts/ is on sys.path when run as a script
from fastsched_common import load_faces, split_names

from difface.backends import RuntimeNet, ort_runner
from difface.core import DifFace, bundled_model_paths
from difface.data.masks import seeded_mask
from difface.diffusion.solvers import FewStepSampler
from difface.fastplan import Plan, generic_timesteps
from difface.images import image_to_tensor
from difface.metrics.lpips import load_lpips
from difface.metrics.psnr_ssim import psnr
from difface.presets import FAST_NFE, FAST_SAMPLER
from difface.schedules import prior_sha256

KINDS = ("irregular", "box", "outpainting")
SEED = 0


def run(model: DifFace, task: str, lq: np.ndarray, masks: np.ndarray | None, start, eta: float, batch: int,
        **kw) -> tuple[np.ndarray, list[int]]:
    """Results (N, S, S, 3) in [0, 1] and the start steps, in batches (each face its own generator)."""
    out, steps = [], []
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i: i + batch]])
        if task == "inpaint":
            m = torch.from_numpy(masks[i: i + batch]).float()[:, None]
            r = model.inpaint(x, m, start_step=start, eta=eta, seeds=[SEED] * len(x), **kw)
        else:
            r = model.restore(x, start_step=start, eta=eta, seeds=[SEED] * len(x), **kw)
        out.append(r.result.permute(0, 2, 3, 1).numpy())
        steps += list(r.start_steps)
    return np.concatenate(out), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--task", choices=("restore", "inpaint"), default="restore")
    ap.add_argument("--prior", help="another prior file (default: the bundled model's)")
    ap.add_argument("--start", default="100", help="respaced start step of ddim250, or auto")
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--split", default="val", help="val (the first 100 sorted faces: the evaluation set) or calib:A:B "
                    "(sorted faces A..B-1, A >= 100: for choosing a setting without touching the evaluation set)")
    ap.add_argument("--settings", default="ddim:6:generic")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tol-psnr", type=float, default=0.1)
    ap.add_argument("--tol-ssim", type=float, default=0.002)
    ap.add_argument("--tol-niqe", type=float, default=0.3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fast_any_ref"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--alexnet", help="AlexNet backbone file for LPIPS (e.g. made by "
                    "scripts/maintainer/lpips_from_pypi.py); without it LPIPS is not measured")
    ap.add_argument("--unet-onnx", help="run the few-step settings with the prior's UNet from this ONNX graph on "
                    "onnxruntime (e.g. the int8 graph of scripts/benchmarks/bench_int8.py); the official loop stays "
                    "the prior file's, in torch fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = "inpainting" if args.task == "inpaint" else "restoration"
    prior, estimator = (str(p) for p in bundled_model_paths(task))
    model = DifFace.from_pretrained(prior=args.prior or prior, estimator=estimator, device="cpu")
    start = args.start if args.start == "auto" else int(args.start)
    names = split_names(args.lq, args.split)[: args.count]
    lq, hq = load_faces(args.lq, args.hq, names)
    masks = None
    if args.task == "inpaint":
        masks = np.stack([seeded_mask(KINDS[k % 3], hq.shape[1:3], SEED, k) for k in range(len(names))])
        lq = hq * (1 - masks[..., None])
    report = {"count": len(names), "faces": f"sorted faces of val_celebatest, split {args.split}", "task": args.task,
              "prior_sha256": prior_sha256(model.sources["prior"]), "prior_file": Path(model.sources["prior"]).name,
              "start": args.start, "eta": args.eta, "threads": args.threads, "results": []}
    rows = report["results"]
    scores = _scorer(hq, args.alexnet)

    key = hashlib.sha256(json.dumps([report["prior_sha256"], args.task, args.start, args.eta, names]).encode())
    cache = args.cache / f"official_{key.hexdigest()[:16]}.npz"
    t0 = time.perf_counter()
    if cache.exists():
        z = np.load(cache)
        ref, steps = z["out"], [int(s) for s in z["steps"]]
    else:
        ref, steps = run(model, args.task, lq, masks, start, args.eta, args.batch)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache.with_suffix(".tmp.npz"), out=ref, steps=np.array(steps))
        cache.with_suffix(".tmp.npz").replace(cache)
    if args.unet_onnx:
        run_graph, desc = ort_runner(args.unet_onnx, threads=args.threads)
        model.prior = RuntimeNet(run_graph, model.prior.config, desc)
        report["unet_onnx"] = Path(args.unet_onnx).name
    t_of = model.diffusion.timestep_map
    rows.append({"setting": "official", "nfe_mean": float(np.mean(steps)), "seconds": time.perf_counter() - t0,
                 "start_t": sorted({int(t_of[s]) if s else 0 for s in steps}), **scores(ref)})
    print(rows[-1], flush=True)
    _write(args.json, report)
    for spec in args.settings.split(","):
        method, nfe, schedule = spec.split(":") if spec != "fast" else (FAST_SAMPLER, str(FAST_NFE), "fast")
        t0 = time.perf_counter()
        sampler_at, plan_at = _spec(model, method, int(nfe), schedule, args.eta, start)
        kw = {"sampler": sampler_at(start)} if schedule.startswith("f=") else \
            {"sampler": method, "nfe": int(nfe), "schedule": schedule}
        out, _ = run(model, args.task, lq, masks, start, args.eta, args.batch, **kw)
        used = [_nfe(sampler_at(s)) for s in steps if s]
        plans = {s: plan_at(s) for s in sorted(set(steps)) if s}
        if spec == "fast" and len(plans) == 1:  # what the preset chose, not the placeholders it was called with
            method, nfe = next(iter(plans.values())).sampler, next(iter(plans.values())).nfe or 0
        rows.append({"setting": spec, "method": method, "nfe": int(nfe), "schedule": schedule,
                     "runs": {str(s): [p.sampler, list(p.timesteps or ()), p.source] for s, p in plans.items()},
                     "nfe_mean": float(np.sum(used) / len(steps)), "seconds": time.perf_counter() - t0,
                     "psnr_vs_official": _psnr_vs(out, ref), **scores(out)})
        _gates(rows[-1], rows[0], args)
        few_faces = [k for k, s in enumerate(steps) if s and not hasattr(sampler_at(s), "start")]
        if 0 < len(few_faces) < len(steps):  # automatic starts: the faces that ran few steps, against the official
            rows[-1]["few_step_faces"] = {"count": len(few_faces), "official": metrics(ref[few_faces], hq[few_faces]),
                                          "psnr_vs_official": _psnr_vs(out[few_faces], ref[few_faces]),
                                          **metrics(out[few_faces], hq[few_faces])}
        print(rows[-1], flush=True)
        _write(args.json, report)


def _scorer(hq: np.ndarray, alexnet: str | None):
    """metrics(out, hq) of eval_bundled, plus the mean LPIPS to the truth when an AlexNet file is given."""
    lp = load_lpips("alex", alexnet) if alexnet else None

    def scores(out: np.ndarray) -> dict[str, float]:
        r = metrics(out, hq)
        if lp is not None:
            with torch.no_grad():
                r["lpips"] = float(lp(torch.from_numpy(out).permute(0, 3, 1, 2).float(),
                                      torch.from_numpy(hq).permute(0, 3, 1, 2).float()).mean())
        return r
    return scores


def _spec(model: DifFace, method: str, nfe: int, schedule: str, eta: float, start):
    """(start step -> the Sampler a setting runs from it, start step -> its Plan). SCHEDULE f=F0/F1/...: the
    setting's own log-SNR fractions (difface.fastplan.generic_timesteps), for a fixed start only."""
    if schedule.startswith("f="):
        if start == "auto":
            raise SystemExit("f= schedules are for a fixed --start")
        fractions = tuple(float(f) for f in schedule[2:].split("/"))

        def plan_at(s: int) -> Plan:
            return Plan(method, generic_timesteps(model, s, nfe, fractions), f"log-SNR fractions {schedule[2:]}")

        def sampler_at(s: int):
            return FewStepSampler(model.diffusion.base(), plan_at(s).timesteps, method, eta)

        return sampler_at, plan_at

    def plan_of(s: int):
        return model.plan(start_step=s, eta=eta, sampler=method, nfe=nfe, schedule=schedule)

    return (lambda s: plan_of(s).sampler_at(model, s, auto=start == "auto"),
            lambda s: plan_of(s).steps_at(model, s, auto=start == "auto"))


def _psnr_vs(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean PSNR (RGB) to the official results, each face capped at 100 dB (faces whose start runs the official
    loop either way are identical to it)."""
    return float(np.mean([min(psnr(o, r), 100.0) for o, r in zip(out, ref)]))


def _nfe(sampler) -> int:
    """Network evaluations of a sampler (the official loop: one per respaced step)."""
    return len(sampler.timesteps) if hasattr(sampler, "timesteps") else sampler.start


def _gates(r: dict, off: dict, args) -> None:
    r["gates"] = {f"psnr_y>=official-{args.tol_psnr:g}": r["psnr_y"] >= off["psnr_y"] - args.tol_psnr,
                  f"ssim_y>=official-{args.tol_ssim:g}": r["ssim_y"] >= off["ssim_y"] - args.tol_ssim,
                  f"niqe<=official+{args.tol_niqe:g}": r["niqe_x4"] <= off["niqe_x4"] + args.tol_niqe}
    if args.eta == 0:
        r["gates"]["psnr_vs_official>=35"] = r["psnr_vs_official"] >= 35.0
    r["meets_gates"] = all(r["gates"].values())


def _write(path: Path | None, report: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
