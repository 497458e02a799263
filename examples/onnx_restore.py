"""Restore an aligned face with an exported DifFace folder, using only numpy, Pillow and onnxruntime (no torch).

  difface export onnx -o difface-onnx                 # once, with difface installed (docs/onnx.md)
  python examples/onnx_restore.py difface-onnx face.png -o restored.png [--seed 0] [--noise q_noise.npy]

The folder holds prior.onnx, estimator.onnx and manifest.json; the manifest writes the reverse process
out as float32 coefficients per step, so this loop needs no schedule arithmetic. The face is resized to
the model size with Pillow's bicubic filter when it is not already that size (difface itself uses torch's
antialiased bicubic, so results then differ slightly), and the result is resized back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def session(folder: Path, entry: dict) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / entry["file"]), providers=["CPUExecutionProvider"])


def restore(folder: Path, face: np.ndarray, rng: np.random.Generator, q_noise: np.ndarray | None = None) -> np.ndarray:
    """face (3, S, S) float32 RGB in [0, 1] -> the restored face, same shape and range."""
    m = json.loads((folder / "manifest.json").read_text())
    if m["task"] != "restoration":
        sys.exit("this script restores; the folder holds an inpainting model")
    f32 = np.float32
    est_net, prior = session(folder, m["files"]["estimator"]), session(folder, m["files"]["prior"])
    y = face[None].astype(f32)
    est = np.clip(est_net.run(None, {"y": y})[0], 0, 1)
    s = m["sampling"]
    if s["q_sample"] is None:  # start step 0: the estimate is the result
        return est[0]
    x0 = (est - f32(0.5)) / f32(0.5)
    noise = rng.standard_normal(x0.shape, dtype=f32) if q_noise is None else q_noise.reshape(x0.shape).astype(f32)
    x = f32(s["q_sample"]["c_x0"]) * x0 + f32(s["q_sample"]["c_noise"]) * noise
    c = x.shape[1]
    for st in s["steps"]:
        out = prior.run(None, {"x": x, "t": np.array([st["t"]], np.int64)})[0]
        eps = out[:, :c]
        x0 = np.clip(f32(st["recip"]) * x - f32(st["recipm1"]) * eps, -1, 1)
        x = x0 * f32(st["c_x0"]) + f32(st["c_eps"]) * eps
        if st["sigma"] > 0:
            x = x + f32(st["sigma"]) * rng.standard_normal(x.shape, dtype=f32)
    return np.clip(x[0] * f32(0.5) + f32(0.5), 0, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder written by `difface export onnx`")
    ap.add_argument("image", type=Path, help="an aligned face (FFHQ template), any size")
    ap.add_argument("-o", "--output", type=Path, required=True, help="restored face (PNG), at the input's size")
    ap.add_argument("--seed", type=int, default=0, help="numpy seed of the noise (default 0)")
    ap.add_argument("--noise", type=Path, help="a .npy of the q_sample noise (3, S, S), instead of drawing it")
    ap.add_argument("--save-npy", type=Path, help="also write the float result at the model size (3, S, S)")
    args = ap.parse_args(argv)
    size = json.loads((args.folder / "manifest.json").read_text())["image_size"]
    img = Image.open(args.image).convert("RGB")
    w, h = img.size
    if (w, h) != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    face = np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255)
    q = None if args.noise is None else np.load(args.noise)
    out = restore(args.folder, face, np.random.default_rng(args.seed), q)
    if args.save_npy:
        np.save(args.save_npy, out)
    pixels = Image.fromarray(np.round(out.transpose(1, 2, 0) * 255).astype(np.uint8))
    if (w, h) != (size, size):
        pixels = pixels.resize((w, h), Image.BICUBIC)
    pixels.save(args.output)
    print(f"restored {args.image} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
