"""Flicker of restored faces: mean absolute difference (8-bit levels) of the face regions between
consecutive frames, after undoing the known camera motion, for the input clip and for restorations.

The clip comes from scripts/maintainer/make_test_clip.py, whose sidecar JSON (CLIP.json) gives the photo ->
frame matrix of every frame and the faces' boxes on the photo. For frames t and t+1, frame t+1 is
warped onto frame t with M[t+1] M[t]^-1 (bilinear), and |frame t - warped| is averaged over the
face boxes (mapped by M[t]) wherever both frames see them. Restored clips are first resized back
to the input's size (INTER_AREA), so every figure is in input pixels. Background pixels (outside
the boxes) are reported for reference: there every mode shows the upscaled input.

Modes: input; independent (no tracking, no smoothing, a new seed per face and frame, frame by
frame); temporal (tracking + smoothing + one seed per track, faces of 8 frames per batch);
no-smoothing and no-track-seeds (ablations). The restorer is `difface.core.DifFace.from_pretrained()`
(the bundled small model) or --prior/--estimator, through the same injected callable as
`difface.video.restore_video`.

    python scripts/evaluations/video_flicker.py /tmp/difface-video/three.mp4 --strip /tmp/difface-video/strip.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.video import FaceParts, VideoOptions, model_restorer, read_frames, restore_video

MODES = {
    "independent": lambda: VideoOptions.independent(),
    "temporal": lambda: VideoOptions(),
    "no-smoothing": lambda: VideoOptions(smoothing=False),
    "no-track-seeds": lambda: VideoOptions(track_seeds=False),
}


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64), [0, 0, 1]])


def _rects(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Photo boxes (N, 4) -> frame rectangles through a pan/zoom matrix (no rotation)."""
    p1 = boxes[:, :2] @ m[:, :2].T + m[:, 2]
    p2 = boxes[:, 2:] @ m[:, :2].T + m[:, 2]
    return np.concatenate([np.minimum(p1, p2), np.maximum(p1, p2)], axis=1)


def pair_difference(a: np.ndarray, b: np.ndarray, ma: np.ndarray, mb: np.ndarray, boxes: np.ndarray
                    ) -> tuple[float, float, int]:
    """(face MAD, background MAD, face pixels) between frame a and frame b warped onto a."""
    h, w = a.shape[:2]
    to_b = (_h(mb) @ np.linalg.inv(_h(ma)))[:2]  # frame a pixel -> frame b pixel
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(b, to_b, (w, h), flags=flags)
    valid = cv2.warpAffine(np.ones((h, w), np.float32), to_b, (w, h), flags=flags) > 0.999
    face = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in _rects(boxes, ma):
        if x1 < 0 or y1 < 0 or x2 > w - 1 or y2 > h - 1:
            continue  # only faces wholly in frame a
        face[int(np.ceil(y1)):int(np.floor(y2)) + 1, int(np.ceil(x1)):int(np.floor(x2)) + 1] = True
    face &= valid
    diff = np.abs(a - warped).mean(axis=2)
    bg = valid & ~face
    return (float(diff[face].mean()) if face.any() else np.nan, float(diff[bg].mean()) if bg.any() else np.nan,
            int(face.sum()))


def measure(path: Path, meta: dict, strip_face: int | None = None, strip_frames: range = range(0)
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per consecutive pair (face MAD, background MAD); and crops of one face for the strip."""
    w, h = meta["size"]
    mats = np.asarray(meta["matrices"], np.float64)
    boxes = np.asarray([f["box"] for f in meta["faces"]], np.float64).reshape(-1, 4)
    out, crops, prev = [], [], None
    for fr in read_frames(path):
        img = fr.rgb
        if strip_face is not None and fr.index in strip_frames:
            crops.append(_crop(img, boxes[strip_face], mats[fr.index], w))
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        img = img.astype(np.float32)
        if prev is not None:
            out.append(pair_difference(prev, img, mats[fr.index - 1], mats[fr.index], boxes)[:2])
        prev = img
    return np.asarray(out, np.float64), crops


def _crop(img: np.ndarray, box: np.ndarray, m: np.ndarray, in_w: int, side: int = 128) -> np.ndarray:
    """The face's box, enlarged 1.6x, from a frame of any scale, resized to side x side."""
    s = img.shape[1] / in_w
    x1, y1, x2, y2 = _rects(box[None], m)[0]
    r = 0.8 * max(x2 - x1, y2 - y1) * s  # half side in frame pixels
    cx, cy = (x1 + x2) / 2 * s + (s - 1) / 2, (y1 + y2) / 2 * s + (s - 1) / 2  # input -> frame pixel centres
    k = side / (2 * r)
    mm = np.array([[k, 0, side / 2 - k * cx], [0, k, side / 2 - k * cy]])
    return cv2.warpAffine(img, mm, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip", type=Path, help="clip from scripts/maintainer/make_test_clip.py (CLIP.json beside it)")
    p.add_argument("--modes", default="input,independent,temporal",
                   help=f"comma-separated: input,{','.join(MODES)}")
    p.add_argument("--out-dir", type=Path, default=None, help="restored clips (default: CLIP's folder/flicker)")
    p.add_argument("--upscale", type=float, default=1.0)
    p.add_argument("--prior", default=None)
    p.add_argument("--estimator", default=None)
    p.add_argument("--start-step", type=int, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--reuse", action="store_true", help="measure existing restored clips instead of restoring")
    p.add_argument("--strip", type=Path, default=None, help="PNG: one face over 8 consecutive frames, a row per mode")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)

    meta = json.loads(args.clip.with_suffix(".json").read_text())
    if not meta.get("faces"):
        print(f"{args.clip.with_suffix('.json')}: no faces in the sidecar", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m != "input" and m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {unknown}")
    out_dir = args.out_dir or args.clip.parent / "flicker"
    out_dir.mkdir(parents=True, exist_ok=True)

    restorer, model = None, None
    if any(m != "input" for m in modes) and not args.reuse:
        from difface.core import DifFace
        from difface.face import get_detector

        model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device="cpu")
        kw = {k: v for k, v in (("start_step", args.start_step), ("eta", args.eta)) if v is not None}
        restorer = model_restorer(model, **kw)
        detector = get_detector("mtcnn")

    boxes = np.asarray([f["box"] for f in meta["faces"]], np.float64)
    strip_face = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    k0 = max(0, meta["frames"] // 2 - 4)
    strip_frames = range(k0, min(k0 + 8, meta["frames"]))
    rows, results = [], {}
    for mode in modes:
        path, run = args.clip, {}
        if mode != "input":
            path = out_dir / f"{args.clip.stem}_{mode}.mp4"
            if not args.reuse:
                opts = dataclasses.replace(MODES[mode](), seed=args.seed)
                res = restore_video(args.clip, path, FaceParts(restorer, detector, model.image_size),
                                    upscale=args.upscale, options=opts, progress=True)
                run = {"frames": res.frames, "faces": res.faces, "tracks": res.tracks,
                       "seconds": round(res.seconds, 2), "frames_per_s": round(res.frames_per_second, 4),
                       "faces_per_s": round(res.faces_per_second, 3)}
        t0 = time.perf_counter()
        diffs, crops = measure(path, meta, strip_face, strip_frames)
        face, bg = diffs[:, 0], diffs[:, 1]
        results[mode] = {"face_mad_mean": round(float(np.nanmean(face)), 3),
                         "face_mad_median": round(float(np.nanmedian(face)), 3),
                         "background_mad_mean": round(float(np.nanmean(bg)), 3), "pairs": int(np.isfinite(face).sum()),
                         **run}
        rows.append(np.concatenate(crops, axis=1) if crops else None)
        print(f"{mode:>15}: face MAD {results[mode]['face_mad_mean']:.3f} (median "
              f"{results[mode]['face_mad_median']:.3f}), background {results[mode]['background_mad_mean']:.3f} "
              f"over {results[mode]['pairs']} frame pairs" + (f"; {run}" if run else "")
              + f" [measured in {time.perf_counter() - t0:.1f} s]", flush=True)
    peak = _peak_rss_mib()
    summary = {"clip": str(args.clip), "upscale": args.upscale, "model": getattr(model, "name", None),
               "threads": torch.get_num_threads(), "peak_rss_mib": peak, "modes": results}
    print(f"peak RSS {peak} MiB" if peak else "", flush=True)
    print("\n| mode | face MAD (mean) | face MAD (median) | background MAD |\n|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['face_mad_mean']:.3f} | {r['face_mad_median']:.3f} | {r['background_mad_mean']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.strip and all(r is not None for r in rows):
        label_w = 120
        strip = []
        for mode, row in zip(modes, rows):
            lab = np.full((row.shape[0], label_w, 3), 255, np.uint8)
            cv2.putText(lab, mode, (4, row.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            strip.append(np.concatenate([lab, row], axis=1))
        args.strip.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.strip), np.concatenate(strip, axis=0)[:, :, ::-1])
        print(f"strip of frames {strip_frames.start}-{strip_frames.stop - 1}: {args.strip}")
    return 0


def _peak_rss_mib() -> float | None:
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return round(int(m.group(1)) / 1024, 1) if m else None


if __name__ == "__main__":
    sys.exit(main())
