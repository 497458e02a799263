"""README figure of the band merge on the public-domain NASA astronaut portrait (scikit-image).

  python scripts/maintainer/make_band_figure.py            # writes docs/images/band_merge_astronaut.png

Rows (each panel shown at 2x, nearest neighbour): (1) the sharp face aligned at 128 px from the
512x512 photo (its crop spans 172 px), `difface restore --aligned`; (2) the whole 512x512 photo at
--upscale 1 (face 172 px), the region around the face; (3) the 128 px face degraded (blur 1.2 px,
noise 8, JPEG 40) and restored. Columns: input | before (v2.2, before the band merge: the 64 px
result enlarged; in row 2 with --max-face-size 0, since the old default left faces over 128 px alone)
| now (the default). Prints the detail ratios (`metrics.sharpness.detail_ratio`) of each panel.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from difface.data.degrade import degrade_fixed
from difface.face import band
from difface.face.align import align_faces
from difface.face.photo import PhotoSettings, find_faces, restore_photo
from difface.images import LoadedImage, image_to_tensor, tensor_to_image, write_image
from difface.metrics.sharpness import detail_ratio
from difface.pipeline import PhotoOptions, RestoreOptions, RestorePipeline

OUT = Path(__file__).resolve().parents[2] / "docs" / "images" / "band_merge_astronaut.png"


def q8(a: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(a, 0, 1) * 255) / 255).astype(np.float32)


def label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar.astype(np.float32) / 255, img], axis=0)


def big(a: np.ndarray, side: int = 256) -> np.ndarray:
    return cv2.resize(a, (side, side), interpolation=cv2.INTER_NEAREST)


def main() -> None:
    torch.set_num_threads(1)
    photo = q8(data.astronaut().astype(np.float32) / 255)
    aligned = RestorePipeline.load(RestoreOptions(aligned=True))
    whole = RestorePipeline.load(RestoreOptions(photo=PhotoOptions(upscale=1, bg_upsampler="lanczos")))
    s = aligned.model.image_size
    dets = find_faces(photo, whole._photo_parts()[0], largest_face=True)
    face = q8(align_faces(photo, np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), 128)[0][0])
    damaged = q8(degrade_fixed(face, sigma_x=1.2, sigma_y=1.2, theta=0.0, sf=1.0, noise=8.0, quality=40,
                               rng=np.random.default_rng(0), kernel_size=7))

    def before_aligned(x: np.ndarray) -> np.ndarray:
        y = aligned.restore_faces(band.resize(image_to_tensor(x), (s, s))).result
        return q8(tensor_to_image(band.resize(y, x.shape[:2])))

    rows = []
    for name, x in (("sharp face, aligned 128 px", face), ("damaged face, aligned 128 px", damaged)):
        now = q8(aligned.restore_aligned([LoadedImage(x, None, 8, False)])[0].image)
        was = before_aligned(x)
        print(f"{name}: detail ratio before {detail_ratio(was, x):.3f}, now {detail_ratio(now, x):.3f}")
        rows.append([label(big(x), f"input ({name})"), label(big(was), "before: 64 px result enlarged"),
                     label(big(now), "now: band merge")])
    now = q8(whole.restore_image(LoadedImage(photo, None, 8, False)).image)
    was = q8(restore_photo(photo, lambda x: whole.restore_faces(x).result, detector=whole._photo_parts()[0],
                           face_size=s, settings=PhotoSettings(upscale=1, keep_detail=False)).image)
    print(f"whole photo at --upscale 1: detail ratio before (--max-face-size 0) {detail_ratio(was, photo):.3f}, "
          f"now {detail_ratio(now, photo):.3f}")
    y0, x0 = 20, 120  # the face region of the 512x512 photo
    crop = (slice(y0, y0 + 180), slice(x0, x0 + 180))
    rows.insert(1, [label(big(photo[crop]), "input (whole photo, face 172 px)"),
                    label(big(was[crop]), "before, --max-face-size 0"), label(big(now[crop]), "now: the default")])
    fig = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    write_image(OUT, fig)
    print(f"wrote {OUT} {fig.shape}")


if __name__ == "__main__":
    main()
