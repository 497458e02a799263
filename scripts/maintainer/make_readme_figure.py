"""The README's first picture: what the bundled model does to a damaged face and to a sharp one, on the
public-domain NASA astronaut portrait only (examples/astronaut_lq.png and scikit-image's `data.astronaut()`).

  docs/images/readme_damaged.png  examples/astronaut_lq.png (192 px, degraded by scripts/make_example.py),
                                  face region: input (x2 bicubic) | `difface restore` default (x2)
  docs/images/readme_sharp.png    data.astronaut() (512 px, sharp), face region: input | `difface restore`
                                  default (--upscale 1) | |difference| x 10

Both restorations go through the same pipeline as `difface restore IN -o OUT` (the bundled model, start
step auto, Lanczos background); the start step and mean change printed per face are what the run's summary
says.

  python scripts/maintainer/make_readme_figure.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from difface.images import LoadedImage, read_image, write_image
from difface.pipeline import ModelOptions, PhotoOptions, RestoreOptions, RestorePipeline

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images"


def label(img: np.ndarray, text: str) -> np.ndarray:
    """A white strip with `text` above the image."""
    strip = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip.astype(np.float32) / 255, img], axis=0)


def panels(images: list[np.ndarray], texts: list[str]) -> np.ndarray:
    gap = np.ones((images[0].shape[0] + 22, 4, 3), np.float32)
    parts = []
    for img, text in zip(images, texts):
        parts += [label(img, text), gap]
    return np.concatenate(parts[:-1], axis=1)


def restore(rgb: np.ndarray, upscale: int):
    pipe = RestorePipeline.load(RestoreOptions(photo=PhotoOptions(upscale=upscale, bg_upsampler="lanczos"),
                                               model=ModelOptions(device="cpu")))
    return pipe.restore_image(LoadedImage(rgb, None, 8, False))


def main() -> None:
    lq = read_image(ROOT / "examples" / "astronaut_lq.png").rgb
    r = restore(lq, 2)
    up = cv2.resize(lq, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC).clip(0, 1)
    box = (slice(0, 240), slice(96, 336))  # the face and hair in the x2 image
    fig = panels([up[box], r.image[box]], ["input (x2 bicubic)", f"restored: start step {r.start_steps[0]}, "
                                          f"change {r.changes[0]:.1f}"])
    write_image(OUT / "readme_damaged.png", fig)
    print(f"damaged: start steps {r.start_steps}, changes {[round(c, 2) for c in r.changes]}")

    sharp = data.astronaut().astype(np.float32) / 255
    r = restore(sharp, 1)
    box = (slice(10, 250), slice(120, 360))
    diff = np.clip(np.abs(r.image - sharp) * 10, 0, 1)
    fig = panels([sharp[box], r.image[box], diff[box]], ["input (sharp)", f"restored: start step "
                                                         f"{r.start_steps[0]}, change {r.changes[0]:.1f}",
                                                         "|difference| x 10"])
    write_image(OUT / "readme_sharp.png", fig)
    print(f"sharp: start steps {r.start_steps}, changes {[round(c, 2) for c in r.changes]}")


if __name__ == "__main__":
    main()
