"""Calibrate and measure `--start-step auto` (difface.autostart) on degraded validation faces.

  fit       on calibration faces (validation faces --skip .. --skip+--count, never the measured ones):
            the linear fit of the estimate's true error on its change (err ~ scale * change + offset,
            both RMS in [-1, 1] units) over the recipes together, then DifFace with auto starts for
            each --kappas value, recipe by recipe; writes --out (JSON) with the fit and the rows
  write     copy --estimator to -o with the chosen rule in its metadata (difface.autostart) and, with
            --flip-ensemble, the SwinIR flip_ensemble switch in its config
  evaluate  the first --count validation faces: the input, the estimator alone, DifFace at each fixed
            --fixed N and with auto starts: PSNR-Y, SSIM-Y, sharpness ratio, (NIQE with --niqe), the
            mean and spread of the auto start steps

Faces are degraded as scripts/evaluations/eval_estimator.py does (recipe by recipe, face k seeded [seed, k]);
every DifFace run draws each face's noise from image_seed(--seed, face), as `difface restore`.

  python scripts/evaluations/eval_autostart.py fit --val celeba64/val --skip 200 --count 100 \\
      --recipes mild-x2,severe-x4,celeba-test --estimator E.safetensors --kappas 0.5,1,2 --out calib.json
  python scripts/evaluations/eval_autostart.py write --estimator E.safetensors --scale S --offset O --kappa K \\
      -o E2.safetensors
  python scripts/evaluations/eval_autostart.py evaluate --val celeba64/val --count 200 --recipes mild,severe \\
      --estimator E2.safetensors --fixed 0,10,20,40 --auto --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_estimator import add_row, make_inputs, table  # noqa: E402

from difface.autostart import AutoStart, estimate_change  # noqa: E402
from difface.core import DifFace, bundled_model_paths, image_seed  # noqa: E402
from difface.images import image_to_tensor, read_image  # noqa: E402


def faces(folder: Path, skip: int, count: int) -> tuple[list[str], np.ndarray]:
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))[skip: skip + count]
    return names, np.stack([read_image(folder / n).rgb for n in names])


def load(prior: str | None, estimator: str | None) -> DifFace:
    p, e = bundled_model_paths()
    return DifFace.from_pretrained(prior=prior or str(p), estimator=estimator or str(e), device="cpu")


def restore(model: DifFace, lq: np.ndarray, start, seed: int, batch: int) -> tuple[np.ndarray, np.ndarray, list[int],
                                                                                   float]:
    """(results, estimates, start steps, seconds per face) of DifFace on (N, H, W, 3) faces."""
    res, est, steps, t0 = [], [], [], time.perf_counter()
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i:i + batch]])
        out = model.restore(x, start_step=start, seeds=[image_seed(seed, im) for im in x])
        res.append(out.result.permute(0, 2, 3, 1).numpy())
        est.append(out.estimate.permute(0, 2, 3, 1).numpy())
        steps += out.start_steps
    return np.concatenate(res), np.concatenate(est), steps, (time.perf_counter() - t0) / len(lq)


def change_and_error(model: DifFace, lq: np.ndarray, hq: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per face: the estimate's change from the input and its true error (RMS, [-1, 1] units)."""
    ch, er = [], []
    for i in range(0, len(lq), batch):
        y = torch.cat([image_to_tensor(a) for a in lq[i:i + batch]])
        gt = torch.cat([image_to_tensor(a) for a in hq[i:i + batch]])
        est = model.estimate(y)
        ch.append(estimate_change(y, est).numpy())
        er.append(estimate_change(gt, est).numpy())
    return np.concatenate(ch), np.concatenate(er)


def cmd_fit(args) -> None:
    model = load(args.prior, args.estimator)
    names, truth = faces(args.val, args.skip, args.count)
    data = {r: make_inputs(r, names, truth, args.seed) for r in args.recipes.split(",")}
    ch, er = zip(*(change_and_error(model, lq, hq, args.batch) for lq, hq in data.values()))
    c, e = np.concatenate(ch), np.concatenate(er)
    scale, offset = np.polyfit(c, e, 1)
    r2 = 1 - np.sum((e - (scale * c + offset)) ** 2) / np.sum((e - e.mean()) ** 2)
    print(f"fit over {len(c)} faces: error = {scale:.4f} * change + {offset:.4f} (R^2 {r2:.3f}); "
          f"change mean {c.mean():.4f}, error mean {e.mean():.4f}", flush=True)
    out = {"scale": float(scale), "offset": float(offset), "r2": float(r2), "faces": len(c), "rows": {}}
    for recipe, (lq, hq) in data.items():
        rows: list[dict] = []
        add_row(rows, recipe, "degraded input", lq, hq, 0.0, False)
        first = True
        for floor in (float(f) for f in args.floors.split(",")):
            for kappa in (float(k) for k in args.kappas.split(",")):
                model.autostart = AutoStart(scale=float(scale), offset=float(offset), kappa=kappa, t_cap=args.t_cap,
                                            floor=floor)
                res, est, steps, sec = restore(model, lq, "auto", args.seed, args.batch)
                if first:
                    add_row(rows, recipe, "estimator", est, hq, 0.0, False)
                    first = False
                add_row(rows, recipe, f"auto kappa={kappa:g} floor={floor:g} (N mean {np.mean(steps):.1f}, "
                        f"range {min(steps)}-{max(steps)})", res, hq, sec, False)
        print(table(recipe, rows) + "\n", flush=True)
        out["rows"][recipe] = rows
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


def cmd_write(args) -> None:
    from safetensors import safe_open
    from safetensors.torch import save

    from difface.images import atomic_write_bytes

    rule = AutoStart(scale=args.scale, offset=args.offset, kappa=args.kappa, t_cap=args.t_cap, floor=args.floor)
    with safe_open(str(args.estimator), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["difface.autostart"] = rule.to_json()
    if args.flip_ensemble:  # the SwinIR config's flip_ensemble (difface.models.swinir): two mirrored passes
        if meta.get("difface.arch") != "swinir":
            raise SystemExit(f"{args.estimator}: --flip-ensemble needs one of our SwinIR files "
                             f"(difface.arch is {meta.get('difface.arch')!r})")
        meta["difface.config"] = json.dumps({**json.loads(meta["difface.config"]), "flip_ensemble": True})
    atomic_write_bytes(args.output, save(tensors, metadata=meta))
    print(f"wrote {args.output} with difface.autostart = {rule.to_json()}"
          + (" and flip_ensemble" if args.flip_ensemble else ""))


def cmd_evaluate(args) -> None:
    model = load(args.prior, args.estimator)
    names, truth = faces(args.val, 0, args.count)
    report = {"count": len(names), "rule": model.autostart.to_json(), "recipes": {}}
    for recipe in args.recipes.split(","):
        lq, hq = make_inputs(recipe, names, truth, args.seed)
        rows: list[dict] = []
        add_row(rows, recipe, "degraded input", lq, hq, 0.0, args.niqe)
        _, est, _, _ = restore(model, lq, 0, args.seed, args.batch)
        add_row(rows, recipe, "estimator alone", est, hq, 0.0, args.niqe)
        for n in (int(s) for s in filter(None, args.fixed.split(","))):
            if n == 0:
                continue
            res, _, _, sec = restore(model, lq, n, args.seed, args.batch)
            add_row(rows, recipe, f"DifFace N={n}", res, hq, sec, args.niqe)
        if args.auto:
            res, _, steps, sec = restore(model, lq, "auto", args.seed, args.batch)
            add_row(rows, recipe, f"DifFace auto (N mean {np.mean(steps):.1f}, median {np.median(steps):g}, "
                    f"range {min(steps)}-{max(steps)})", res, hq, sec, args.niqe)
        print(table(recipe, rows) + "\n", flush=True)
        report["recipes"][recipe] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("fit", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--val", type=Path, required=True)
        p.add_argument("--count", type=int, default=200)
        p.add_argument("--recipes", default="mild-x2,severe-x4,celeba-test")
        p.add_argument("--prior")
        p.add_argument("--estimator")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch", type=int, default=50)
        p.add_argument("--threads", type=int, default=1)
    fit = sub.choices["fit"]
    fit.add_argument("--skip", type=int, default=200, help="calibration faces start here (the first are measured)")
    fit.add_argument("--kappas", default="0.5,1,2")
    fit.add_argument("--floors", default="0", help="comma list of error floors (module difface.autostart)")
    fit.add_argument("--t-cap", type=int, default=400)
    fit.add_argument("--out", type=Path, required=True)
    ev = sub.choices["evaluate"]
    ev.add_argument("--fixed", default="0,10,20,40")
    ev.add_argument("--auto", action="store_true")
    ev.add_argument("--niqe", action="store_true", help="also NIQE and ids_dlib of the x4 upscales (slow)")
    ev.add_argument("--json", type=Path)
    wr = sub.add_parser("write")
    wr.add_argument("--estimator", type=Path, required=True)
    wr.add_argument("--scale", type=float, required=True)
    wr.add_argument("--offset", type=float, required=True)
    wr.add_argument("--kappa", type=float, required=True)
    wr.add_argument("--t-cap", type=int, default=400)
    wr.add_argument("--floor", type=float, default=0.0)
    wr.add_argument("--flip-ensemble", action="store_true",
                    help="also set the estimator's flip_ensemble (average with the mirrored pass)")
    wr.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd != "write":
        torch.set_num_threads(args.threads)
    {"fit": cmd_fit, "write": cmd_write, "evaluate": cmd_evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
