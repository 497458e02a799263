"""No harm on sharp faces: how much of its input's fine detail the default restoration keeps.

The measure is `difface.metrics.sharpness.detail_ratio`: Laplacian energy of the output over that of
the input, where the output's luma differs from the input's by more than 2/255 (>= 0.9 is the bar
of the band merge). Outputs are rounded to 8 bits first, as `difface restore` writes them.

Aligned faces: each source photo (already aligned or not) is detected and aligned by difface's own
face module (MTCNN, the largest face, `align_faces` at SIZE) and kept only when its crop spans at least
SIZE source pixels (so that a SIZE crop is a true, sharp SIZE px face, never an upscale). The crops
are restored by `RestorePipeline.restore_aligned` (the default: band merge above the model's size)
and, for comparison, as before the merge (the model's output enlarged, `--old`).
Whole photos: `RestorePipeline.restore_image` at --upscale 1 (Lanczos background; at --upscale 2 the
reference is the input upscaled by the same Lanczos) with the pipeline's
default face-size limit, and the variants that decide that limit: the old path (no merge, faces
over 128 px left alone), the merge with the 128 px limit, the merge with no limit.

  python scripts/evaluations/eval_noharm.py --aligned-src ../shared/data/real-world/ffhq-pairs-gpen/hq \\
      ../shared/data/lfw-150 --count 20 --sizes 512,128 \\
      --photos ../shared/data/real-world/difface-testdata/whole_imgs ... --json docs/results/noharm_real.json

The photos of ../shared/data are research-only: --save writes outputs outside the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from difface.face import band
from difface.face.align import align_faces
from difface.face.photo import PhotoSettings, crop_sides, find_faces, restore_photo
from difface.images import IMAGE_EXTENSIONS, LoadedImage, collect_inputs, image_to_tensor, read_image, write_image
from difface.metrics.sharpness import CHANGE_THRESHOLD, changed_mask, detail_ratio
from difface.pipeline import ModelOptions, PhotoOptions, RestoreOptions, RestorePipeline


def q8(a: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid, as written files are."""
    return np.round(np.clip(a, 0, 1) * 255) / 255


def aligned_crops(sources: list[str], size: int, count: int, detector) -> list[tuple[str, np.ndarray]]:
    """Up to `count` sharp aligned crops per source folder at `size`, from its first 3 x count files (sorted
    names; see the module docstring)."""
    out = []
    for src in sources:
        n = 0
        for f in collect_inputs([src], extensions=IMAGE_EXTENSIONS)[:3 * count]:  # tries at most 3 x count
            if n >= count:
                break
            rgb = read_image(f).rgb
            dets = find_faces(rgb, detector, largest_face=True)
            if not len(dets):
                continue
            crops, mats = align_faces(rgb, np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), size)
            if crop_sides(mats, size)[0] < size:
                continue  # the face is smaller than the crop: it would be an upscale, not a sharp face
            out.append((f"{Path(src).name}/{f.stem}", q8(crops[0]).astype(np.float32)))
            n += 1
    return out


def eval_aligned(pipe: RestorePipeline, crops: list[tuple[str, np.ndarray]], save: Path | None, tag: str) -> list:
    s = pipe.model.image_size
    rows = []
    for i in range(0, len(crops), 16):
        chunk = crops[i:i + 16]
        images = [LoadedImage(c, None, 8, False) for _, c in chunk]
        results = pipe.restore_aligned(images)
        x = torch.cat([band.resize(image_to_tensor(c), (s, s)) for _, c in chunk])
        old = pipe.restore_faces(x).result  # the same seeds as the pipeline's: the same model output
        for k, ((name, crop), r) in enumerate(zip(chunk, results)):
            h, w = crop.shape[:2]
            before = band.resize(old[k:k + 1], (h, w)).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            new, was = q8(r.image), q8(before)
            rows.append({"name": name, "size": h, "ratio": detail_ratio(new, crop),
                         "ratio_old": detail_ratio(was, crop), "changed": float(changed_mask(new, crop).mean())})
            if save:
                write_image(save / tag / f"{name.replace('/', '_')}.png", np.concatenate([crop, was, new], axis=1))
    return rows


def eval_damaged(pipe: RestorePipeline, crops: list[tuple[str, np.ndarray]], preset: str, size: int) -> list:
    """The sharp crops degraded with a preset scaled to `size` (face k seeded [0, k]), restored now (band
    merge) and before (the 64 px result enlarged): PSNR-Y against the sharp crop, and the detail ratio
    of the output against the truth where it differs from it (sharpness against the truth)."""
    from difface.data.degrade import degrade, get_degradation
    from difface.metrics.psnr_ssim import psnr

    cfg = get_degradation(preset, size)
    s = pipe.model.image_size
    rows = []
    lq = [q8(degrade(c, cfg, np.random.default_rng([0, k]))).astype(np.float32) for k, (_, c) in enumerate(crops)]
    for i in range(0, len(crops), 16):
        chunk, low = crops[i:i + 16], lq[i:i + 16]
        results = pipe.restore_aligned([LoadedImage(x, None, 8, False) for x in low])
        x = torch.cat([band.resize(image_to_tensor(y), (s, s)) for y in low])
        old = pipe.restore_faces(x).result
        for k, ((name, gt), y, r) in enumerate(zip(chunk, low, results)):
            was = q8(band.resize(old[k:k + 1], gt.shape[:2]).clamp(0, 1)[0].permute(1, 2, 0).numpy())
            new = q8(r.image)
            rows.append({"name": name, "preset": preset, "psnr_y_input": psnr(y, gt, y_channel=True),
                         "psnr_y": psnr(new, gt, y_channel=True), "psnr_y_old": psnr(was, gt, y_channel=True),
                         "detail_vs_truth": detail_ratio(new, gt), "detail_vs_truth_old": detail_ratio(was, gt),
                         "detail_vs_truth_input": detail_ratio(y, gt)})
    return rows


def eval_photos(pipe: RestorePipeline, files: list[Path], save: Path | None, upscale: int = 1) -> list:
    from difface.face.background import lanczos_upsampler

    detector, bg = pipe._photo_parts()
    s = pipe.model.image_size
    rows = []

    def restorer(x: torch.Tensor) -> torch.Tensor:
        return pipe.restore_faces(x).result

    for f in files:
        im = read_image(f)
        t0 = time.perf_counter()
        res = pipe.restore_image(im)  # the pipeline's default
        dt = time.perf_counter() - t0
        row = {"name": f"{f.parent.parent.name}/{f.parent.name}/{f.name}",
               "size": f"{im.rgb.shape[1]}x{im.rgb.shape[0]}",
               "faces": res.faces, "skipped": res.skipped, "message": res.message, "seconds": round(dt, 1)}
        new = q8(res.image)
        ref = im.rgb if upscale == 1 else lanczos_upsampler(im.rgb, upscale)  # the input at the output size
        row["ratio"] = detail_ratio(new, ref)
        row["changed"] = float(changed_mask(new, ref).mean())
        dets = find_faces(im.rgb, detector)
        from difface.face.align import estimate_alignment

        sides = crop_sides(estimate_alignment(np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), s), s) \
            if len(dets) else np.zeros(0)
        row["face_px"] = [round(float(v)) for v in sorted(sides)]
        variants = {"old": dict(keep_detail=False, max_face_side=2.0 * s),
                    "merge_128": dict(keep_detail=True, max_face_side=2.0 * s),
                    "merge_all": dict(keep_detail=True, max_face_side=None)}
        for key, kw in variants.items():
            r = restore_photo(im.rgb, restorer, detector=detector, face_size=s, bg_upsampler=bg,
                              settings=PhotoSettings(upscale=upscale, batch_size=16, **kw))
            out = q8(r.image)
            row[f"ratio_{key}"] = detail_ratio(out, ref)
            row[f"faces_{key}"] = r.num_faces
            if save and key == "old":
                write_image(save / "photos" / f"{f.stem}_old.png", out)
        if save:
            write_image(save / "photos" / f"{f.stem}_new.png", new)
        rows.append(row)
    return rows


def summary(rows: list, keys: tuple[str, ...]) -> dict:
    out = {"count": len(rows)}
    for k in keys:
        v = [r[k] for r in rows if k in r]
        if v:
            out[f"min_{k}"], out[f"mean_{k}"] = float(np.min(v)), float(np.mean(v))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aligned-src", nargs="*", default=[], help="folders of sharp face photos (aligned or not)")
    ap.add_argument("--sizes", default="512,128", help="aligned crop sizes")
    ap.add_argument("--count", type=int, default=10, help="crops per source folder and size")
    ap.add_argument("--damaged", default="", help="also degrade the aligned crops with these presets (e.g. "
                    "mild,severe, scaled to each size) and report PSNR-Y against the sharp crop, now and before")
    ap.add_argument("--photos", nargs="*", default=[], help="whole photos or folders of them")
    ap.add_argument("--upscale", type=int, default=1, help="whole photos: output scale (above 1 the reference is "
                    "the input upscaled with Lanczos, the background the pipeline uses here)")
    ap.add_argument("--prior")
    ap.add_argument("--estimator")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", type=Path, help="write input | before | after strips and photos here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    common = dict(model=ModelOptions(args.prior, args.estimator, device="cpu"), batch_size=16)
    report = {"command": " ".join(sys.argv), "threshold": CHANGE_THRESHOLD, "sets": {}, "summary": {}}
    if args.aligned_src:
        pipe = RestorePipeline.load(RestoreOptions(aligned=True, **common))
        report["model"] = pipe.describe()
        from difface.face.detect import get_detector

        det = get_detector("mtcnn")
        for size in (int(v) for v in args.sizes.split(",")):
            crops = aligned_crops(args.aligned_src, size, args.count, det)
            rows = eval_aligned(pipe, crops, args.save, f"aligned{size}")
            report["sets"][f"aligned{size}"] = rows
            report["summary"][f"aligned{size}"] = summary(rows, ("ratio", "ratio_old"))
            print(f"\naligned {size} px ({len(rows)} faces): ratio output/input where changed (old: before the merge)")
            print(f"{'face':40s} {'ratio':>7s} {'old':>7s} {'changed':>8s}")
            for r in rows:
                print(f"{r['name']:40s} {r['ratio']:7.3f} {r['ratio_old']:7.3f} {r['changed']:8.1%}")
            for preset in [p for p in args.damaged.split(",") if p]:
                rows = eval_damaged(pipe, crops, preset, size)
                report["sets"][f"damaged{size}_{preset}"] = rows
                keys = ("psnr_y_input", "psnr_y", "psnr_y_old", "detail_vs_truth", "detail_vs_truth_old",
                        "detail_vs_truth_input")
                report["summary"][f"damaged{size}_{preset}"] = sm = summary(rows, keys)
                print(f"damaged {size} px, preset {preset} ({len(rows)} faces): PSNR-Y input "
                      f"{sm['mean_psnr_y_input']:.2f}, now {sm['mean_psnr_y']:.2f}, "
                      f"before {sm['mean_psnr_y_old']:.2f}; "
                      "detail vs truth: input "
                      f"{sm['mean_detail_vs_truth_input']:.3f}, now {sm['mean_detail_vs_truth']:.3f}, before "
                      f"{sm['mean_detail_vs_truth_old']:.3f}")
    if args.photos:
        pipe = RestorePipeline.load(RestoreOptions(aligned=False, photo=PhotoOptions(upscale=args.upscale,
                                                                                     bg_upsampler="lanczos"), **common))
        report["model_photos"] = pipe.describe() + f", face-size limit {pipe.max_face_size:g} (0: none)"
        files = collect_inputs(args.photos, extensions=IMAGE_EXTENSIONS)
        rows = eval_photos(pipe, files, args.save, args.upscale)
        key = "photos" if args.upscale == 1 else f"photos_x{args.upscale}"
        report["sets"][key] = rows
        report["summary"][key] = summary(rows, ("ratio", "ratio_old", "ratio_merge_128", "ratio_merge_all"))
        print(f"\nwhole photos at --upscale {args.upscale} ({len(rows)}): ratio (the default) | old | "
              "merge, 128 px limit | merge, no limit")
        print(f"{'photo':40s} {'faces':>5s} {'ratio':>7s} {'old':>7s} {'m128':>7s} {'mall':>7s}  face px")
        for r in rows:
            print(f"{r['name']:40s} {r['faces']:5d} {r['ratio']:7.3f} {r['ratio_old']:7.3f} "
                  f"{r['ratio_merge_128']:7.3f} {r['ratio_merge_all']:7.3f}  {r['face_px']}")
    print("\nsummary:", json.dumps(report["summary"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
