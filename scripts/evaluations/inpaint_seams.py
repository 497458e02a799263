"""How visible the edge of an inpainting fill is on faces larger than the model: the seam ratio.

Each face (512 px, aligned) gets a rectangle drawn over its mouth, an eye and a cheek, and is inpainted by
`InpaintPipeline` with its defaults (the bundled 64 px inpainter unless --prior/--estimator). The seam ratio is
the mean gradient magnitude (Sobel, luma) on a 5 px ring along the rectangle's border divided by the mean over
the rest of the face's middle: about 1 or below where the border cannot be seen, well above 1 for a step. The
input's own ratio is printed beside it. difface is imported from PYTHONPATH, so the same command measures two
trees (as scripts/maintainer/hash_outputs.py):

    PYTHONPATH=src python scripts/evaluations/inpaint_seams.py FACE.png ... [--sheet seams.png] [--json out.json]
    PYTHONPATH=src python scripts/evaluations/inpaint_seams.py FACE.png ... --feather-px 0    # this tree, hard edge

--feather-px sets difface.data.masks.FEATHER_MODEL_PX (the soft edge's width in model pixels) for the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

import difface.data.masks
from difface.config import InpaintOptions, ModelOptions
from difface.images import LoadedImage, read_image, write_image
from difface.pipeline.inpaint import InpaintPipeline

BOXES = {"mouth": (180, 340, 340, 420), "eye": (170, 200, 290, 270), "cheek": (300, 280, 400, 380)}  # x0 y0 x1 y1


def seam_ratio(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Mean |gradient| on the 5 px ring along the mask's border / mean |gradient| over the face's middle."""
    g = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8
    m = mask.astype(np.uint8)
    k = np.ones((5, 5), np.uint8)
    ring = (cv2.dilate(m, k) - cv2.erode(m, k)) > 0
    face = np.zeros_like(ring)
    face[96:448, 96:416] = True
    return float(mag[ring].mean() / mag[face & ~ring].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faces", nargs="+", type=Path)
    ap.add_argument("--prior")
    ap.add_argument("--estimator")
    ap.add_argument("--feather-px", type=float, help="override difface.data.masks.FEATHER_MODEL_PX for this run")
    ap.add_argument("--sheet", type=Path, help="write input | output crops around each rectangle here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.feather_px is not None:
        difface.data.masks.FEATHER_MODEL_PX = args.feather_px
    model = ModelOptions(prior=args.prior, estimator=args.estimator) if args.prior else ModelOptions()
    pipe = InpaintPipeline.load(InpaintOptions(model=model))
    print(pipe.describe())
    rows, tiles = [], []
    for f in args.faces:
        rgb = read_image(f).rgb
        rgb = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (512, 512) else rgb
        for name, (x0, y0, x1, y1) in BOXES.items():
            m = np.zeros((512, 512), np.float32)
            m[y0:y1, x0:x1] = 1
            out = pipe.inpaint_image(LoadedImage(rgb, None, 8, False), m).image
            row = {"face": f.name, "box": name, "input": round(seam_ratio(rgb, m), 3),
                   "output": round(seam_ratio(out, m), 3)}
            rows.append(row)
            print(row, flush=True)
            crop = np.concatenate([a[max(y0 - 40, 0):y1 + 40, max(x0 - 40, 0):x1 + 40] for a in (rgb, out)], 1)
            tiles.append(cv2.resize(crop, (crop.shape[1] * 240 // crop.shape[0], 240)))
    mean_in, mean_out = (float(np.mean([r[k] for r in rows])) for k in ("input", "output"))
    print(f"mean seam ratio: input {mean_in:.3f}, output {mean_out:.3f}")
    if args.sheet:
        w = max(t.shape[1] for t in tiles)
        write_image(args.sheet, np.concatenate([np.pad(t, ((0, 4), (0, w - t.shape[1]), (0, 0))) for t in tiles]))
    if args.json:
        args.json.write_text(json.dumps({"model": pipe.describe(), "rows": rows, "mean_input": round(mean_in, 3),
                                         "mean_output": round(mean_out, 3)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
