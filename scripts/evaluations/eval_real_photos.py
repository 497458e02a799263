"""Real photos, where users meet the model: every face of each photo, input crop | restored crop.

For each photo (or each aligned face of a folder with --aligned), through the same pipeline as
`difface restore`: NIQE of the face crops before and after (x4 bicubic upscales of the 64 px crops
for small models, as the model card), `ids_dlib` between each input crop and its restoration (how
much of the person is kept), and a grid PNG of input | restored pairs, a row per photo.

  python scripts/evaluations/eval_real_photos.py \\
      ../shared/data/real-world/difface-testdata/Solvay_conference_1927.png \\
      ../shared/data/real-world/difface-testdata/whole_imgs --grid real.png --json real.json
  python scripts/evaluations/eval_real_photos.py ../shared/data/real-world/difface-testdata/cropped_faces --aligned ...

The photos of ../shared/data are research-only: write grids outside the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.images import IMAGE_EXTENSIONS, collect_inputs, write_image
from difface.metrics.niqe import niqe
from difface.pipeline import ModelOptions, PhotoOptions, RestoreOptions, RestorePipeline, SamplingOptions, read_input


def x4(a: np.ndarray) -> np.ndarray:
    return cv2.resize(a, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).clip(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--aligned", action="store_true")
    ap.add_argument("--prior")
    ap.add_argument("--estimator")
    ap.add_argument("--start-step", default=None, help="integer, 'auto', or omitted for the model's default")
    ap.add_argument("--eta", type=float)
    ap.add_argument("--max-face-size", type=float, default=None)
    ap.add_argument("--per-row", type=int, default=8, help="face pairs per grid row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = None if args.start_step is None else (args.start_step if args.start_step == "auto" else
                                                   int(args.start_step))
    opts = RestoreOptions(model=ModelOptions(args.prior, args.estimator, device="cpu"),
                          sampling=SamplingOptions(start_step=start, eta=args.eta),
                          photo=PhotoOptions(upscale=1, bg_upsampler="lanczos", max_face_size=args.max_face_size),
                          aligned=args.aligned, batch_size=16)
    pipe = RestorePipeline.load(opts)
    print(pipe.describe())
    size = pipe.model.image_size
    try:
        from difface.metrics.identity import DlibEmbedder

        embedder = DlibEmbedder()
    except Exception as e:  # noqa: BLE001 - optional extra
        print(f"ids_dlib skipped: {e}")
        embedder = None
    report, rows = {"model": pipe.describe(), "photos": []}, []
    files = collect_inputs(args.inputs, extensions=IMAGE_EXTENSIONS)
    if args.aligned:  # one 'photo' of all faces
        images = [read_input(pipe, f) for f in files]
        results = pipe.restore_aligned(images)
        groups = [("aligned faces", np.stack([cv2.resize(im.rgb, (size, size), interpolation=cv2.INTER_AREA)
                                              for im in images]),
                   np.stack([cv2.resize(r.image, (size, size), interpolation=cv2.INTER_AREA) for r in results]), 0,
                   [s for r in results for s in r.start_steps])]
    else:
        groups = []
        for f in files:
            r = pipe.restore_image(read_input(pipe, f))
            groups.append((str(f), r.crops, r.restored, r.skipped, r.start_steps))
    for name, crops, restored, skipped, steps in groups:
        if crops is None or not len(crops):
            print(f"{name}: no face restored ({skipped} left as they were)")
            report["photos"].append({"photo": name, "faces": 0, "skipped": skipped})
            continue
        before = [niqe(x4(c)) for c in crops]
        after = [niqe(x4(c)) for c in restored]
        ids = []
        if embedder:
            for c, r in zip(crops, restored):
                a, b = embedder.embed(x4(c)), embedder.embed(x4(r))
                ids.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))
        entry = {"photo": name, "faces": len(crops), "skipped": skipped, "niqe_before": float(np.mean(before)),
                 "niqe_after": float(np.mean(after)), "start_steps": list(map(int, steps)),
                 "ids_dlib_input_vs_restored": float(np.mean(ids)) if ids else None}
        report["photos"].append(entry)
        print(f"{name}: {len(crops)} faces ({skipped} left as they were), NIQE {entry['niqe_before']:.2f} -> "
              f"{entry['niqe_after']:.2f}" + (f", ids_dlib {entry['ids_dlib_input_vs_restored']:.4f}" if ids else "")
              + (f", start steps {min(steps)}-{max(steps)}" if steps else ""), flush=True)
        pairs = [np.concatenate([c, r], axis=1) for c, r in zip(crops, restored)]
        for i in range(0, len(pairs), args.per_row):
            chunk = pairs[i:i + args.per_row]
            chunk += [np.ones_like(pairs[0])] * (args.per_row - len(chunk))
            rows.append(np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=1) for p in chunk], 1))
    if args.grid and rows:
        write_image(args.grid, np.concatenate(rows, axis=0))
        print(f"wrote {args.grid}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
