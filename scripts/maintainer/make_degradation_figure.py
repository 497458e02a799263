"""Draw docs/degradations.png: the public-domain astronaut face under each degradation preset.

Usage: python scripts/maintainer/make_degradation_figure.py [-o docs/degradations.png] [--seed 0]
Needs scikit-image (for `skimage.data.astronaut()`), installed with the [test] extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math

import cv2
import numpy as np
from PIL import Image
from skimage import data

from difface.data.degrade import (
    DEGRADATIONS,
    TestCombo,
    apply_degradation,
    degrade_with_params,
    get_degradation,
    recipe_params,
)
from difface.images import atomic_write_bytes

SIZE = 256
LABEL_H = 36


def astronaut_face(size: int = SIZE) -> np.ndarray:
    """The astronaut's face (rows 0:220, cols 140:360) resized to (size, size, 3) float32 [0, 1]."""
    crop = data.astronaut()[0:220, 140:360]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def describe(p) -> str:
    k = p.kernel
    blur = f"sig {k.sigma_x:.1f}" if k.kind == "iso" else f"sig {k.sigma_x:.1f}x{k.sigma_y:.1f}"
    return f"{blur} s {p.scale:.1f} n {p.noise:.0f} q {p.quality}"


def tiles(face: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(title, parameter line, image) for every panel; presets scaled to SIZE."""
    out = [("original (256 px)", "sig/s/n/q: blur, scale, noise, JPEG", face)]
    very = dataclasses.replace(DEGRADATIONS["gfpgan"], blur_sigma=(12.0, 15.0), downsample=(26.0, 32.0),
                               noise=(16.0, 20.0), jpeg_quality=(30.0, 40.0), gray_prob=0.0)
    for name, cfg in (("mild", get_degradation("mild")), ("moderate", get_degradation("moderate")),
                      ("severe", get_degradation("severe")), ("very severe (gfpgan max)", very),
                      ("gfpgan (random draw)", dataclasses.replace(DEGRADATIONS["gfpgan"], gray_prob=0.0))):
        lq, p = degrade_with_params(face, cfg.for_resolution(SIZE), np.random.default_rng(seed))
        out.append((name, describe(p), lq))
    test_cfg = get_degradation("celeba-test", SIZE)
    for sf, qf, nf in ((8, 60, 5), (24, 40, 15)):
        combo = TestCombo(qf, float(sf), float(nf), 8.0, 4.0, math.pi / 4)
        p = recipe_params(combo, test_cfg)
        lq = apply_degradation(face, p, np.random.default_rng(seed))
        out.append((f"celeba-test sf {sf} (at 512)", describe(p), lq))
    return out


def panel(title: str, line: str, img: np.ndarray) -> np.ndarray:
    """uint8 RGB tile with a two-line white label bar on top."""
    bar = np.full((LABEL_H, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, line, (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    return np.concatenate([bar, np.rint(img * 255).astype(np.uint8)], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="docs/degradations.png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    panels = [panel(*t) for t in tiles(astronaut_face(), args.seed)]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    rows = [np.concatenate(sum(([p, gap] for p in panels[r * 4 : r * 4 + 4]), [])[:-1], axis=1)
            for r in range(2)]
    grid = np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]}, {len(buf.getvalue()) // 1024} KB)")


if __name__ == "__main__":
    main()
