"""Choice names and defaults that the option checks (difface.config) share with the modules that use them,
kept here so that difface.config imports no torch, OpenCV or numpy: this module imports nothing.

The heavy modules import their names from here (difface.device: the precision names
of DTYPES; difface.images: OUTPUT_FORMATS, DEFAULT_QUALITY; difface.face.detect: the default detector).
OFFICIAL and DEFAULT_NFE belong to the sampler table (difface.diffusion.solvers re-exports them); DEFAULT_NFE is
applied in one place, difface.plan.SamplingPlan.make.
"""

from __future__ import annotations

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # network precisions (difface.device.DTYPES: name -> torch dtype)
OUTPUT_FORMATS = ("png", "jpg", "webp")  # the image formats difface.images writes
DEFAULT_QUALITY = 95  # JPEG / WebP quality, 1 to 100
DEFAULT_DETECTOR = "mtcnn"  # weights shipped in the package: works offline (difface.face.detect)
OFFICIAL = "official"  # the official respaced loop: the sampler name of difface.diffusion.solvers
DEFAULT_NFE = 10  # network evaluations of the few-step samplers when none is given
