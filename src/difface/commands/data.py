"""`difface data align`: align a folder of face photos to the FFHQ template (training-data prep)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from difface.atomic import atomic_write_bytes
from difface.commands import COMMANDS
from difface.commands.checks import output_dir_problem
from difface.face.align import align_faces, apply_affine, estimate_alignment, warp_faces
from difface.face.detect import DEFAULT_DETECTOR, DETECTORS, get_detector
from difface.face.photo import find_faces
from difface.face.template import face_template
from difface.images import ImageReadError, collect_inputs, read_image, write_image

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help=COMMANDS["data"],
                              description="Data preparation commands.")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    a = sub.add_parser(
        "align",
        help="align every photo's face to the FFHQ 5-point template",
        description=(
            "Detect the largest face of each photo in RAW_DIR, align it to the FFHQ 5-point template "
            "with a similarity transform and write an SxS PNG to OUT/<stem>.png. Small photos are "
            "enlarged for the detector (short side --det-min-side px), so 89x109 CelebA crops work. "
            "Photos that fail (unreadable, no face, an output that cannot be written) are reported on "
            "'failed:' lines and listed in OUT/align_report.json, which also gives, per crop, the share "
            "of its pixels that lay outside the photo (filled with gray). Exit status: 0 when every "
            "photo was aligned, 1 when some failed, 2 for a usage error (found before any photo is read)."
        ),
    )
    a.add_argument("raw_dir", metavar="RAW_DIR", help="folder (or glob) of face photos")
    a.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    a.add_argument("--size", type=int, required=True, metavar="S", help="output crop size in pixels")
    a.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS), help="face detector")
    a.add_argument("--backend", dest="detector", choices=list(DETECTORS), help=argparse.SUPPRESS)  # old name
    a.add_argument("--weights", default=None, metavar="PATH", help="checkpoint for the retinaface detectors")
    a.add_argument("--det-min-side", type=int, default=256, metavar="PX",
                   help="enlarge smaller photos to this short side for the detector (default 256; the "
                        "whole-photo pipeline uses 640, which is ~4x slower and found no more CelebA faces)")
    a.add_argument("--shared-transform", type=int, default=0, metavar="N",
                   help="for photos already aligned to one another (same size, e.g. CelebA img_align): detect "
                   "on N evenly spread photos and warp every photo with the transform of their mean landmarks "
                   "(no per-photo detection, ~100x faster); the report gives the residual spread")
    a.add_argument("--recursive", action="store_true", help="also read sub-folders of RAW_DIR")
    a.add_argument("--skip-existing", action="store_true", help="keep outputs that already exist")
    a.add_argument("--device", default="cpu", help="torch device for the detector (default cpu)")
    a.set_defaults(func=run_align)


def _outside_fraction(hw: tuple[int, int], matrix: np.ndarray, size: int) -> float:
    """Share of the crop's pixels that come from outside the photo (filled with gray)."""
    inside = cv2.warpAffine(np.ones(hw, np.float32), matrix, (size, size), flags=cv2.INTER_NEAREST)
    return float(1.0 - inside.mean())


def _write(path: Path, rgb: np.ndarray) -> str | None:
    """Write one crop; the reason on failure (a full disk, a folder in the way), else None."""
    try:
        write_image(path, rgb)
    except OSError as e:
        return f"cannot write {path} ({e.strerror or e})"
    return None


def _align_one(path: Path, out: Path, size: int, detector, det_min_side: int) -> str | float:
    """Align one photo; returns the crop's outside fraction, or the reason it failed."""
    try:
        rgb = read_image(path).rgb
        dets = find_faces(rgb, detector, largest_face=True, min_eye_dist=2.0, det_min_side=det_min_side)
    except ImageReadError as e:
        return str(e).removeprefix(f"{path}: ")
    except (ValueError, cv2.error) as e:
        return f"face detection failed ({e})"
    if len(dets) == 0:
        return "no face found"
    crops, mats = align_faces(rgb, dets.landmarks, size)
    return _write(out / f"{path.stem}.png", crops[0]) or _outside_fraction(rgb.shape[:2], mats[0], size)


def shared_alignment(paths: list[Path], detector, size: int, n: int, det_min_side: int) -> tuple[np.ndarray, dict]:
    """One similarity transform for a set of mutually aligned photos: that of the mean landmarks of
    `n` evenly spread photos. Returns the (2, 3) matrix and a report (residuals in output pixels)."""
    sample = paths[:: max(1, len(paths) // n)][:n]
    lms, shapes = [], set()
    for path in tqdm(sample, desc="landmarks"):
        try:
            rgb = read_image(path).rgb
        except ImageReadError:
            continue
        shapes.add(rgb.shape[:2])
        dets = find_faces(rgb, detector, largest_face=True, min_eye_dist=2.0, det_min_side=det_min_side)
        if len(dets):
            lms.append(dets.landmarks[0])
    if len(shapes) != 1 or not lms:
        raise ValueError("--shared-transform needs photos of one size with detectable faces")
    lms = np.array(lms)
    matrix = estimate_alignment(lms.mean(axis=0), size)
    tpl = face_template(size)
    resid = np.linalg.norm(np.stack([apply_affine(matrix, p) for p in lms]) - tpl, axis=2)
    eye = float(np.linalg.norm(tpl[0] - tpl[1]))
    info = {"photos_measured": len(lms), "photo_size": list(shapes.pop()),
            "mean_landmark_residual_px": round(float(resid.mean()), 3),
            "mean_landmark_residual_pct_eye_distance": round(float(100 * resid.mean() / eye), 2),
            "matrix": np.round(matrix, 6).tolist()}
    return matrix, info


def _warp_all(paths: list[Path], out: Path, matrix: np.ndarray, size: int, skip_existing: bool):
    skipped, outside = {}, {}
    for path in tqdm(paths, desc="align"):
        if skip_existing and (out / f"{path.stem}.png").exists():
            continue
        try:
            rgb = read_image(path).rgb
        except ImageReadError as e:
            skipped[str(path)] = str(e).removeprefix(f"{path}: ")
            continue
        problem = _write(out / f"{path.stem}.png", warp_faces(rgb, matrix[None], size)[0])
        if problem:
            skipped[str(path)] = problem
            continue
        outside[f"{path.stem}.png"] = round(_outside_fraction(rgb.shape[:2], matrix, size), 4)
    return skipped, outside


def run_align(args: argparse.Namespace) -> int:
    if args.size < 8:
        log.error("difface data align: --size must be at least 8, got %d", args.size)
        return 2
    try:
        problem = output_dir_problem(args.out, "-o/--out")
        if problem:
            raise ValueError(problem)
        paths = collect_inputs([args.raw_dir], recursive=args.recursive)
        detector = get_detector(args.detector, weights=args.weights, device=args.device)
    except (FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        log.error("error: %s", e)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped, outside, shared = {}, {}, None
    if args.shared_transform > 0:
        try:
            matrix, shared = shared_alignment(paths, detector, args.size, args.shared_transform, args.det_min_side)
        except ValueError as e:
            log.error("error: %s", e)
            return 2
        log.info("shared transform from %d photos: landmarks within %.2f px (%.1f%% of the eye distance) of "
                 "the template on average", shared["photos_measured"], shared["mean_landmark_residual_px"],
                 shared["mean_landmark_residual_pct_eye_distance"])
        skipped, outside = _warp_all(paths, out, matrix, args.size, args.skip_existing)
    for path in [] if shared else tqdm(paths, desc="align"):
        if args.skip_existing and (out / f"{path.stem}.png").exists():
            continue
        result = _align_one(path, out, args.size, detector, args.det_min_side)
        if isinstance(result, str):
            skipped[str(path)] = result
        else:
            outside[f"{path.stem}.png"] = round(result, 4)
    fr = np.array(list(outside.values()) or [0.0])
    report = {"source": str(args.raw_dir), "size": args.size, "detector": args.detector,
              "written": len(outside), "skipped": skipped, "shared_transform": shared,
              "outside_fraction": {"mean": round(float(fr.mean()), 4), "over_10pct": int((fr > 0.1).sum())},
              "outside_by_file": outside}
    written = len(outside)
    for p, why in list(skipped.items())[:20]:
        log.error("failed: %s: %s", p, why)
    if len(skipped) > 20:
        log.error("failed: ... and %d more (all listed in align_report.json)", len(skipped) - 20)
    try:
        atomic_write_bytes(out / "align_report.json", (json.dumps(report, indent=1) + "\n").encode())
    except OSError as e:
        log.error("error: cannot write %s (%s)", out / "align_report.json", e.strerror or e)
        return 1
    kept = len(paths) - written - len(skipped)
    log.info("aligned %d of %d photos into %s%s%s", written, len(paths), out,
             f"; {kept} kept as they were (--skip-existing)" if kept else "",
             f"; {len(skipped)} failed (listed in align_report.json)" if skipped else "")
    return 1 if skipped else 0
