"""Seconds per stage of a whole-photo restoration with the official 512 networks (filler weights).

The stages of `difface.face.photo.restore_photo`, timed one by one on the same photo: detection
(`find_faces`, MTCNN by default), alignment (`estimate_alignment` + `warp_faces`), the faces (estimator +
diffusion per face: SwinIR restoration512 and UNet ffhq512 with the deterministic filler, `--sampler ddim
--nfe NFE` from t = 400; a reduced NFE so the run fits in minutes, stated in the output), the background
upsampler (Real-ESRGAN x2 RRDBNet with filler weights, tiled as the CLI does, and the Lanczos fallback that
`--bg-upsampler auto` uses when the Real-ESRGAN weights are not cached) and paste-back
(`paste_corrections`, the default band merge). One UNet forward at 512 is timed on its own, so that the
faces' share can be projected to other NFE (estimator + NFE forwards per face).

Reads ../shared/data/real-world (research-only images, never committed) and exits 0 with a message when
it is absent.

  PYTHONPATH=src python scripts/benchmarks/bench_photo_stages.py --nfe 1 --json docs/results/photo_stages.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from difface.core import DifFace
from difface.face.align import estimate_alignment, warp_faces
from difface.face.background import RealESRGANUpsampler, lanczos_upsampler, resize_to, target_size
from difface.face.photo import as_float_image, find_faces, paste_corrections, run_restorer
from difface.images import read_image
from difface.models import build, fill_deterministic
from difface.models.rrdbnet import RRDBNet

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = {"t1.jpg": "real-world/pypi-samples/t1.jpg",
          "Solvay_conference_1927.png": "real-world/difface-testdata/Solvay_conference_1927.png"}


def clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_photo(name: str, img: np.ndarray, args, restore_faces, rrdb, unet_s: float) -> dict:
    """Time each stage on one photo (H, W, 3) float32 in [0, 1]; the row of the report."""
    h, w = img.shape[:2]
    out_hw = target_size(h, w, args.upscale)
    dets, det_s = clock(lambda: find_faces(img, args.detector))
    n = len(dets)

    def align(dets=dets):
        mats = estimate_alignment(np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), 512)
        return mats, warp_faces(img, mats, 512)

    (mats, crops), align_s = clock(align)
    restored, faces_s = clock(lambda: run_restorer(restore_faces, crops, batch_size=1))
    bg_lanczos, lanczos_s = clock(lambda: resize_to(lanczos_upsampler(img, args.upscale), out_hw))
    esr_s = None
    if rrdb is not None:
        _, esr_s = clock(lambda: resize_to(rrdb(img, args.upscale), out_hw))
    _, paste_s = clock(lambda: paste_corrections(bg_lanczos, crops, restored, mats, 512, args.upscale, None,
                                                 False))
    row = {"photo": name, "size": [w, h], "faces": n, "detection_s": det_s, "alignment_s": align_s,
           "faces_s": faces_s, "per_face_s": faces_s / max(n, 1), "bg_lanczos_s": lanczos_s,
           "bg_realesrgan_s": esr_s, "paste_s": paste_s}
    for bg_name, bg_s in (("lanczos", lanczos_s), ("realesrgan", esr_s)):
        if bg_s is None:
            continue
        other = det_s + align_s + bg_s + paste_s
        row[f"non_face_share_{bg_name}"] = other / (other + faces_s)
        for nfe in (5, 10, 100):  # projected: estimator + nfe UNet forwards per face
            proj = faces_s + n * (nfe - args.nfe) * unet_s
            row[f"non_face_share_{bg_name}_nfe{nfe}_projected"] = other / (other + proj)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--nfe", type=int, default=1, help="UNet evaluations per face (reduced; default 1)")
    ap.add_argument("--upscale", type=float, default=2)
    ap.add_argument("--detector", default="mtcnn")
    ap.add_argument("--tile", type=int, default=400, help="Real-ESRGAN tile (the CLI's default 400)")
    ap.add_argument("--no-realesrgan", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the real-world photos are research-only data beside the checkout)")
        return 0
    torch.set_num_threads(args.threads)
    model = DifFace.from_modules(fill_deterministic(build("unet_ffhq512")),
                                 fill_deterministic(build("swinir_restoration512")))
    rrdb = None if args.no_realesrgan else RealESRGANUpsampler(fill_deterministic(RRDBNet()), tile=args.tile)
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.prior(x * 2 - 1, torch.tensor([400]))  # warm
        _, unet_s = clock(lambda: model.prior(x * 2 - 1, torch.tensor([400])))
        model.estimator(x)
        _, est_s = clock(lambda: model.estimator(x))

    def restore_faces(batch: torch.Tensor) -> torch.Tensor:
        return model.restore(batch, start_step=100, eta=0.0, seeds=[0] * len(batch), sampler="ddim",
                             nfe=args.nfe).result

    report = {"nfe": args.nfe, "upscale": args.upscale, "detector": args.detector, "threads": args.threads,
              "unet512_forward_s": unet_s, "swinir512_forward_s": est_s, "load_at_start": os.getloadavg(),
              "photos": []}
    print(f"one UNet 512 forward {unet_s:.2f} s, one SwinIR 512 forward {est_s:.2f} s; load {os.getloadavg()}",
          flush=True)
    for name in args.photos.split(","):
        path = args.data / PHOTOS[name]
        if not path.is_file():
            print(f"skipped {name}: {path} is absent")
            continue
        img, _, _, _ = as_float_image(read_image(path).rgb)
        row = one_photo(name, img, args, restore_faces, rrdb, unet_s)
        report["photos"].append(row)
        print(json.dumps(row), flush=True)
    report["load_at_end"] = os.getloadavg()
    print("| photo | faces | detection (s) | alignment (s) | faces, estimator + "
          f"{args.nfe} NFE (s) | per face (s) | background Lanczos (s) | background Real-ESRGAN x2 (s) | "
          "paste-back (s) | non-face share (Lanczos / Real-ESRGAN) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in report["photos"]:
        esr = "" if r["bg_realesrgan_s"] is None else f"{r['bg_realesrgan_s']:.2f}"
        share = f"{r['non_face_share_lanczos']:.1%}" + (
            "" if r["bg_realesrgan_s"] is None else f" / {r['non_face_share_realesrgan']:.1%}")
        print(f"| {r['photo']} | {r['faces']} | {r['detection_s']:.2f} | {r['alignment_s']:.3f} | "
              f"{r['faces_s']:.1f} | {r['per_face_s']:.2f} | {r['bg_lanczos_s']:.3f} | {esr} | {r['paste_s']:.2f} | "
              f"{share} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
