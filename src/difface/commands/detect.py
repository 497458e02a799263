"""`difface detect`: find faces (boxes, scores, 5 landmarks) in images and write them as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from difface.atomic import atomic_write_bytes
from difface.commands import COMMANDS
from difface.commands.checks import output_dir_problem, output_file_problem
from difface.face.detect import DEFAULT_DETECTOR, DETECTORS, detect_faces, draw_detections, get_detector
from difface.images import collect_inputs, read_image, write_image

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help=COMMANDS["detect"],
        description=(
            "Detect faces in images and write, per image, the boxes [x1, y1, x2, y2], scores and the "
            "5 landmarks (left eye, right eye, nose, left and right mouth corner; image left/right) "
            "in pixels, pixel centres at integer coordinates. Small images are enlarged (short side "
            "640) and large ones shrunk (long side 2048) for the detector; coordinates refer to the "
            "original image. An image that cannot be read (or drawn) is reported on a 'failed:' line and "
            "listed with its error in the JSON; the exit status is then 1 (2: a usage error, found before "
            "any image is read)."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--json", required=True, metavar="FILE", help="output JSON file ('-' for stdout)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS),
                   help=f"face detector (default {DEFAULT_DETECTOR}; weights shipped with the package)")
    p.add_argument("--backend", dest="detector", choices=list(DETECTORS), help=argparse.SUPPRESS)  # old name
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint for the retinaface detectors (detection_Resnet50_Final.pth, "
                        "detection_mobilenet0.25_Final.pth)")
    p.add_argument("--draw", default=None, metavar="OUTDIR",
                   help="also write each image with its boxes and landmarks drawn, as OUTDIR/<stem>.png")
    p.add_argument("--device", default="cpu", help="torch device for the detector (default cpu)")
    p.set_defaults(func=run)


def _detect_one(path: Path, detector, draw: str | None) -> dict:
    """The JSON record of one image; raises ValueError / OSError / cv2.error naming the file."""
    rgb = read_image(path).rgb
    dets = detect_faces(rgb, detector)
    h, w = rgb.shape[:2]
    if draw:
        out = Path(draw) / f"{path.stem}.png"
        try:
            write_image(out, draw_detections(rgb, dets))
        except OSError as e:
            raise OSError(f"{path}: cannot write {out} ({e.strerror or e})") from e
    return {"path": str(path), "width": w, "height": h, "faces": dets.to_json()}


def run(args: argparse.Namespace) -> int:
    try:
        problem = output_file_problem(args.json, "--json") or (
            output_dir_problem(args.draw, "--draw") if args.draw else None)
        if problem:
            raise ValueError(problem)
        paths = collect_inputs(args.images)
        detector = get_detector(args.detector, weights=args.weights, device=args.device)
    except (FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        log.error("error: %s", e)
        return 2
    records, failed = [], 0
    for path in tqdm(paths, desc="detect", disable=len(paths) < 2):
        try:
            records.append(_detect_one(path, detector, args.draw))
        except (ValueError, OSError, cv2.error) as e:
            reason = str(e) if str(path) in str(e) else f"{path}: {e}"
            log.error("failed: %s", reason)
            records.append({"path": str(path), "error": reason})
            failed += 1
    text = json.dumps({"detector": args.detector, "images": records}, indent=1) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        try:
            atomic_write_bytes(args.json, text.encode())
        except OSError as e:
            log.error("error: --json %s: cannot write (%s)", args.json, e.strerror or e)
            return 1
    found = sum(len(r.get("faces", [])) for r in records)
    log.info("%d faces in %d of %d images%s", found, len(paths) - failed, len(paths),
             f"; {failed} failed (listed with their error in the JSON)" if failed else "")
    return 1 if failed else 0
