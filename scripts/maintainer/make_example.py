"""Make the examples from the public-domain NASA astronaut portrait (scikit-image's `data.astronaut()`):

  examples/astronaut_lq.png     shrunk to 192x192 and degraded by difface's own pipeline (seeded)
  examples/astronaut_face.png   the face aligned to the FFHQ template at 64x64 (MTCNN landmarks), clean
  examples/astronaut_mask.png   a hand-shaped mask for it (white = missing: a band over the eyes and a blot)
"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from difface.data.degrade import degrade_fixed
from difface.images import write_image

hq = cv2.resize(data.astronaut().astype(np.float32) / 255, (192, 192), interpolation=cv2.INTER_AREA)
lq = degrade_fixed(hq, sigma_x=1.2, sigma_y=1.2, theta=0.0, sf=2.0, noise=6.0, quality=45,
                   rng=np.random.default_rng(0), kernel_size=7)
out = Path(__file__).resolve().parents[2] / "examples" / "astronaut_lq.png"
write_image(out, lq)
print(f"wrote {out} {lq.shape}")

from difface.face import get_detector  # noqa: E402
from difface.face.align import estimate_alignment, warp_faces  # noqa: E402
from difface.face.photo import find_faces  # noqa: E402

full = data.astronaut().astype(np.float32) / 255
dets = find_faces(full, get_detector("mtcnn"), largest_face=True)
face = warp_faces(full, estimate_alignment(np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), 64), 64)[0]
write_image(out.parent / "astronaut_face.png", face)
mask = np.zeros((64, 64), np.float32)
mask[25:35, 12:52] = 1  # a band over the eyes
cv2.circle(mask, (40, 46), 6, 1.0, -1)  # a blot on the cheek and mouth corner
write_image(out.parent / "astronaut_mask.png", np.repeat(mask[:, :, None], 3, axis=2))
print(f"wrote {out.parent / 'astronaut_face.png'} and astronaut_mask.png ({mask.mean():.1%} of the face masked)")
