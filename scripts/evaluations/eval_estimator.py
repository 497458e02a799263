"""Estimators (and optionally DifFace) on validation faces degraded here, recipe by recipe.

For each recipe, face k of the first --count images of --val (sorted names) is degraded with
`numpy.random.default_rng([seed, k])` (the seeding of eval_bundled.py's contraction experiment), so
every estimator sees the same inputs. Rows per recipe: the degraded input, each --estimator alone
(clamped to [0, 1], as `difface restore` does), and DifFace at each --difface START:ETA with each
estimator and --prior. Columns: PSNR-Y and SSIM-Y against the truth, the PSNR gain over the
input, the share of faces whose PSNR-Y is at least the input's, PSNR on RGB, the sharpness ratio (mean Sobel
gradient energy of the outputs over the truths', difface.metrics.sharpness), NIQE of the x4
bicubic upscale and `ids_dlib` (cosine of dlib descriptors of the x4 upscales, output vs truth; both
with --niqe; as the model card) and seconds per face.

Recipes (--recipes, comma list):
  mild-x2, severe-x4   the two damage recipes of the estimator v2 work, at 64 px (difface.data.degrade.MILD_X2 /
                       SEVERE_X4): light blur (sigma 0.2-1 px), 2x down, noise 0-5, JPEG 60-90; and
                       blur sigma 1.5-2.5 px, 4x down, noise 8-15, JPEG 30-50
  any other preset     mild, moderate, severe, celeba-test, gfpgan, range64 (scaled to the face size)
  NAME@MODE            a preset with another resize mode (linear, cubic, area; difface.data.degrade),
                       e.g. mild-x2@cubic: bicubic down and up instead of bilinear
  clean                the truth itself (how much an estimator changes a clean face; PSNR of
                       identical images is counted as 99 dB)
  pairs:DIR            stored pairs DIR/lq, DIR/hq matched by name (e.g. the celeba-test pairs of
                       prepare_celeba64.py), first --count names

example (the baseline of the shipped estimator, docs/estimator-v2.md):
  python scripts/evaluations/eval_estimator.py --val celeba64/val --count 200 \\
      --recipes mild-x2,severe-x4,mild,severe,pairs:celeba64/val_celebatest \\
      --estimator shipped=bundled --niqe --json docs/results/estimator_baseline.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.data.degrade import DegradationConfig, DegradationMixture, degrade, get_degradation
from difface.images import image_to_tensor, read_image
from difface.metrics.psnr_ssim import psnr, ssim
from difface.metrics.sharpness import sharpness_ratio


def load_faces(folder: Path, count: int) -> tuple[list[str], np.ndarray]:
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:count]
    return names, np.stack([read_image(folder / n).rgb for n in names])


def make_inputs(recipe: str, names: list[str], hq: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) of a recipe; hq is the given truth except for pairs:DIR (its own hq/)."""
    if recipe == "clean":
        return hq.copy(), hq
    if recipe.startswith("pairs:"):
        root = Path(recipe.split(":", 1)[1])
        stems = sorted(p.stem for p in (root / "lq").glob("*.png"))[: len(names)]
        lq = np.stack([read_image(root / "lq" / f"{s}.png").rgb for s in stems])
        return lq, np.stack([read_image(root / "hq" / f"{s}.png").rgb for s in stems])
    name, _, mode = recipe.partition("@")
    cfg = get_degradation(name, resolution=hq.shape[1])
    if mode:  # e.g. mild-x2@cubic: the same recipe with another resize mode
        cfg = (dataclasses.replace(cfg, resize_modes=(mode,)) if isinstance(cfg, DegradationConfig) else
               DegradationMixture(tuple(dataclasses.replace(c, resize_modes=(mode,)) for c in cfg.components),
                                  cfg.weights))
    return np.stack([degrade(h, cfg, np.random.default_rng([seed, k])) for k, h in enumerate(hq)]), hq


def load_estimator(spec: str) -> torch.nn.Module:
    from difface.weights import load_network

    if spec == "bundled":
        from difface.core import bundled_model_paths

        spec = str(bundled_model_paths()[1])
    return load_network(spec).eval()


@torch.inference_mode()
def run_estimator(net: torch.nn.Module, lq: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    out, t0 = [], time.perf_counter()
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i: i + batch]])
        out.append(net(x).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out), (time.perf_counter() - t0) / len(lq)


@torch.inference_mode()
def latency_ms(net: torch.nn.Module, size: int, repeats: int = 30) -> float:
    """Median wall time of one single-face forward pass, in ms (after 3 warm-up passes)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        net(x)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run_difface(prior: str | None, estimator: str, lq: np.ndarray, start: int, eta: float, batch: int,
                seed: int) -> tuple[np.ndarray, float]:
    from difface.core import DifFace, bundled_model_paths

    if prior is None:
        prior = str(bundled_model_paths()[0])
    if estimator == "bundled":
        estimator = str(bundled_model_paths()[1])
    model = DifFace.from_pretrained(prior=prior, estimator=estimator, device="cpu")
    out, t0 = [], time.perf_counter()
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i: i + batch]])
        r = model.restore(x, seeds=[seed] * len(x), start_step=start, eta=eta).result
        out.append(r.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out), (time.perf_counter() - t0) / len(lq)


def measure(pred: np.ndarray, gt: np.ndarray, with_niqe: bool) -> dict:
    per_psnr = [min(psnr(p, g, y_channel=True), 99.0) for p, g in zip(pred, gt)]  # identical images: 99
    row = {"psnr_y": float(np.mean(per_psnr)),
           "psnr_rgb": float(np.mean([min(psnr(p, g), 99.0) for p, g in zip(pred, gt)])),
           "ssim_y": float(np.mean([ssim(p, g, y_channel=True) for p, g in zip(pred, gt)])),
           "sharpness": sharpness_ratio(list(pred), list(gt)), "per_face_psnr_y": per_psnr}
    if with_niqe:
        from difface.metrics.niqe import niqe

        row["niqe_x4"] = float(np.mean([niqe(_x4(p)) for p in pred]))
        embedder = _embedder()
        if embedder is not None:  # ids_dlib: cosine of dlib descriptors of the x4 upscales, output vs truth
            row["ids_dlib"] = float(np.mean([_cos(embedder.embed(_x4(p)), embedder.embed(_x4(g)))
                                             for p, g in zip(pred, gt)]))
    return row


def _x4(a: np.ndarray) -> np.ndarray:
    return np.clip(cv2.resize(np.clip(a, 0, 1), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), 0, 1)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


_EMBEDDER: list = []


def _embedder():
    """The dlib embedder, once; None (said once) without the [metrics] extra."""
    if not _EMBEDDER:
        try:
            from difface.metrics.identity import DlibEmbedder

            _EMBEDDER.append(DlibEmbedder())
        except Exception as e:  # noqa: BLE001 - optional extra
            print(f"ids_dlib skipped: {e}", flush=True)
            _EMBEDDER.append(None)
    return _EMBEDDER[0]


def add_row(rows: list[dict], recipe: str, setting: str, pred: np.ndarray, hq: np.ndarray, sec: float,
            with_niqe: bool) -> None:
    """Measure one output set, relate it to the input row (rows[0]) and print a line."""
    r = {"setting": setting, "count": len(pred), **measure(pred, hq, with_niqe), "s_per_face": sec}
    base = rows[0]["per_face_psnr_y"] if rows else r["per_face_psnr_y"]
    r["gain"] = r["psnr_y"] - float(np.mean(base))
    r["share_ge_input"] = float(np.mean(np.array(r["per_face_psnr_y"]) >= np.array(base) - 1e-9))
    rows.append(r)
    print(f"{recipe} | {setting}: PSNR-Y {r['psnr_y']:.2f} ({r['gain']:+.2f}) SSIM-Y {r['ssim_y']:.4f} "
          f"sharpness {r['sharpness']:.3f}" + (f" NIQE {r['niqe_x4']:.2f}" if "niqe_x4" in r else "")
          + (f" ids_dlib {r['ids_dlib']:.4f}" if "ids_dlib" in r else ""), flush=True)


def table(recipe: str, rows: list[dict]) -> str:
    niqe = any("niqe_x4" in r for r in rows)
    ids = any("ids_dlib" in r for r in rows)
    head = ["setting", "PSNR-Y", "gain", ">= input", "PSNR RGB", "SSIM-Y", "sharpness",
            *(["NIQE x4"] if niqe else []), *(["ids_dlib"] if ids else []), "s/face"]
    lines = [f"**{recipe}** ({rows[0]['count']} faces)", "", "| " + " | ".join(head) + " |",
             "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r["setting"], f"{r['psnr_y']:.2f}", f"{r['gain']:+.2f}", f"{r['share_ge_input']:.0%}",
                 f"{r['psnr_rgb']:.2f}", f"{r['ssim_y']:.4f}", f"{r['sharpness']:.3f}"]
        if niqe:
            cells.append(f"{r.get('niqe_x4', float('nan')):.2f}")
        if ids:
            cells.append(f"{r.get('ids_dlib', float('nan')):.4f}")
        cells.append(f"{r['s_per_face']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, required=True, help="folder of clean validation faces")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--recipes", default="mild-x2,severe-x4,mild,severe")
    ap.add_argument("--estimator", action="append", default=[], metavar="LABEL=PATH",
                    help="repeatable; PATH 'bundled' is the shipped estimator")
    ap.add_argument("--difface", default="", metavar="START:ETA,...",
                    help="DifFace settings run with every estimator and --prior")
    ap.add_argument("--prior", default=None, help="prior for --difface (default: the bundled one)")
    ap.add_argument("--niqe", action="store_true", help="also NIQE and ids_dlib of the x4 bicubic upscale (slow)")
    ap.add_argument("--toggle-flip", action="store_true",
                    help="also each SwinIR estimator with its flip_ensemble switched (on if off, off if on)")
    ap.add_argument("--latency", action="store_true", help="also batch-1 latency of each estimator, ms")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = [s.split("=", 1) if "=" in s else (Path(s).parent.name or s, s) for s in args.estimator]
    nets = {label: load_estimator(path) for label, path in specs}
    names, truth = load_faces(args.val, args.count)
    report = {"val": str(args.val), "count": len(names), "seed": args.seed,
              "estimators": dict(specs), "recipes": {}, "latency_ms": {}}
    if args.latency:
        for label, net in nets.items():
            report["latency_ms"][label] = latency_ms(net, truth.shape[1])
            print(f"latency {label}: {report['latency_ms'][label]:.1f} ms per face (batch 1)", flush=True)
    for recipe in args.recipes.split(","):
        lq, hq = make_inputs(recipe, names, truth, args.seed)
        rows: list[dict] = []
        add_row(rows, recipe, "degraded input", lq, hq, 0.0, args.niqe)
        for label, net in nets.items():
            out, sec = run_estimator(net, lq, args.batch)
            add_row(rows, recipe, f"estimator {label}", out, hq, sec, args.niqe)
            if args.toggle_flip and hasattr(net.config, "flip_ensemble"):
                own = net.config
                net.config = dataclasses.replace(own, flip_ensemble=not own.flip_ensemble)
                out, sec = run_estimator(net, lq, args.batch)
                net.config = own
                add_row(rows, recipe, f"estimator {label} (flip ensemble {'off' if own.flip_ensemble else 'on'})",
                        out, hq, sec, args.niqe)
        for item in filter(None, args.difface.split(",")):
            s, e = item.split(":")
            for label, path in specs:
                out, sec = run_difface(args.prior, path, lq, int(s), float(e), args.batch, args.seed)
                add_row(rows, recipe, f"DifFace N={s} eta={e} ({label})", out, hq, sec, args.niqe)
        print(table(recipe, rows) + "\n", flush=True)
        report["recipes"][recipe] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
