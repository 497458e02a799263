"""Training/evaluation data: blur kernels (kernels.py), synthetic degradations (degrade.py),
inpainting masks (masks.py) and torch datasets (datasets.py). See each module's docstring for
conventions and the API."""

from difface.data.datasets import ImageFolder, MaskedFaces, PairedFolder, SyntheticPairs
from difface.data.degrade import (
    DEGRADATIONS,
    TEST_RECIPE,
    DegradationConfig,
    DegradationParams,
    degrade,
    degrade_fixed,
    degrade_with_params,
    get_degradation,
)

__all__ = [
    "DEGRADATIONS",
    "TEST_RECIPE",
    "DegradationConfig",
    "DegradationParams",
    "ImageFolder",
    "MaskedFaces",
    "PairedFolder",
    "SyntheticPairs",
    "degrade",
    "degrade_fixed",
    "degrade_with_params",
    "get_degradation",
]
