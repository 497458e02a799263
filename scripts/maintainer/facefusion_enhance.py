"""Enhance one face of a photo with facefusion's own, unmodified face-enhancer code and an enhancer .onnx file.

  python scripts/maintainer/facefusion_enhance.py FACEFUSION_DIR MODEL.onnx PHOTO.png '[[x, y], ...5 points]' OUT

FACEFUSION_DIR: an extracted facefusion source tree (the folder holding `facefusion/`); it goes first on sys.path.
Only the model table is replaced (facefusion's `create_static_model_set`, on the module object) with one entry for
MODEL, as a user would add it to that table; the state items are facefusion's defaults (blend 80 unless --blend,
weight 0.5, box mask with blur 0.3, CPU). The face's five points (eyes, nose tip, mouth corners, in photo pixels)
come from the caller (tests and scripts use difface's detector: facefusion's own detectors are downloads).

Writes OUT.png (the photo as facefusion returns it), OUT_in.npy (the crop facefusion gave the model: (1, 3, 512,
512) float32 in [-1, 1]) and OUT_out.npy (the model's first output's first item); prints JSON
{"weight_input": whether facefusion found a `weight` input, "hash_valid": whether facefusion's own check of a
model file against its `.hash` file (CRC-32, docs/integrations.md) passes}. This file imports neither torch nor difface.
"""

from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("facefusion")
    ap.add_argument("model")
    ap.add_argument("photo")
    ap.add_argument("points", help="JSON list of the five (x, y) points")
    ap.add_argument("out", help="output prefix")
    ap.add_argument("--blend", type=int, default=80, help="facefusion's --face-enhancer-blend, 0-100 (default 80)")
    args = ap.parse_args()
    sys.path.insert(0, args.facefusion)  # facefusion's package comes from there: imported only now
    from facefusion import state_manager
    from facefusion.hash_helper import validate_hash
    from facefusion.processors.modules.face_enhancer import core
    from facefusion.types import Face

    entry = {"__metadata__": {"vendor": "difface", "license": "non-commercial", "year": 2026}, "hashes": {},
             "sources": {"face_enhancer": {"url": "", "path": args.model}}, "template": "ffhq_512",
             "size": (512, 512)}
    core.create_static_model_set = lambda download_scope: {"difface": entry}
    items = {"face_enhancer_model": "difface", "face_enhancer_blend": args.blend, "face_enhancer_weight": 0.5,
             "face_mask_blur": 0.3, "face_mask_types": ["box"], "execution_device_ids": [0],
             "execution_providers": ["cpu"], "download_scope": "full", "download_providers": ["github"]}
    for key, value in items.items():
        state_manager.init_item(key, value)
    seen = {}
    forward = core.forward

    def spy(crop, weight):
        seen["in"], seen["out"] = crop, forward(crop, weight)
        return seen["out"]

    core.forward = spy  # enhance_face looks it up on the module: this records what the model got and gave
    frame = cv2.imread(args.photo)
    points = np.array(json.loads(args.points), np.float32).reshape(5, 2)
    face = Face(origin=None, bounding_box=None, score_set=None, landmark_set={"5/68": points, "5": points},
                angle=None, embedding=None, embedding_norm=None, age=None, gender=None, race=None)
    result = core.enhance_face(face, frame)
    cv2.imwrite(args.out + ".png", result)
    np.save(args.out + "_in.npy", seen["in"])
    np.save(args.out + "_out.npy", seen["out"])
    print(json.dumps({"weight_input": core.has_weight_input(), "hash_valid": validate_hash(args.model)}))


if __name__ == "__main__":
    main()
