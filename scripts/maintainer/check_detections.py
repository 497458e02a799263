"""Faces per photo before and after the five-point layout check (difface.face.template.plausible_faces).

Runs each detector on every image of the shared real photos (../shared/data/real-world: whole photos, aligned
and masked faces) and on a seeded sample of LFW and CelebA faces, each image detected as the pipeline does
(`detect_faces`, the detector's copy at least 640 px on its short side). For each detector it counts the faces
at its own score threshold before and after the layout check, and the candidates below the threshold (the
detector's likely non-faces: hands, ears, fabric, background) that the check would also remove. Every
detection's score and layout numbers are listed with --list; --crops DIR writes the aligned crop of every
detection below the threshold or failing the check, to look at.

    python scripts/maintainer/check_detections.py -o docs/results/detection_plausibility.json [--crops DIR] [--list]

The research-only photos are read from ../shared/data beside the checkout; none is written into the repository
(the JSON holds file names, counts and numbers only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from difface.face.align import estimate_alignment, warp_faces
from difface.face.detect import detect_faces
from difface.face.mtcnn import MTCNNDetector
from difface.face.template import eye_distance, face_frame, plausible_faces, template_residual
from difface.face.yunet import YuNetDetector
from difface.images import IMAGE_EXTENSIONS, read_image

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
CANDIDATE_SCORE = 0.3  # candidates are collected down to this score


def layout(lm: np.ndarray, box: np.ndarray) -> dict:
    """The numbers `plausible_faces` looks at, for one detection (eye distances in the face's frame)."""
    p = face_frame(lm)
    width = p[4, 0] - p[3, 0]
    return {"nose_below_eyes": round(float(p[2, 1]), 3), "mouth_below_eyes": round(float(p[3:, 1].mean()), 3),
            "mouth_width": round(float(width), 3),
            "mouth_tilt_deg": round(float(np.degrees(np.arctan2(p[4, 1] - p[3, 1], max(width, 1e-9)))), 2),
            "template_residual": round(float(template_residual(lm)), 3),
            "eyes_of_box_width": round(float(eye_distance(lm) / max(box[2] - box[0], 1e-9)), 3)}


def images(count_lfw: int, count_celeba: int, seed: int) -> list[Path]:
    files = sorted(p for p in (SHARED / "real-world").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    rng = np.random.default_rng(seed)
    for folder, n in (("lfw-150", count_lfw), ("celeba-aligned-89x109", count_celeba)):
        pool = sorted((SHARED / folder).glob("*.jpg"))
        files += [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))] if n else []
    return files


def detectors() -> dict[str, tuple[object, float]]:
    """name -> (detector returning candidates down to CANDIDATE_SCORE, the detector's own threshold)."""
    out = {"mtcnn": (MTCNNDetector(score_threshold=CANDIDATE_SCORE), MTCNNDetector().score_threshold)}
    try:
        out["yunet"] = (YuNetDetector(conf_threshold=CANDIDATE_SCORE), YuNetDetector().conf_threshold)
    except ImportError as e:
        print(f"yunet skipped: {e}")
    return out


def check(files: list[Path], crops: Path | None, listing: bool) -> dict:
    report: dict = {"detectors": {}, "photos": []}
    dets_by = detectors()
    for name, (_, thr) in dets_by.items():
        report["detectors"][name] = {"threshold": thr, "images": 0, "faces_before": 0, "faces_after": 0,
                                     "candidates_below_threshold": 0, "candidates_removed": 0, "removed": []}
    for f in files:
        im = read_image(f).rgb
        rel = f.relative_to(SHARED).as_posix()
        row = {"image": rel, "size": [im.shape[1], im.shape[0]]}
        for name, (det, thr) in dets_by.items():
            d = detect_faces(im, det)
            ok = plausible_faces(d.landmarks, d.boxes) if len(d) else np.zeros(0, bool)
            top = d.scores >= thr
            s = report["detectors"][name]
            s["images"] += 1
            s["faces_before"] += int(top.sum())
            s["faces_after"] += int((top & ok).sum())
            s["candidates_below_threshold"] += int((~top).sum())
            s["candidates_removed"] += int((~top & ~ok).sum())
            row[name] = [int(top.sum()), int((top & ok).sum())]
            for k in range(len(d)):
                info = {"image": rel, "score": round(float(d.scores[k]), 3), "plausible": bool(ok[k]),
                        **layout(d.landmarks[k], d.boxes[k])}
                if not ok[k]:
                    s["removed"].append(info)
                if listing:
                    print(name, info)
                if crops is not None and (not ok[k] or not top[k]):
                    c = warp_faces(im, estimate_alignment(d.landmarks[k].astype(np.float64), 128)[None], 128)[0]
                    tag = "kept" if ok[k] else "removed"
                    cv2.imwrite(str(crops / f"{name}_{tag}_{f.stem}_{k}_{d.scores[k]:.2f}.png"),
                                np.rint(c[:, :, ::-1] * 255).astype(np.uint8))
        if rel.startswith("real-world/"):  # per photo; the LFW and CelebA samples as a tally of faces per image
            report["photos"].append(row)
        else:
            tally = report.setdefault("samples", {}).setdefault(rel.split("/")[0], {})
            for n in dets_by:
                key = f"{n} faces before, after"
                tally.setdefault(key, {})
                tally[key][str(row[n])] = tally[key].get(str(row[n]), 0) + 1
        print(rel, {n: row[n] for n in dets_by}, flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "detection_plausibility.json")
    ap.add_argument("--lfw", type=int, default=300, help="LFW faces in the sample (seeded)")
    ap.add_argument("--celeba", type=int, default=200, help="CelebA faces in the sample (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crops", type=Path, help="write the aligned crops of candidates and removed detections here")
    ap.add_argument("--list", action="store_true", help="print every detection's score and layout numbers")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"no shared data at {SHARED}")
    if args.crops is not None:
        args.crops.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = check(images(args.lfw, args.celeba, args.seed), args.crops, args.list)
    report["command"] = (f"python scripts/maintainer/check_detections.py --lfw {args.lfw} --celeba {args.celeba} "
                         f"--seed {args.seed}")
    report["candidate_score"] = CANDIDATE_SCORE
    report["seconds"] = round(time.time() - t0, 1)
    for name, s in report["detectors"].items():
        print(f"{name}: faces {s['faces_before']} -> {s['faces_after']} at score >= {s['threshold']}; candidates "
              f"below it {s['candidates_below_threshold']}, the layout check removes {s['candidates_removed']}")
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
