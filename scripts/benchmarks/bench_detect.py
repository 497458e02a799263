"""Benchmark the face detector backends on the shared real-world photos.

Prints, per photo, the faces found and the seconds per photo for each backend, and the landmark
accuracy on the aligned test faces (mean distance of the detected 5 points to the FFHQ template,
in % of the template's eye distance). Photos come from ../shared/data/real-world (research-only
data; nothing is written into the repository).

    python scripts/benchmarks/bench_detect.py [--data ../shared/data/real-world] [--backends mtcnn yunet]
        [--retinaface-resnet50 PATH] [--retinaface-mobile PATH] [--draw OUTDIR]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from difface.face.align import select_faces
from difface.face.detect import detect_faces, draw_detections, get_detector
from difface.face.template import eye_distance, face_template
from difface.images import read_image, write_image

PHOTOS = [
    "difface-testdata/whole_imgs/00.jpg", "difface-testdata/whole_imgs/01.jpg",
    "difface-testdata/whole_imgs/02.png", "difface-testdata/whole_imgs/03.png",
    "difface-testdata/whole_imgs/04.jpg", "difface-testdata/whole_imgs/05.jpg",
    "difface-testdata/Solvay_conference_1927.png", "gfpgan-inputs/whole_imgs/00.jpg",
    "gfpgan-inputs/whole_imgs/10045.png", "gfpgan-inputs/whole_imgs/Blake_Lively.jpg",
    "codeformer-inputs/whole_imgs/03.jpg", "pypi-samples/t1.jpg",
]


def build_backends(args: argparse.Namespace) -> dict:
    out = {}
    for name in args.backends:
        try:
            out[name] = get_detector(name)
        except ImportError as e:
            print(f"# skipping {name}: {e}")
    for name, path in (("retinaface_resnet50", args.retinaface_resnet50),
                       ("retinaface_mobile0.25", args.retinaface_mobile)):
        if path:
            out[name] = get_detector(name, weights=path)
    return out


def timed_detect(rgb: np.ndarray, det, repeats: int):
    """Detections kept by the pipeline's filter, and (wall, CPU) seconds per call after a warm-up."""
    detect_faces(rgb, det)  # warm-up (first-call allocations)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        dets = detect_faces(rgb, det)
    wall, cpu = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    keep = select_faces(dets.boxes, dets.landmarks, rgb.shape[:2], min_eye_dist=5)
    return dets.subset(keep), wall, cpu


def bench_photos(root: Path, backends: dict, repeats: int, draw: Path | None) -> None:
    names = list(backends)
    print("| photo | size | " + " | ".join(f"{n} faces | {n} s (CPU s)" for n in names) + " |")
    print("|---|---|" + "---:|---:|" * len(names))
    for rel in PHOTOS:
        path = root / rel
        if not path.is_file():
            print(f"| {rel} | missing |")
            continue
        rgb = read_image(path).rgb
        cells = []
        for n, det in backends.items():
            dets, wall, cpu = timed_detect(rgb, det, repeats)
            low = f"{dets.scores.min():.2f}" if len(dets) else "-"
            cells.append(f"{len(dets)} (min score {low}) | {wall:.3f} ({cpu:.3f})")
            if draw is not None:
                out = draw / n / (rel.replace("/", "__").rsplit(".", 1)[0] + ".png")
                write_image(out, draw_detections(rgb, dets))
        print(f"| {rel} | {rgb.shape[1]}x{rgb.shape[0]} | " + " | ".join(cells) + " |")


def bench_landmarks(root: Path, backends: dict) -> None:
    files = sorted((root / "difface-testdata/cropped_faces").glob("*.png"))
    if not files:
        print("# no aligned faces found")
        return
    tpl = face_template(512)
    ref = float(eye_distance(tpl))
    print(f"\nLandmark error on {len(files)} aligned 512px faces (% of template eye distance {ref:.1f} px)")
    print("| backend | one face found | mean % | median % | max % | per point mean % (le, re, nose, ml, mr) |")
    print("|---|---:|---:|---:|---:|---|")
    for n, det in backends.items():
        errs, found = [], 0
        for f in files:
            dets = detect_faces(read_image(f).rgb, det)
            if len(dets) == 0:
                continue
            found += len(dets) == 1
            # the face nearest the centre, as only_center_face would pick
            best = int(np.argmin(np.linalg.norm(dets.landmarks.mean(1) - tpl.mean(0), axis=1)))
            errs.append(np.linalg.norm(dets.landmarks[best] - tpl, axis=1) / ref * 100)
        e = np.array(errs)
        per = ", ".join(f"{v:.2f}" for v in e.mean(0))
        print(f"| {n} | {found}/{len(files)} | {e.mean():.2f} | {np.median(e):.2f} | {e.max():.2f} | {per} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/real-world"))
    p.add_argument("--backends", nargs="+", default=["mtcnn", "yunet"])
    p.add_argument("--retinaface-resnet50", default=None, help="path of detection_Resnet50_Final.pth")
    p.add_argument("--retinaface-mobile", default=None, help="path of detection_mobilenet0.25_Final.pth")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per photo (after one warm-up)")
    p.add_argument("--draw", type=Path, default=None, help="write annotated photos here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    args = p.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: data folder not found")
    warnings.simplefilter("ignore")  # yuface warns on every image larger than 960 px
    import os

    import torch

    torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, load {load}")
    backends = build_backends(args)
    bench_photos(args.data, backends, args.repeats, args.draw)
    bench_landmarks(args.data, backends)


if __name__ == "__main__":
    main()
