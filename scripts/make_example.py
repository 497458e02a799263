"""Make examples/astronaut_lq.png: the public-domain NASA astronaut portrait (scikit-image's
`data.astronaut()`), shrunk to 192x192 and degraded by difface's own pipeline (seeded)."""

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from difface.data.degrade import degrade_fixed
from difface.images import write_image

hq = cv2.resize(data.astronaut().astype(np.float32) / 255, (192, 192), interpolation=cv2.INTER_AREA)
lq = degrade_fixed(hq, sigma_x=1.2, sigma_y=1.2, theta=0.0, sf=2.0, noise=6.0, quality=45,
                   rng=np.random.default_rng(0), kernel_size=7)
out = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"
write_image(out, lq)
print(f"wrote {out} {lq.shape}")
