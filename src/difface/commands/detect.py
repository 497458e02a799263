"""`difface detect`: find faces (boxes, scores, 5 landmarks) in images and write them as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from difface.face.detect import BACKENDS, DEFAULT_BACKEND, detect_faces, draw_detections, get_detector
from difface.images import ImageReadError, atomic_write_bytes, collect_inputs, read_image, write_image

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect faces and their 5 landmarks; write JSON",
        description=(
            "Detect faces in images and write, per image, the boxes [x1, y1, x2, y2], scores and the "
            "5 landmarks (left eye, right eye, nose, left and right mouth corner; image left/right) "
            "in pixels, pixel centres at integer coordinates. Small images are enlarged (short side "
            "640) and large ones shrunk (long side 2048) for the detector; coordinates refer to the "
            "original image."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--json", required=True, metavar="FILE", help="output JSON file ('-' for stdout)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help=f"detector (default {DEFAULT_BACKEND}; weights shipped with the package)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint for the retinaface backends (detection_Resnet50_Final.pth, "
                        "detection_mobilenet0.25_Final.pth)")
    p.add_argument("--draw", default=None, metavar="OUTDIR",
                   help="also write each image with its boxes and landmarks drawn, as OUTDIR/<stem>.png")
    p.add_argument("--device", default="cpu", help="torch device for the detector (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        paths = collect_inputs(args.images)
        detector = get_detector(args.backend, weights=args.weights, device=args.device)
    except (FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        log.error("difface detect: %s", e)
        return 2
    records, failed = [], 0
    for path in tqdm(paths, desc="detect", disable=len(paths) < 2):
        try:
            img = read_image(path)
        except ImageReadError as e:
            log.error("%s", e)
            records.append({"path": str(path), "error": str(e)})
            failed += 1
            continue
        dets = detect_faces(img.rgb, detector)
        h, w = img.rgb.shape[:2]
        records.append({"path": str(path), "width": w, "height": h, "faces": dets.to_json()})
        if args.draw:
            write_image(Path(args.draw) / f"{path.stem}.png", draw_detections(img.rgb, dets))
    text = json.dumps({"backend": args.backend, "images": records}, indent=1) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        atomic_write_bytes(args.json, text.encode())
    found = sum(len(r.get("faces", [])) for r in records)
    log.info("%d faces in %d images%s", found, len(paths) - failed, f"; {failed} unreadable" if failed else "")
    return 1 if failed else 0
