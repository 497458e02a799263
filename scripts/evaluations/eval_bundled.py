"""Quality experiments for a DifFace model on a paired validation set (the bundled model's card).

  tradeoff     degraded input, the estimator alone and DifFace at several start steps / eta values
  samplers     few-step samplers (ddim, dpmpp2m) at several NFE against 100-step official DDIM (eta 0)
  contraction  error of DifFace relative to the estimator's on degradations made here (--degrade PRESET)

Metrics per image: PSNR-Y and SSIM-Y against the ground truth; NIQE of the result upscaled 4x
(bicubic; NIQE's 96-px blocks need more than 64 px); `ids_dlib` cosine to the ground truth when the
[metrics] extra is installed. Prints a markdown table and writes JSON (and a plot for tradeoff).

example:
  python scripts/evaluations/eval_bundled.py tradeoff --lq celeba64/val_celebatest/lq --hq celeba64/val_celebatest/hq \
      --count 100 --json docs/model-card/tradeoff.json --plot docs/model-card/tradeoff.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.core import DifFace
from difface.images import image_to_tensor, read_image, write_image
from difface.metrics.niqe import niqe
from difface.metrics.psnr_ssim import psnr, ssim


def load_pairs(lq_dir: Path, hq_dir: Path, count: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted(p.name for p in lq_dir.glob("*.png"))[:count]
    lq = np.stack([read_image(lq_dir / n).rgb for n in names])
    hq = np.stack([read_image(hq_dir / n).rgb for n in names])
    return names, lq, hq


def run(model: DifFace, lq: np.ndarray, batch: int, seed: int, **kw) -> np.ndarray:
    """Restore (N, S, S, 3) float images in batches; per-image seeds make this batch-independent."""
    out = []
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i: i + batch]])
        r = model.restore(x, seeds=[seed] * len(x), **kw).result
        out.append(r.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def dlib_embedder():
    try:
        from difface.metrics.identity import DlibEmbedder

        return DlibEmbedder()
    except Exception as e:  # noqa: BLE001 - optional extra
        print(f"ids_dlib skipped: {e}")
        return None


def metrics(pred: np.ndarray, gt: np.ndarray, emb=None, gt_emb=None) -> dict[str, float]:
    rows = {"psnr_y": [], "ssim_y": [], "niqe_x4": [], "ids_dlib": []}
    for k, (p, g) in enumerate(zip(pred, gt)):
        rows["psnr_y"].append(psnr(p, g, y_channel=True))
        rows["ssim_y"].append(ssim(p, g, y_channel=True))
        big = cv2.resize(np.clip(p, 0, 1), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        rows["niqe_x4"].append(niqe(np.clip(big, 0, 1)))
        if emb is not None:
            e = emb.embed(cv2.resize(p, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).clip(0, 1))
            rows["ids_dlib"].append(float(np.dot(e, gt_emb[k]) / (np.linalg.norm(e) * np.linalg.norm(gt_emb[k]))))
    return {k: float(np.mean(v)) for k, v in rows.items() if v}


def table(results: list[dict]) -> str:
    keys = [k for k in ("psnr_y", "ssim_y", "niqe_x4", "ids_dlib", "psnr_vs_ref", "mse_ratio", "share_contracted",
                        "ids_dist_ratio") if any(k in r for r in results)]
    head = "| setting | NFE | " + " | ".join(keys) + " | s/face |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for r in results:
        vals = " | ".join("" if k not in r else f"{r[k]:.2f}" if k in ("psnr_y", "niqe_x4", "psnr_vs_ref")
                          else f"{r[k]:.4f}" for k in keys)
        lines.append(f"| {r['setting']} | {r['nfe']} | {vals} | {r['s_per_face']:.3f} |")
    return "\n".join(lines)


def timed(model, lq, args, **kw):
    t0 = time.perf_counter()
    out = run(model, lq, args.batch, args.seed, **kw)
    return out, (time.perf_counter() - t0) / len(lq)


def plot_tradeoff(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in results:
        ax.scatter(r["psnr_y"], r["niqe_x4"], s=30)
        ax.annotate(r["setting"], (r["psnr_y"], r["niqe_x4"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("PSNR-Y (dB), higher = more faithful")
    ax.set_ylabel("NIQE of x4 upscale, lower = more natural")
    ax.set_title("Fidelity / realism on the validation faces")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["tradeoff", "samplers", "contraction"])
    ap.add_argument("--prior", default=None, help="default: the bundled model")
    ap.add_argument("--estimator", default=None)
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--degrade", default="severe", help="contraction: preset applied to --hq here (seeded)")
    ap.add_argument("--settings", default="", help="tradeoff: comma list of START:ETA (default a small grid)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--grid", type=Path, help="tradeoff/contraction: picture of the first 8 faces, rows: input, "
                    "estimator, each setting, truth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device="cpu")
    names, lq, hq = load_pairs(args.lq, args.hq, args.count)
    emb = dlib_embedder()
    gt_emb = [emb.embed(cv2.resize(g, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).clip(0, 1))
              for g in hq] if emb else None
    results = []
    rows = []  # first 8 faces of each output, for --grid

    def add(setting: str, nfe: int, pred: np.ndarray, sec: float, **extra) -> None:
        r = {"setting": setting, "nfe": nfe, **metrics(pred, hq, emb, gt_emb), "s_per_face": sec, **extra}
        results.append(r)
        print(r, flush=True)

    if args.experiment == "contraction":
        from difface.data.degrade import degrade, get_degradation

        cfg = get_degradation(args.degrade, resolution=hq.shape[1])
        lq = np.stack([degrade(h, cfg, np.random.default_rng([args.seed, k])) for k, h in enumerate(hq)])
    if args.experiment in ("tradeoff", "contraction"):
        add("degraded input", 0, lq, 0.0)
        est, sec = timed(model, lq, args, start_step=0)
        add("estimator alone", 0, est, sec)
        rows += [lq[:8], est[:8]]
        default = "100:0.5" if args.experiment == "contraction" else "50:0.5,100:0,100:0.5,100:1,150:0.5"
        grid = args.settings or default
        for item in grid.split(","):
            s, e = item.split(":")
            out, sec = timed(model, lq, args, start_step=int(s), eta=float(e))
            extra = {}
            rows.append(out[:8])
            if args.experiment == "contraction":
                e_est = ((est - hq) ** 2).mean(axis=(1, 2, 3))
                e_dif = ((out - hq) ** 2).mean(axis=(1, 2, 3))
                extra = {"mse_ratio": float(np.mean(e_dif / e_est)), "mse_estimator": float(e_est.mean()),
                         "mse_difface": float(e_dif.mean()), "share_contracted": float(np.mean(e_dif < e_est))}
            add(f"DifFace N={s} eta={e}", int(s), out, sec, **extra)
            if args.experiment == "contraction" and "ids_dlib" in results[1]:  # identity distance ratio
                r = results[-1]
                r["ids_dist_ratio"] = (1 - r["ids_dlib"]) / (1 - results[1]["ids_dlib"])
    else:
        ref, sec = timed(model, lq, args, start_step=100, eta=0.0)
        add("official DDIM, eta 0", 100, ref, sec, psnr_vs_ref=float("inf"))
        for sampler in ("ddim", "dpmpp2m"):
            for nfe in (5, 10, 20, 50):
                out, sec = timed(model, lq, args, start_step=100, eta=0.0, sampler=sampler, nfe=nfe)
                add(sampler, nfe, out, sec, psnr_vs_ref=float(np.mean([psnr(o, r) for o, r in zip(out, ref)])))
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"experiment": args.experiment, "count": len(names), "lq": str(args.lq),
                                         "model": model.name, "results": results}, indent=1))
    if args.plot and args.experiment == "tradeoff":
        plot_tradeoff(results, args.plot)
    if args.grid and rows:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "maintainer"))  # the figure maker's grid
        from make_model_card_figures import grid

        write_image(args.grid, grid([*rows, hq[:8]]))
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
