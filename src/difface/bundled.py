"""The small model shipped inside the package (assets/small64): where its files are, and what to do without them."""

from __future__ import annotations

from pathlib import Path

from difface.weights import local_path

BUNDLED_DIR = Path(__file__).parent / "assets" / "small64"


class BundledModelMissing(FileNotFoundError):
    pass


def bundled_model_paths(task: str = "restoration") -> tuple[Path, Path]:
    """(prior, estimator) safetensors of the small model shipped inside the package; for task
    "inpainting" the estimator is the bundled LaMa inpainter."""
    prior = BUNDLED_DIR / "prior.safetensors"
    est = BUNDLED_DIR / ("inpainter.safetensors" if task == "inpainting" else "estimator.safetensors")
    if task == "inpainting" and not est.is_file():
        raise BundledModelMissing(
            "no bundled inpainter is installed with this copy of difface, so name the official weights:\n"
            "  `prior` iddpm-ffhq256 `estimator` lama-inpainting256  (downloaded on first use)")
    if not (prior.is_file() and est.is_file()):
        raise BundledModelMissing(
            "no bundled model is installed with this copy of difface, so name the official weights:\n"
            f"  `prior` iddpm-ffhq512 `estimator` swinir-ffhq512  (downloaded on first use into "
            f"{local_path('iddpm-ffhq512').parent}),\n"
            "  or, offline, put iddpm_ffhq512_ema500000.pth and swinir_restoration512_L1.pth from\n"
            "  https://github.com/zsyOAOA/DifFace/releases/tag/V1.0 into that folder, or pass their paths:\n"
            "  `prior` /path/iddpm_ffhq512_ema500000.pth `estimator` /path/swinir_restoration512_L1.pth"
        )
    return prior, est
