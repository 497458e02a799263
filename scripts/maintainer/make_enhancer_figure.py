"""Before / after of a real face through facefusion's own face-enhancer code with a difface enhancer file.

  PYTHONPATH=src python scripts/maintainer/make_enhancer_figure.py -o docs/images/enhancer_facefusion.png

The photo is scikit-image's `astronaut` (Eileen Collins, NASA: public domain). Its face's five points come from
difface's detector (MTCNN); scripts/maintainer/facefusion_enhance.py runs facefusion's `enhance_face` (snapshot in
../shared/thirdparty, extracted to a temporary folder) with the file as its model and facefusion's default blend
(80). The figure: the photo's face region before and after, enlarged 3x (nearest neighbour, so no resampling hides
or adds detail). Without --model the bundled model's enhancer is exported first (`difface export enhancer`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from difface.face.photo import find_faces
from difface.images import write_image

ROOT = Path(__file__).resolve().parents[2]
FACEFUSION = ROOT.parent / "shared" / "thirdparty" / "facefusion-33cc6b40.tar.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--model", type=Path, help="an enhancer .onnx (default: export the bundled model's)")
    args = ap.parse_args()
    if not FACEFUSION.is_file():
        sys.exit(f"skipped: facefusion's source snapshot {FACEFUSION} is absent")
    work = Path(tempfile.mkdtemp(prefix="difface-ff-figure-"))
    with tarfile.open(FACEFUSION) as tar:
        tar.extractall(work / "ff", filter="data")
    ff = next(p.parent.parent for p in (work / "ff").glob("*/facefusion/__init__.py"))
    model = args.model
    if model is None:
        model = work / "difface-enhancer.onnx"
        subprocess.run([sys.executable, "-m", "difface", "export", "enhancer", "-o", str(model)], check=True)
    rgb = skdata.astronaut()
    dets = find_faces(rgb.astype(np.float32) / 255, "mtcnn", largest_face=True)
    points = np.asarray(dets.landmarks, np.float64).reshape(5, 2)
    Image.fromarray(rgb).save(work / "photo.png")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "maintainer" / "facefusion_enhance.py"), str(ff), str(model),
                    str(work / "photo.png"), json.dumps(points.tolist()), str(work / "out")], cwd=ff, check=True)
    after = np.asarray(Image.open(work / "out.png").convert("RGB"))
    x0, y0, x1, y1 = (int(v) for v in np.asarray(dets.boxes[0][:4]))
    pad = (x1 - x0) // 4
    box = (max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, rgb.shape[1]), min(y1 + pad, rgb.shape[0]))
    parts = [np.asarray(Image.fromarray(im[box[1]:box[3], box[0]:box[2]]).resize(
        ((box[2] - box[0]) * 3, (box[3] - box[1]) * 3), Image.NEAREST)) for im in (rgb, after)]
    gap = np.full((parts[0].shape[0], 8, 3), 255, np.uint8)
    write_image(args.output, np.concatenate([parts[0], gap, parts[1]], 1).astype(np.float32) / 255)
    print(f"wrote {args.output}: face region {box} of the astronaut photo, before | after (facefusion, blend 80)")


if __name__ == "__main__":
    main()
