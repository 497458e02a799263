"""Inpainting on validation faces with seeded masks: OpenCV Telea, the estimator alone and DifFace.

Face k of the first --count faces of --val gets, for each mask kind (irregular, box, outpainting), the
mask `difface.data.masks.seeded_mask(kind, size, --seed, k)`; the input is the face with the hole set
to exactly 0 (the official convention). Methods: `cv2.inpaint` (Telea, radius 3) as the classical
baseline, the estimator alone (start step 0) and DifFace at each --starts value (the model's eta),
with each face's noise from image_seed(--seed, input) as `difface inpaint`.

Columns: hole PSNR (RGB, over the missing pixels only), hole SSIM (the SSIM map of the Y channel
averaged over the missing pixels), NIQE of the x4 bicubic upscale, ids_dlib (cosine of dlib face
descriptors of the x4 upscales, output vs truth; needs the [metrics] extra), and the check that every
known pixel of the 8-bit output equals the input's.

  python scripts/evaluations/eval_inpaint.py --val celeba64/val --count 100 --starts 20,120 --json out.json \\
      [--prior P --estimator E] [--grid docs/images/inpaint_val.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.core import DifFace, bundled_model_paths, image_seed
from difface.data.masks import seeded_mask
from difface.images import image_to_tensor, read_image, to_uint8, write_image
from difface.metrics.niqe import niqe
from difface.metrics.psnr_ssim import gaussian_window, rgb_to_y, to_uint8_grid

KINDS = ("irregular", "box", "outpainting")


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (valid-padded by reflection) of two gray images on the 0-255 scale."""
    w = gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(x):
        return cv2.filter2D(x, -1, w, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))


def hole_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(hole PSNR on RGB, hole SSIM on Y) of (H, W, 3) [0, 1] images; mask (H, W) 1 = missing."""
    p, g = to_uint8_grid(pred).astype(np.float64), to_uint8_grid(gt).astype(np.float64)
    m = mask > 0.5
    mse = float(np.mean((p[m] - g[m]) ** 2))
    psnr = 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
    s = ssim_map(rgb_to_y(p), rgb_to_y(g))
    return psnr, float(s[m].mean())


def telea(lq: np.ndarray, mask: np.ndarray) -> np.ndarray:
    bgr = to_uint8(lq)[:, :, ::-1].copy()
    out = cv2.inpaint(bgr, (mask > 0.5).astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    return out[:, :, ::-1].astype(np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--starts", default="20,120")
    ap.add_argument("--prior")
    ap.add_argument("--estimator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--grid", type=Path, help="PNG: rows input | Telea | estimator | DifFace... | truth (8 faces)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.prior is None:
        args.prior, args.estimator = (str(p) for p in bundled_model_paths("inpainting"))
    model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device="cpu")
    names = sorted(p.name for p in args.val.iterdir() if p.suffix == ".png")[: args.count]
    truth = np.stack([read_image(args.val / n).rgb for n in names])
    size = truth.shape[1:3]
    try:
        from difface.metrics.identity import DlibEmbedder

        embedder = DlibEmbedder()
    except Exception as e:  # noqa: BLE001 - optional extra
        print(f"ids_dlib skipped: {e}")
        embedder = None

    def x4(a):
        return cv2.resize(a, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).clip(0, 1)

    gt_emb = [embedder.embed(x4(t)) for t in truth] if embedder else None
    report = {"count": len(names), "model": model.name, "kinds": {}}
    grid_rows = []
    for kind in KINDS:
        masks = np.stack([seeded_mask(kind, size, args.seed, k) for k in range(len(names))])
        lq = truth * (1 - masks[..., None])
        methods: dict[str, tuple[np.ndarray, float]] = {}
        t0 = time.perf_counter()
        methods["Telea (cv2.inpaint)"] = (np.stack([telea(a, m) for a, m in zip(lq, masks)]),
                                          (time.perf_counter() - t0) / len(lq))
        for start in [0] + [int(s) for s in args.starts.split(",")]:
            outs, t0 = [], time.perf_counter()
            for i in range(0, len(lq), args.batch):
                x = torch.cat([image_to_tensor(a) for a in lq[i:i + args.batch]])
                m = torch.from_numpy(masks[i:i + args.batch]).float()[:, None]
                r = model.inpaint(x, m, start_step=start, seeds=[image_seed(args.seed, im) for im in x])
                outs.append(r.result.permute(0, 2, 3, 1).numpy())
            label = "estimator alone" if start == 0 else f"DifFace N={start} eta={model.default_eta:g}"
            methods[label] = (np.concatenate(outs), (time.perf_counter() - t0) / len(lq))
        rows = []
        for label, (pred, sec) in methods.items():
            hp, hs = zip(*(hole_metrics(p, g, m) for p, g, m in zip(pred, truth, masks)))
            known_ok = all(np.array_equal(to_uint8(p)[m < 0.5], to_uint8(a)[m < 0.5])
                           for p, a, m in zip(pred, lq, masks))
            row = {"setting": label, "hole_psnr": float(np.mean(hp)), "hole_ssim": float(np.mean(hs)),
                   "niqe_x4": float(np.mean([niqe(x4(p)) for p in pred])), "known_exact": known_ok,
                   "s_per_face": sec, "hole_share": float(masks.mean())}
            if embedder:
                row["ids_dlib"] = float(np.mean([np.dot(embedder.embed(x4(p)), e) / (
                    np.linalg.norm(embedder.embed(x4(p))) * np.linalg.norm(e)) for p, e in zip(pred, gt_emb)]))
            rows.append(row)
        report["kinds"][kind] = rows
        print(f"**{kind}** ({len(names)} faces, {100 * masks.mean():.1f}% of pixels missing)\n")
        print("| method | hole PSNR | hole SSIM | NIQE (x4) | ids_dlib | known pixels exact | s/face |")
        print("|---|---:|---:|---:|---:|---|---:|")
        for r in rows:
            print(f"| {r['setting']} | {r['hole_psnr']:.2f} | {r['hole_ssim']:.4f} | {r['niqe_x4']:.2f} | "
                  f"{r.get('ids_dlib', float('nan')):.4f} | {'yes' if r['known_exact'] else 'NO'} | "
                  f"{r['s_per_face']:.3f} |")
        print(flush=True)
        grid_rows += [np.concatenate([lq[k]] + [p[k] for p, _ in methods.values()] + [truth[k]], axis=1)
                      for k in range(min(3, len(names)))]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.grid:
        write_image(args.grid, np.concatenate(grid_rows, axis=0))
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
